//! Plans: what can be bought, the free plan's limits and the admin's CRUD. Every statement on
//! the `plans` table is in `repo.rs`.

mod admin;
mod catalog;
mod repo;

use actix_web::{HttpResponse, web};
use utoipa::OpenApi;

use crate::api::{ApiError, SuccessBody, ok};
use crate::state::AppState;

pub use catalog::Catalog;
pub use repo::{Plan, PlanType, PublicPlan, active_free, find};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/myapi/plans", web::get().to(list_plans))
        .route("/myapi/admin/plans", web::get().to(admin::admin_list))
        .route("/myapi/admin/plans", web::post().to(admin::admin_create))
        .route(
            "/myapi/admin/plans/{id}",
            web::put().to(admin::admin_update),
        )
        .route(
            "/myapi/admin/plans/{id}",
            web::delete().to(admin::admin_delete),
        );
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PlanList {
    pub items: Vec<PublicPlan>,
}

/// The plans on sale, and the free plan.
#[utoipa::path(get, path = "/myapi/plans", tag = "plans",
    responses((status = 200, body = inline(SuccessBody<PlanList>))))]
pub async fn list_plans(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let plans = repo::list(&state.pool, true).await?;
    Ok(ok(PlanList {
        items: plans.into_iter().map(PublicPlan::from).collect(),
    }))
}

#[derive(OpenApi)]
#[openapi(
    paths(list_plans, admin::admin_list, admin::admin_create, admin::admin_update,
        admin::admin_delete),
    tags((name = "plans", description = "Plans and the account status"))
)]
pub struct PlansApi;
