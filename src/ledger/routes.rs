//! `GET /myapi/credits/ledger` and the admin's credit adjustment.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use super::{Applied, Entry, LedgerError, Movement};
use crate::api::{
    ApiError, ApiJson, ApiQuery, Authorized, ErrorBody, IdempotencyKey, PageQuery, PathAndBody,
    SuccessBody, ok,
};
use crate::auth::ActiveUser;
use crate::auth::{AdminUser, users};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/myapi/credits/ledger", web::get().to(list_entries))
        .route(
            "/myapi/admin/users/{id}/credits",
            web::post().to(adjust_credits),
        );
}

/// The user's credit movements, newest first.
#[utoipa::path(get, path = "/myapi/credits/ledger", tag = "credits", params(PageQuery),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<crate::api::Page<Entry>>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn list_entries(
    context: web::Data<AppState>,
    Authorized(ActiveUser(session), ApiQuery(query)): Authorized<ActiveUser, ApiQuery<PageQuery>>,
) -> Result<HttpResponse, ApiError> {
    let page = query.resolve()?;
    let user_id = session.user.id;
    let entries = sqlx::query_as!(
        Entry,
        r#"SELECT id, amount, balance_after, reason, reference, created_at FROM ledger_entries
           WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"#,
        user_id,
        page.limit(),
        page.offset()
    )
    .fetch_all(&context.pool)
    .await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "total!" FROM ledger_entries WHERE user_id = $1"#,
        user_id
    )
    .fetch_one(&context.pool)
    .await?;
    Ok(page.answer(entries, total))
}

/// An adjustment's largest size, either way.
const MAX_ADJUSTMENT: u64 = 1_000_000_000_000;

#[derive(Deserialize, ToSchema)]
pub struct Adjustment {
    /// Credits to add; negative takes credits, down to zero.
    pub amount: i64,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct Adjusted {
    pub balance: i64,
    /// False when the same `Idempotency-Key` was applied before.
    pub applied: bool,
}

/// Adds or takes credits. `Idempotency-Key` makes a retried request apply once.
#[utoipa::path(post, path = "/myapi/admin/users/{id}/credits", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    request_body = Adjustment, security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Adjusted>)),
    (status = 400, description = "The amount is zero, or would take the balance below zero.",
        body = ErrorBody),
    (status = 403, description = "Not an admin.", body = ErrorBody),
    (status = 404, description = "No such user.", body = ErrorBody)))]
pub async fn adjust_credits(
    context: web::Data<AppState>,
    req: HttpRequest,
    Authorized(admin, (path, ApiJson(body))): Authorized<AdminUser, PathAndBody<Uuid, Adjustment>>,
) -> Result<HttpResponse, ApiError> {
    let user_id = path.into_inner();
    let reason = body.reason.trim();
    if body.amount == 0 || body.amount.unsigned_abs() > MAX_ADJUSTMENT {
        return Err(ApiError::bad_request(
            "field `amount`: not zero, and at most 1000000000000 either way.",
        ));
    }
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "field `reason`: 1 to 200 characters.",
        ));
    }
    if !users::exists(&context.pool, user_id).await? {
        return Err(ApiError::not_found());
    }
    // The admin who made it is kept in the entry's key, never in the reference the user reads.
    let key = match IdempotencyKey::of_request(&req)? {
        Some(key) => format!("adjustment:{}:{}", admin.0.id, key.as_str()),
        None => format!("adjustment:{}:{}", admin.0.id, Uuid::new_v4()),
    };
    let reference = reason;
    let mut transaction = context.pool.begin().await?;
    let movement = Movement {
        user_id,
        amount: body.amount,
        reason: "adjustment",
        reference: Some(reference),
        key: &key,
    };
    let applied = match super::apply(&mut transaction, movement, context.clock.now()).await {
        Ok(applied) => applied,
        Err(LedgerError::InsufficientBalance { balance, .. }) => {
            return Err(ApiError::bad_request(format!(
                "field `amount`: the balance is {balance}; it cannot go below zero."
            )));
        }
        Err(other) => return Err(other.into()),
    };
    transaction.commit().await?;
    context.writes_seen.wait(&context.pool).await;
    let balance = super::balance(&context.pool, user_id).await?;
    Ok(ok(Adjusted {
        balance,
        applied: matches!(applied, Applied::Recorded { .. }),
    }))
}

#[derive(OpenApi)]
#[openapi(paths(list_entries, adjust_credits), tags((name = "credits")))]
pub struct LedgerApi;
