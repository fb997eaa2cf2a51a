//! Operations: liveness, readiness, metrics, the OpenAPI document and its interactive docs, and
//! the code catalogue as JSON and as a page.

mod docs;
pub mod metrics;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::{ApiError, CATALOGUE, CodeInfo, Module, ok};
use crate::state::AppState;

pub use docs::openapi;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/myapi/error-codes", web::get().to(error_codes))
        .route("/metrics", web::get().to(metrics::metrics));
    docs::configure(cfg);
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "up")]
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = inline(crate::api::SuccessBody<Health>))))]
pub async fn healthz() -> HttpResponse {
    ok(Health { status: "up" })
}

/// The database answers. 503 with `Retry-After` when it does not.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = inline(crate::api::SuccessBody<Health>)),
    (status = 503, description = "The database is unreachable.", body = crate::api::ErrorBody)))]
pub async fn readyz(context: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    sqlx::query_scalar!(r#"SELECT 1 AS "one!""#)
        .fetch_one(&context.pool)
        .await
        .map_err(|error| ApiError::unavailable(2).with_cause(error))?;
    Ok(ok(Health { status: "ready" }))
}

/// A module and the sub-code ranges it owns.
#[derive(Serialize, ToSchema)]
pub struct ModuleRanges {
    pub module: Module,
    pub title: &'static str,
    pub purpose: &'static str,
    /// Inclusive `[from, to]` pairs.
    pub ranges: Vec<(u32, u32)>,
    /// Where this service's own codes of the module (extensions) live.
    pub extension_ranges: Vec<(u32, u32)>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorCodes {
    pub modules: Vec<ModuleRanges>,
    pub items: &'static [CodeInfo],
    pub total: usize,
}

pub fn module_ranges() -> Vec<ModuleRanges> {
    Module::WITH_SUB_CODES
        .iter()
        .map(|module| ModuleRanges {
            module: *module,
            title: module.title(),
            purpose: module.purpose(),
            ranges: module.ranges().to_vec(),
            extension_ranges: module.extension_ranges().to_vec(),
        })
        .collect()
}

/// Every global code and module sub code, with name, description, recommendation and messages.
#[utoipa::path(get, path = "/myapi/error-codes", tag = "operations",
    responses((status = 200, body = inline(crate::api::SuccessBody<ErrorCodes>))))]
pub async fn error_codes() -> HttpResponse {
    ok(ErrorCodes {
        modules: module_ranges(),
        items: CATALOGUE,
        total: CATALOGUE.len(),
    })
}
