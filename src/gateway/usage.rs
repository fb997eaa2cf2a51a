//! `GET /myapi/usage`: calls, credits and errors per hour or day and provider.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{ApiError, ApiQuery, Authorized, ErrorBody, Page, PageQuery, SuccessBody};
use crate::auth::ActiveUser;
use crate::state::AppState;
use uuid::Uuid;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// RFC 3339; 24 hours before `to` by default.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339, exclusive; now by default.
    pub to: Option<DateTime<Utc>>,
    /// `hour` (default) or `day`.
    pub granularity: Option<String>,
    /// Only this key's calls.
    pub key_id: Option<Uuid>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub provider: String,
    /// Calls answered below 500 (charged).
    pub calls: i64,
    pub credits: i64,
    /// Calls the upstream failed (50201, not charged).
    pub errors: i64,
}

/// The caller's usage, oldest bucket first. Settled once a second, so the last second may be
/// missing.
#[utoipa::path(get, path = "/myapi/usage", tag = "keys", params(UsageQuery),
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Page<Bucket>>)),
    (status = 400, description = "A bad range or granularity.", body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn usage(
    context: web::Data<AppState>,
    Authorized(ActiveUser(session), ApiQuery(query)): Authorized<ActiveUser, ApiQuery<UsageQuery>>,
) -> Result<HttpResponse, ApiError> {
    let page = PageQuery {
        page: query.page,
        page_size: query.page_size,
    }
    .resolve()?;
    let granularity = match query.granularity.as_deref().unwrap_or("hour") {
        "hour" => "hour",
        "day" => "day",
        _ => {
            return Err(ApiError::bad_request(
                "query parameter `granularity`: `hour` or `day`.",
            ));
        }
    };
    let to = query.to.unwrap_or_else(|| context.clock.now());
    let from = query.from.unwrap_or(to - chrono::Duration::hours(24));
    if from >= to || to - from > chrono::Duration::days(366) {
        return Err(ApiError::bad_request(
            "query: `from` must precede `to`, by at most a year.",
        ));
    }
    let rows = sqlx::query!(
        r#"SELECT date_trunc($4, hour, 'UTC') AS "start!", provider,
                  sum(calls)::bigint AS "calls!", sum(credits)::bigint AS "credits!",
                  sum(errors)::bigint AS "errors!"
           FROM usage_hourly WHERE user_id = $1 AND hour >= $2 AND hour < $3
             AND ($7::uuid IS NULL OR key_id = $7)
           GROUP BY 1, 2 ORDER BY 1, 2 LIMIT $5 OFFSET $6"#,
        session.user.id,
        from,
        to,
        granularity,
        page.limit(),
        page.offset(),
        query.key_id
    )
    .fetch_all(&context.pool)
    .await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "total!" FROM (
               SELECT 1 FROM usage_hourly WHERE user_id = $1 AND hour >= $2 AND hour < $3
                 AND ($5::uuid IS NULL OR key_id = $5)
               GROUP BY date_trunc($4, hour, 'UTC'), provider) AS buckets"#,
        session.user.id,
        from,
        to,
        granularity,
        query.key_id
    )
    .fetch_one(&context.pool)
    .await?;
    let buckets = rows
        .into_iter()
        .map(|row| Bucket {
            start: row.start,
            provider: row.provider,
            calls: row.calls,
            credits: row.credits,
            errors: row.errors,
        })
        .collect();
    Ok(page.answer(buckets, total))
}
