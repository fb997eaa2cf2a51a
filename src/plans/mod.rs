//! Plans: what can be bought, the free plan's limits, the admin's CRUD, and the account status
//! (which plan's limits apply, the credits, the subscription).

mod admin;
mod repo;
mod status;

use actix_web::{HttpResponse, web};
use utoipa::OpenApi;

use crate::api::{ApiError, SuccessBody, ok};
use crate::startup::AppContext;

pub use admin::{admin_create, admin_delete, admin_list, admin_update};
pub use repo::{Plan, PlanType, PublicPlan, account_plan, find};
pub use status::SubscriptionView;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/myapi/plans", web::get().to(list_plans))
        .route("/myapi/status", web::get().to(status::status));
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PlanList {
    pub items: Vec<PublicPlan>,
}

/// The plans on sale, and the free plan.
#[utoipa::path(get, path = "/myapi/plans", tag = "plans",
    responses((status = 200, body = inline(SuccessBody<PlanList>))))]
pub async fn list_plans(context: web::Data<AppContext>) -> Result<HttpResponse, ApiError> {
    let plans = repo::list(&context.pool, true).await?;
    Ok(ok(PlanList {
        items: plans.into_iter().map(PublicPlan::from).collect(),
    }))
}

#[derive(OpenApi)]
#[openapi(
    paths(list_plans, status::status, admin::admin_list, admin::admin_create, admin::admin_update,
        admin::admin_delete),
    tags((name = "plans", description = "Plans and the account status"))
)]
pub struct PlansApi;
