//! API keys: `mk_` and 256 random bits, shown once, stored as SHA-256 with a display prefix;
//! created, listed and revoked by their owner.

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::GatewayState;
use super::directory::{Known, Lookup};
use super::error::GatewayError;
use super::spend_cap::{CapPeriod, SpendCap};
use crate::api::{
    ApiError, ApiJson, ApiQuery, Authorized, Code, ErrorBody, Page, PageQuery, SuccessBody,
    client_ip, ok, throttle_key,
};
use crate::auth::session::bearer_in;
use crate::auth::token;
use crate::auth::{ActiveUser, users};
use crate::limits::Rate;
use crate::state::AppState;

pub const KEY_PREFIX: &str = "mk_";
/// Live keys an account may hold.
pub const MAX_KEYS_PER_ACCOUNT: i64 = 20;
pub const DISPLAY_PREFIX_CHARS: usize = 11;

#[derive(Deserialize, ToSchema)]
pub struct NewKey {
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    pub id: Uuid,
    pub name: String,
    /// The key itself: shown this once, never again.
    pub key: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// The last call, to the half minute.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The client address of the last call.
    pub last_ip: Option<String>,
    /// After this the key is refused (40103); null: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Calls a second, below the plan's; null: the plan's.
    pub rps_limit: Option<i32>,
    /// The providers it may call; null: all.
    pub providers: Option<Vec<String>>,
    /// The client networks (CIDR) it may be used from; null: any.
    pub allowed_ips: Option<Vec<String>>,
    /// Charged calls and credits of this calendar month (UTC), as settled.
    pub calls_this_month: i64,
    pub credits_this_month: i64,
    /// The most it may spend per period; null: only the account's credits bound it.
    pub spend_cap: Option<SpendCapView>,
}

#[derive(Serialize, ToSchema)]
pub struct SpendCapView {
    pub credits: i64,
    pub period: CapPeriod,
    /// Credits spent in the period, as settled (calls of the last second may be missing).
    pub spent: i64,
}

/// Creates a key; the answer is the only time it is shown.
#[utoipa::path(post, path = "/myapi/keys", tag = "keys", request_body = NewKey,
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<CreatedKey>)),
    (status = 400, description = "A bad name, or the account holds the most keys allowed.",
        body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn create(
    context: web::Data<AppState>,
    Authorized(ActiveUser(session), ApiJson(body)): Authorized<ActiveUser, ApiJson<NewKey>>,
) -> Result<HttpResponse, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request("field `name`: 1 to 100 characters."));
    }
    let user_id = session.user.id;
    let mut transaction = context.pool.begin().await?;
    // The user's row lock makes the count and the insert one step, so racing requests cannot
    // pass the cap together.
    users::lock(&mut transaction, user_id).await?;
    let live = sqlx::query_scalar!(
        r#"SELECT count(*) AS "live!" FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL"#,
        user_id
    )
    .fetch_one(&mut *transaction)
    .await?;
    if live >= MAX_KEYS_PER_ACCOUNT {
        return Err(ApiError::bad_request(format!(
            "An account holds at most {MAX_KEYS_PER_ACCOUNT} keys; revoke one first."
        )));
    }
    let key = token::generate(KEY_PREFIX);
    let prefix: String = key
        .expose_secret()
        .chars()
        .take(DISPLAY_PREFIX_CHARS)
        .collect();
    let row = sqlx::query!(
        r#"INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at)
           VALUES ($1, $2, $3, $4, $5) RETURNING id, created_at"#,
        user_id,
        name,
        prefix,
        token::digest(key.expose_secret()),
        context.clock.now()
    )
    .fetch_one(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(ok(CreatedKey {
        id: row.id,
        name: name.to_owned(),
        key: key.expose_secret().to_owned(),
        prefix,
        created_at: row.created_at,
    }))
}

/// The caller's live keys.
#[utoipa::path(get, path = "/myapi/keys", tag = "keys", params(PageQuery),
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Page<KeyView>>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn list(
    context: web::Data<AppState>,
    Authorized(ActiveUser(session), ApiQuery(query)): Authorized<ActiveUser, ApiQuery<PageQuery>>,
) -> Result<HttpResponse, ApiError> {
    let page = query.resolve()?;
    let keys = views(&context, session.user.id, None, page).await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "total!" FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL"#,
        session.user.id
    )
    .fetch_one(&context.pool)
    .await?;
    Ok(page.answer(keys, total))
}

/// The user's live keys as views (one when `only` names it), newest first.
async fn views(
    context: &AppState,
    user_id: Uuid,
    only: Option<Uuid>,
    page: crate::api::PageRequest,
) -> Result<Vec<KeyView>, sqlx::Error> {
    let month_start = super::limits::month_start(context.clock.now());
    let rows = sqlx::query!(
        r#"SELECT k.id, k.name, k.prefix, k.created_at, k.last_used_at, k.last_ip, k.expires_at,
                  k.rps_limit, k.providers, k.allowed_ips, k.spend_cap_credits, k.spend_cap_period,
                  COALESCE(u.calls, 0) AS "calls_this_month!",
                  COALESCE(u.credits, 0) AS "credits_this_month!",
                  COALESCE(CASE WHEN k.spend_cap_period = 'total' THEN (
                      SELECT sum(credits)::bigint FROM usage_hourly
                      WHERE user_id = k.user_id AND key_id = k.id) ELSE u.credits END, 0)
                      AS "cap_spent!"
           FROM api_keys k
           LEFT JOIN LATERAL (
               SELECT sum(calls)::bigint AS calls, sum(credits)::bigint AS credits
               FROM usage_hourly
               WHERE user_id = k.user_id AND key_id = k.id AND hour >= $4) u ON true
           WHERE k.user_id = $1 AND k.revoked_at IS NULL AND ($5::uuid IS NULL OR k.id = $5)
           ORDER BY k.created_at DESC, k.id
           LIMIT $2 OFFSET $3"#,
        user_id,
        page.limit(),
        page.offset(),
        month_start,
        only
    )
    .fetch_all(&context.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| KeyView {
            spend_cap: SpendCap::from_columns(
                row.spend_cap_credits,
                row.spend_cap_period.as_deref(),
            )
            .map(|cap| SpendCapView {
                credits: cap.credits,
                period: cap.period,
                spent: row.cap_spent,
            }),
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            last_ip: row.last_ip,
            expires_at: row.expires_at,
            rps_limit: row.rps_limit,
            providers: row.providers,
            allowed_ips: row.allowed_ips,
            calls_this_month: row.calls_this_month,
            credits_this_month: row.credits_this_month,
        })
        .collect())
}

/// One of the user's live keys as a view.
pub async fn find_view(
    context: &AppState,
    user_id: Uuid,
    key_id: Uuid,
) -> Result<Option<KeyView>, ApiError> {
    let page = PageQuery::default().resolve()?;
    Ok(views(context, user_id, Some(key_id), page)
        .await?
        .into_iter()
        .next())
}

/// The caller's live key, or 404 (none, or revoked) / 40302 (another user's).
pub async fn own_live_key(context: &AppState, user_id: Uuid, key_id: Uuid) -> Result<(), ApiError> {
    let owner = sqlx::query_scalar!(
        "SELECT user_id FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
        key_id
    )
    .fetch_optional(&context.pool)
    .await?
    .ok_or_else(ApiError::not_found)?;
    if owner != user_id {
        return Err(ApiError::new(Code::FORBIDDEN_RESOURCE));
    }
    Ok(())
}

/// Revokes a key: every instance refuses it within a second.
#[utoipa::path(delete, path = "/myapi/keys/{id}", tag = "keys", security(("session" = [])),
    params(("id" = Uuid, Path, description = "The key's id.")),
    responses((status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody),
    (status = 403, description = "40302 another user's key.", body = ErrorBody),
    (status = 404, description = "No such key.", body = ErrorBody)))]
pub async fn revoke(
    context: web::Data<AppState>,
    gateway: web::Data<GatewayState>,
    Authorized(ActiveUser(session), path): Authorized<ActiveUser, web::Path<Uuid>>,
) -> Result<HttpResponse, ApiError> {
    let key_id = path.into_inner();
    own_live_key(&context, session.user.id, key_id).await?;
    sqlx::query!(
        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1",
        key_id,
        context.clock.now()
    )
    .execute(&context.pool)
    .await?;
    gateway.directory.revoke_key(key_id);
    Ok(ok(()))
}

/// The form of every key this service issues: the prefix and 43 characters of URL-safe base64
/// (256 bits). Anything else is refused before any look-up.
fn well_formed(key: &str) -> bool {
    key.len() == KEY_PREFIX.len() + 43
        && key.starts_with(KEY_PREFIX)
        && key[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| URL_SAFE[usize::from(b)])
}

/// The bytes of base64url, as a table: one load a byte where the three tests took a dozen
/// instructions, on all 43 bytes of every call's key.
const URL_SAFE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        byte += 1;
    }
    table
};

/// The key and account of a request made with an API key. A malformed key is refused at once;
/// a key the caches know costs no query; a key they do not know costs one, so the keys not
/// found are limited per client (429 beyond `GATEWAY_FAILED_KEYS_PER_IP_PER_MINUTE`) before
/// more queries are made for that client. A cold account's first lease is reserved with its
/// load, for calls that cost `first_cost` (0: none).
pub async fn authenticate(
    state: &AppState,
    gateway: &GatewayState,
    client: Option<IpAddr>,
    presented: &str,
    first_cost: i64,
) -> Result<Arc<Known>, GatewayError> {
    if !well_formed(presented) {
        return Err(GatewayError::KeyInvalid);
    }
    let digest = token::digest(presented);
    let lookup = match gateway.directory.cached(&digest, first_cost).await? {
        // Boxed: a cold key's way is rare and its future large (see `Meter::hold`).
        Lookup::NotCached => {
            Box::pin(load_cold(state, gateway, client, &digest, first_cost)).await?
        }
        known => known,
    };
    match lookup {
        Lookup::Found(known) => Ok(known),
        Lookup::Unknown | Lookup::NotCached => Err(GatewayError::KeyInvalid),
    }
}

/// A key the caches do not know: loaded, unless this client presented too many unknown keys.
async fn load_cold(
    state: &AppState,
    gateway: &GatewayState,
    client: Option<IpAddr>,
    digest: &[u8],
    first_cost: i64,
) -> Result<Lookup, GatewayError> {
    let client = throttle_key(client);
    let rate = Rate::per_minute(state.settings.gateway.failed_keys_per_ip_per_minute);
    let allowed = state.limiter.would_allow("bad_key", &client, rate).await;
    if !allowed.allowed {
        return Err(GatewayError::TooManyBadKeys {
            retry_after_secs: allowed.retry_after_secs(),
        });
    }
    let lookup = gateway.directory.load(digest, first_cost).await?;
    if matches!(lookup, Lookup::Unknown) {
        state.limiter.check("bad_key", &client, rate).await;
    }
    Ok(lookup)
}

/// The key a request presents: `X-API-Key`, else `Authorization: Bearer`.
pub fn presented_key(req: &HttpRequest) -> Option<String> {
    let header = |name| req.headers().get(name).map(|value| value.as_bytes());
    key_in(header("x-api-key"), header("authorization")).map(Cow::into_owned)
}

/// The key of an `X-API-Key` value (borrowed from it: a metered call copies nothing), else of
/// an `Authorization: Bearer` one.
pub fn key_in<'a>(
    x_api_key: Option<&'a [u8]>,
    authorization: Option<&[u8]>,
) -> Option<Cow<'a, str>> {
    x_api_key
        .and_then(|value| std::str::from_utf8(value).ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(Cow::Borrowed)
        .or_else(|| authorization.and_then(bearer_in).map(Cow::Owned))
}

/// The account of a request made with an API key or a session (`GET /myapi/status`).
pub struct AccountCaller {
    pub user_id: Uuid,
}

impl FromRequest for AccountCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let gateway = req.app_data::<web::Data<GatewayState>>().cloned();
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let key = presented_key(req).filter(|key| key.starts_with(KEY_PREFIX));
        let session = ActiveUser::from_request(req, payload);
        let client = state
            .as_ref()
            .and_then(|state| client_ip(req, &state.settings.trusted_proxies));
        Box::pin(async move {
            let Some(key) = key else {
                let ActiveUser(session) = session.await?;
                return Ok(AccountCaller {
                    user_id: session.user.id,
                });
            };
            let (Some(gateway), Some(state)) = (gateway, state) else {
                return Err(ApiError::internal(anyhow::anyhow!("no gateway state")));
            };
            let known = authenticate(&state, &gateway, client, &key, 0).await?;
            if known
                .account
                .frozen
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return Err(GatewayError::AccountFrozen.into());
            }
            Ok(AccountCaller {
                user_id: known.key.user_id,
            })
        })
    }
}

/// Revokes every key of an account and forgets their last client address (its erasure).
pub async fn revoke_all(
    connection: &mut sqlx::PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2), last_ip = NULL,
                  allowed_ips = NULL
           WHERE user_id = $1"#,
        user_id,
        now
    )
    .execute(connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_well_formed_only_with_its_prefix_and_43_base64url_bytes() {
        let body = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_01234";
        assert!(well_formed(&format!("{KEY_PREFIX}{body}")));
        assert!(well_formed(token::generate(KEY_PREFIX).expose_secret()));
        for bad in ['+', '/', '=', ' ', '.', 'é'] {
            let key = format!("{KEY_PREFIX}{}{bad}", &body[..43 - bad.len_utf8()]);
            assert!(!well_formed(&key), "{key}");
        }
        assert!(!well_formed(&format!("xx_{body}")));
        assert!(!well_formed(&format!("{KEY_PREFIX}{}", &body[..42])));
    }
}
