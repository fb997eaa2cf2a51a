//! `GET /myapi/status`: the plan whose limits apply, the credits and the subscription.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::cold::month_calls;
use super::keys::AccountCaller;
use crate::api::{ApiError, ErrorBody, SuccessBody, ok};
use crate::ledger;
use crate::payment::{self, SubscriptionView};
use crate::plans::PlanType;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct PlanSummary {
    pub id: i64,
    pub name: String,
    pub plan_type: PlanType,
}

#[derive(Serialize, ToSchema)]
pub struct RateLimits {
    pub rps: i32,
    pub rph: i32,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    /// The plan whose limits apply; null when no free plan is active and nothing is subscribed.
    pub plan: Option<PlanSummary>,
    pub credits: i64,
    /// Calls charged this calendar month (UTC).
    pub month_calls: i64,
    pub monthly_quota: Option<i64>,
    pub monthly_remaining: Option<i64>,
    pub rate_limits: RateLimits,
    pub subscription: Option<SubscriptionView>,
}

/// The account's plan, credits, limits and subscription.
#[utoipa::path(get, path = "/myapi/status", tag = "plans", security(("session" = []), ("api_key" = [])),
    responses(
    (status = 200, body = inline(SuccessBody<Status>)),
    (status = 401, description = "40101 no valid session; 40103 a bad API key.", body = ErrorBody),
    (status = 403, description = "40301 the account is frozen.", body = ErrorBody)))]
pub async fn status(
    context: web::Data<AppState>,
    caller: AccountCaller,
) -> Result<HttpResponse, ApiError> {
    let user_id = caller.user_id;
    let now = context.clock.now();
    let grace = context.settings.billing_grace;
    let (plan, subscription) = payment::account_plan(&context.pool, user_id, now, grace).await?;
    let credits = ledger::balance(&context.pool, user_id).await?;
    let month_calls = month_calls(&context.pool, user_id, context.clock.now()).await?;
    let monthly_quota = plan.as_ref().and_then(|plan| plan.monthly_quota);
    Ok(ok(Status {
        rate_limits: RateLimits {
            rps: plan.as_ref().map_or(0, |plan| plan.rps_limit),
            rph: plan.as_ref().map_or(0, |plan| plan.rph_limit),
        },
        plan: plan.map(|plan| PlanSummary {
            id: plan.id,
            name: plan.name,
            plan_type: plan.plan_type,
        }),
        credits,
        month_calls,
        monthly_quota,
        monthly_remaining: monthly_quota.map(|quota| (quota - month_calls).max(0)),
        subscription,
    }))
}
