//! Redemption codes over HTTP: a user redeems one; admins create batches (the codes shown this
//! once, as JSON or CSV), list them with their counts, and disable one.

use actix_web::http::header::{ACCEPT, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::PaymentError;
use super::redemption::{self, BatchView, NewBatch};
use crate::api::{
    ApiError, ApiJson, ApiQuery, Authorized, ErrorBody, Page, PageQuery, SuccessBody, client_key,
    ok,
};
use crate::auth::{ActiveUser, AdminUser};
use crate::ledger;
use crate::limits::Rate;
use crate::plans;
use crate::state::AppState;

type Context = web::Data<AppState>;

/// Wrong codes an account, and a client address, may try in an hour before 429.
const WRONG_CODES_PER_USER_PER_HOUR: u32 = 10;
const WRONG_CODES_PER_CLIENT_PER_HOUR: u32 = 30;
const MAX_CODES_PER_BATCH: i64 = 10_000;
const MAX_CREDITS: i64 = 1_000_000_000_000;

#[derive(Deserialize, ToSchema)]
pub struct RedeemRequest {
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct RedeemAnswer {
    pub credits_added: i64,
    /// The plan of which one period was granted; null for a credits code.
    pub plan_id: Option<i64>,
    /// The balance after.
    pub credits: i64,
}

/// Redeems a code once: its credits, or one period of its plan.
#[utoipa::path(post, path = "/myapi/redeem", tag = "payment", request_body = RedeemRequest,
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<RedeemAnswer>)),
    (status = 400, description = "40030 unknown, used, expired or withdrawn (the detail says \
        which).", body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody),
    (status = 429, description = "Too many wrong codes from this account or client this hour \
        (with Retry-After).", body = ErrorBody)))]
pub async fn redeem(
    context: Context,
    req: HttpRequest,
    Authorized(ActiveUser(session), ApiJson(body)): Authorized<ActiveUser, ApiJson<RedeemRequest>>,
) -> Result<HttpResponse, ApiError> {
    let user_id = session.user.id;
    let user_key = user_id.to_string();
    let client = client_key(&req, &context.settings.trusted_proxies);
    let per_user = Rate::per_hour(WRONG_CODES_PER_USER_PER_HOUR);
    let per_client = Rate::per_hour(WRONG_CODES_PER_CLIENT_PER_HOUR);
    for (key, rate) in [(&user_key, per_user), (&client, per_client)] {
        let allowed = context.limiter.would_allow("redeem_guess", key, rate).await;
        if !allowed.allowed {
            return Err(PaymentError::RedemptionThrottled {
                retry_after_secs: allowed.retry_after_secs(),
            }
            .into());
        }
    }
    let now = context.clock.now();
    let outcome = match redemption::digest(&body.code) {
        Some(code_hash) => {
            let mut transaction = context.pool.begin().await?;
            let redeemed = redemption::redeem(&mut transaction, &code_hash, user_id, now).await;
            if redeemed.is_ok() {
                transaction.commit().await?;
                context.writes_seen.wait(&context.pool).await;
            }
            redeemed
        }
        None => Err(PaymentError::RedemptionInvalid("No such code.")),
    };
    let redeemed = match outcome {
        Ok(redeemed) => redeemed,
        Err(error @ PaymentError::RedemptionInvalid(_)) => {
            context
                .limiter
                .check("redeem_guess", &user_key, per_user)
                .await;
            context
                .limiter
                .check("redeem_guess", &client, per_client)
                .await;
            return Err(error.into());
        }
        Err(error) => return Err(error.into()),
    };
    let credits = ledger::balance(&context.pool, user_id).await?;
    Ok(ok(RedeemAnswer {
        credits_added: redeemed.credits_added,
        plan_id: redeemed.plan_id,
        credits,
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct NewBatchRequest {
    /// How many codes, 1 to 10000.
    pub count: i64,
    /// Credits each code grants; or `plan_id`.
    pub credits: Option<i64>,
    /// The plan each code grants one period of; or `credits`.
    pub plan_id: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub note: String,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedBatch {
    #[serde(flatten)]
    pub batch: BatchView,
    /// The codes, shown this once: only their digests are kept.
    pub codes: Vec<String>,
}

/// Creates a batch of codes. `Accept: text/csv` answers the codes as CSV (`code` and one code
/// a line) with the batch id in `X-Batch-Id`.
#[utoipa::path(post, path = "/myapi/admin/redemption-batches", tag = "admin",
    request_body = NewBatchRequest, security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<CreatedBatch>)),
    (status = 400, description = "A field is invalid (the detail names it).", body = ErrorBody),
    (status = 403, description = "Not an admin.", body = ErrorBody)))]
pub async fn create_batch(
    context: Context,
    req: HttpRequest,
    Authorized(AdminUser(admin), ApiJson(body)): Authorized<AdminUser, ApiJson<NewBatchRequest>>,
) -> Result<HttpResponse, ApiError> {
    let now = context.clock.now();
    if !(1..=MAX_CODES_PER_BATCH).contains(&body.count) {
        return Err(ApiError::bad_request("field `count`: 1 to 10000."));
    }
    match (body.credits, body.plan_id) {
        (Some(credits), None) if (1..=MAX_CREDITS).contains(&credits) => {}
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "field `credits`: 1 to 1000000000000.",
            ));
        }
        (None, Some(plan_id)) => {
            if plans::find(&context.pool, plan_id).await?.is_none() {
                return Err(ApiError::bad_request("field `plan_id`: no such plan."));
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "fields `credits` and `plan_id`: exactly one of them.",
            ));
        }
    }
    if body.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::bad_request("field `expires_at`: in the future."));
    }
    if body.note.chars().count() > 500 {
        return Err(ApiError::bad_request(
            "field `note`: at most 500 characters.",
        ));
    }
    let codes: Vec<String> = (0..body.count).map(|_| redemption::new_code()).collect();
    let batch = NewBatch {
        credits: body.credits,
        plan_id: body.plan_id,
        expires_at: body.expires_at,
        note: body.note.trim(),
        created_by: admin.id,
        now,
    };
    let mut transaction = context.pool.begin().await?;
    let id = redemption::insert_batch(&mut transaction, batch, &codes).await?;
    transaction.commit().await?;
    tracing::info!(
        batch_id = id,
        count = codes.len(),
        "redemption batch created"
    );
    let wants_csv = req
        .headers()
        .get(ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"));
    if wants_csv {
        let mut csv = String::from("code\n");
        for code in &codes {
            csv.push_str(code);
            csv.push('\n');
        }
        return Ok(HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, "text/csv; charset=utf-8"))
            .insert_header(("X-Batch-Id", id.to_string()))
            .body(csv));
    }
    let batch = one_batch(&context, id).await?;
    Ok(ok(CreatedBatch { batch, codes }))
}

async fn one_batch(context: &AppState, id: i64) -> Result<BatchView, ApiError> {
    let page = PageQuery::default().resolve()?;
    redemption::list_batches(&context.pool, page, Some(id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(ApiError::not_found)
}

/// Batches, newest first, with how many of their codes were used.
#[utoipa::path(get, path = "/myapi/admin/redemption-batches", tag = "admin", params(PageQuery),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Page<BatchView>>)),
    (status = 403, description = "Not an admin.", body = ErrorBody)))]
pub async fn list_batches(
    context: Context,
    Authorized(_admin, ApiQuery(query)): Authorized<AdminUser, ApiQuery<PageQuery>>,
) -> Result<HttpResponse, ApiError> {
    let page = query.resolve()?;
    let items = redemption::list_batches(&context.pool, page, None).await?;
    let total = redemption::count_batches(&context.pool).await?;
    Ok(page.answer(items, total))
}

/// Disables a batch: its unused codes stop working.
#[utoipa::path(post, path = "/myapi/admin/redemption-batches/{id}/disable", tag = "admin",
    params(("id" = i64, Path, description = "The batch's id.")),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<BatchView>)),
    (status = 403, description = "Not an admin.", body = ErrorBody),
    (status = 404, description = "No such batch.", body = ErrorBody)))]
pub async fn disable_batch(
    context: Context,
    Authorized(_admin, path): Authorized<AdminUser, web::Path<i64>>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if !redemption::disable_batch(&context.pool, id, context.clock.now()).await? {
        return Err(ApiError::not_found());
    }
    Ok(ok(one_batch(&context, id).await?))
}
