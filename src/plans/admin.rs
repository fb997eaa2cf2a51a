//! The admin's plan CRUD. A plan that orders refer to is deactivated rather than deleted.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::repo::{self, Plan, PlanFields, PlanType};
use crate::api::{ApiError, ApiJson, Authorized, ErrorBody, PathAndBody, SuccessBody, ok};
use crate::auth::AdminUser;
use crate::db::is_violation_of;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub struct PlanInput {
    pub name: String,
    pub plan_type: PlanType,
    pub amount_cents: i64,
    /// ISO 4217, lower case; `usd` by default.
    pub currency: Option<String>,
    /// `month` or `year` for subscriptions; absent otherwise.
    pub interval: Option<String>,
    #[serde(default)]
    pub credits: i64,
    pub monthly_quota: Option<i64>,
    pub rps_limit: i32,
    pub rph_limit: i32,
    #[serde(default)]
    pub description: String,
    pub active: Option<bool>,
    pub stripe_price_id: Option<String>,
    /// Whether Checkout takes Stripe promotion codes for this plan (false by default).
    #[serde(default)]
    pub allow_promotion_codes: bool,
}

struct ValidPlan {
    currency: String,
    interval: Option<String>,
    active: bool,
    stripe_price_id: Option<String>,
}

/// A price's upper bound: a million in major units.
const MAX_AMOUNT_CENTS: i64 = 100_000_000;
/// Credits a plan may grant, and calls a month may allow.
const MAX_CREDITS: i64 = 1_000_000_000_000;
const MAX_RPS: i32 = 1_000_000;
const MAX_RPH: i32 = 1_000_000_000;

impl PlanInput {
    fn validate(&self) -> Result<ValidPlan, ApiError> {
        let bad = |detail: &str| Err(ApiError::bad_request(detail.to_owned()));
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return bad("field `name`: 1 to 100 characters.");
        }
        // Bounds far above any real plan and far below what arithmetic on them could overflow.
        let within = |value: i64, max: i64| (0..=max).contains(&value);
        if !within(self.amount_cents, MAX_AMOUNT_CENTS) {
            return bad("field `amount_cents`: 0 to 100000000.");
        }
        if !within(self.credits, MAX_CREDITS) {
            return bad("field `credits`: 0 to 1000000000000.");
        }
        if self
            .monthly_quota
            .is_some_and(|quota| !within(quota, MAX_CREDITS))
        {
            return bad("field `monthly_quota`: 0 to 1000000000000, or null.");
        }
        if !(1..=MAX_RPS).contains(&self.rps_limit) {
            return bad("field `rps_limit`: 1 to 1000000.");
        }
        if !(1..=MAX_RPH).contains(&self.rph_limit) {
            return bad("field `rph_limit`: 1 to 1000000000.");
        }
        if self.plan_type != PlanType::Free && self.amount_cents == 0 {
            return bad("field `amount_cents`: a plan on sale needs a price.");
        }
        let currency = self
            .currency
            .as_deref()
            .unwrap_or("usd")
            .trim()
            .to_lowercase();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_lowercase()) {
            return bad("field `currency`: a three-letter ISO 4217 code.");
        }
        let interval = match (self.plan_type, self.interval.as_deref()) {
            (PlanType::Subscription, Some(interval @ ("month" | "year"))) => {
                Some(interval.to_owned())
            }
            (PlanType::Subscription, _) => return bad("field `interval`: `month` or `year`."),
            (_, None) => None,
            (_, Some(_)) => return bad("field `interval`: only subscriptions renew."),
        };
        if self.description.chars().count() > 2000 {
            return bad("field `description`: at most 2000 characters.");
        }
        let stripe_price_id = self
            .stripe_price_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        Ok(ValidPlan {
            currency,
            interval,
            active: self.active.unwrap_or(true),
            stripe_price_id,
        })
    }
}

/// A second active free plan is refused by a unique index.
fn map_write_error(error: sqlx::Error) -> ApiError {
    if is_violation_of(&error, "plans_one_active_free_key") {
        ApiError::bad_request("Only one free plan can be active; deactivate the other first.")
    } else {
        error.into()
    }
}

/// Every plan, inactive ones included.
#[utoipa::path(get, path = "/myapi/admin/plans", tag = "admin", security(("session" = [])),
    responses((status = 200, body = inline(SuccessBody<Vec<Plan>>)),
    (status = 403, description = "Not an admin.", body = ErrorBody)))]
pub async fn admin_list(
    state: web::Data<AppState>,
    _admin: AdminUser,
) -> Result<HttpResponse, ApiError> {
    Ok(ok(repo::list(&state.pool, false).await?))
}

#[utoipa::path(post, path = "/myapi/admin/plans", tag = "admin", request_body = PlanInput,
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Plan>)),
    (status = 400, description = "A field is invalid.", body = ErrorBody),
    (status = 403, description = "Not an admin.", body = ErrorBody)))]
pub async fn admin_create(
    state: web::Data<AppState>,
    Authorized(_admin, ApiJson(input)): Authorized<AdminUser, ApiJson<PlanInput>>,
) -> Result<HttpResponse, ApiError> {
    save(&state, None, &input).await
}

#[utoipa::path(put, path = "/myapi/admin/plans/{id}", tag = "admin", request_body = PlanInput,
    params(("id" = i64, Path, description = "The plan's id.")),
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Plan>)),
    (status = 400, description = "A field is invalid.", body = ErrorBody),
    (status = 403, description = "Not an admin.", body = ErrorBody),
    (status = 404, description = "No such plan.", body = ErrorBody)))]
pub async fn admin_update(
    state: web::Data<AppState>,
    Authorized(_admin, (path, ApiJson(input))): Authorized<AdminUser, PathAndBody<i64, PlanInput>>,
) -> Result<HttpResponse, ApiError> {
    save(&state, Some(path.into_inner()), &input).await
}

async fn save(
    state: &AppState,
    id: Option<i64>,
    input: &PlanInput,
) -> Result<HttpResponse, ApiError> {
    let valid = input.validate()?;
    let fields = PlanFields {
        name: input.name.trim(),
        plan_type: input.plan_type,
        amount_cents: input.amount_cents,
        currency: &valid.currency,
        interval: valid.interval.as_deref(),
        credits: input.credits,
        monthly_quota: input.monthly_quota,
        rps_limit: input.rps_limit,
        rph_limit: input.rph_limit,
        description: &input.description,
        active: valid.active,
        stripe_price_id: valid.stripe_price_id.as_deref(),
        allow_promotion_codes: input.allow_promotion_codes,
    };
    let plan = repo::save(&state.pool, id, fields)
        .await
        .map_err(map_write_error)?
        .ok_or_else(ApiError::not_found)?;
    state.writes_seen.wait(&state.pool).await;
    Ok(ok(plan))
}

#[derive(Serialize, ToSchema)]
pub struct Removed {
    /// True when the plan was deleted; false when orders refer to it and it was deactivated.
    pub deleted: bool,
}

/// Deletes a plan, or deactivates it when orders refer to it.
#[utoipa::path(delete, path = "/myapi/admin/plans/{id}", tag = "admin",
    params(("id" = i64, Path, description = "The plan's id.")),
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Removed>)),
    (status = 403, description = "Not an admin.", body = ErrorBody),
    (status = 404, description = "No such plan.", body = ErrorBody)))]
pub async fn admin_delete(
    state: web::Data<AppState>,
    Authorized(_admin, path): Authorized<AdminUser, web::Path<i64>>,
) -> Result<HttpResponse, ApiError> {
    let deleted = repo::remove(&state.pool, path.into_inner())
        .await?
        .ok_or_else(ApiError::not_found)?;
    state.writes_seen.wait(&state.pool).await;
    Ok(ok(Removed { deleted }))
}
