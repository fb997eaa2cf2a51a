//! What a key's owner sets on it: `PATCH /myapi/keys/{id}` (name, expiry, its own per-second
//! rate, the providers it may call, the client networks it may come from, a spend cap) and
//! `POST /myapi/keys/{id}/rotate` (a new secret, the previous one kept for a grace period).
//! Each change moves `changed_at`, which tells every instance to load the key again.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use secrecy::ExposeSecret;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::GatewayState;
use super::keys::{CreatedKey, DISPLAY_PREFIX_CHARS, KEY_PREFIX};
use super::spend_cap::CapPeriod;
use crate::api::{ApiError, ApiJson, Authorized, ErrorBody, PathAndBody, SuccessBody, ok, present};
use crate::auth::{ActiveUser, token};
use crate::state::AppState;

/// The most providers or networks a key may list.
const MAX_LISTED: usize = 50;
/// The longest grace a rotated key's previous secret may keep working.
const MAX_GRACE_SECONDS: i64 = 86_400;

#[derive(Deserialize, ToSchema)]
pub struct KeyChange {
    pub name: Option<String>,
    /// RFC 3339, in the future; null: never expires.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// Calls a second, 1 to 1000000 (the plan's limit still applies); null: the plan's.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i32>)]
    pub rps_limit: Option<Option<i32>>,
    /// Provider slugs the key may call; null: all.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub providers: Option<Option<Vec<String>>>,
    /// Client addresses or networks (CIDR) the key may be used from; null: any.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_ips: Option<Option<Vec<String>>>,
    /// The most credits the key may spend per calendar month (UTC) or in total (40305 past
    /// it); null: only the account's credits bound it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<SpendCapChange>)]
    pub spend_cap: Option<Option<SpendCapChange>>,
}

#[derive(Deserialize, ToSchema)]
pub struct SpendCapChange {
    /// 1 to 10^12 credits.
    pub credits: i64,
    pub period: CapPeriod,
}

/// The largest spend cap accepted.
const MAX_SPEND_CAP: i64 = 1_000_000_000_000;

fn bad(detail: &str) -> ApiError {
    ApiError::bad_request(detail.to_owned())
}

/// Networks as PostgreSQL keeps them (`10.0.0.0/8`; an address alone is its /32 or /128).
fn parse_networks(listed: &[String]) -> Result<Vec<String>, ApiError> {
    if listed.len() > MAX_LISTED {
        return Err(bad("field `allowed_ips`: at most 50 entries."));
    }
    listed
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|network| network.trunc().to_string())
                .map_err(|_| bad("field `allowed_ips`: addresses or CIDR networks."))
        })
        .collect()
}

fn check_providers(listed: &[String]) -> Result<(), ApiError> {
    let slug = |slug: &String| {
        !slug.is_empty()
            && slug.len() <= 63
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    if listed.len() > MAX_LISTED || !listed.iter().all(slug) {
        return Err(bad("field `providers`: at most 50 provider slugs."));
    }
    Ok(())
}

/// Changes a key's name and controls; a field left out stays, null clears it. Every instance
/// applies the change within a second.
#[utoipa::path(patch, path = "/myapi/keys/{id}", tag = "keys", request_body = KeyChange,
    params(("id" = Uuid, Path, description = "The key's id.")),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<super::keys::KeyView>)),
    (status = 400, description = "A field is invalid (the detail names it).", body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody),
    (status = 403, description = "40302 another user's key.", body = ErrorBody),
    (status = 404, description = "No such key.", body = ErrorBody)))]
pub async fn change(
    context: web::Data<AppState>,
    gateway: web::Data<GatewayState>,
    Authorized(ActiveUser(session), (path, ApiJson(body))): Authorized<
        ActiveUser,
        PathAndBody<Uuid, KeyChange>,
    >,
) -> Result<HttpResponse, ApiError> {
    let key_id = path.into_inner();
    let now = context.clock.now();
    if let Some(Some(cap)) = &body.spend_cap
        && !(1..=MAX_SPEND_CAP).contains(&cap.credits)
    {
        return Err(bad("field `spend_cap.credits`: 1 to 1000000000000."));
    }
    let name = match &body.name {
        Some(name) if name.trim().is_empty() || name.trim().chars().count() > 100 => {
            return Err(bad("field `name`: 1 to 100 characters."));
        }
        name => name.as_deref().map(str::trim),
    };
    if let Some(Some(at)) = body.expires_at
        && at <= now
    {
        return Err(bad("field `expires_at`: in the future, or null."));
    }
    if let Some(Some(rps)) = body.rps_limit
        && !(1..=1_000_000).contains(&rps)
    {
        return Err(bad("field `rps_limit`: 1 to 1000000, or null."));
    }
    if let Some(Some(providers)) = &body.providers {
        check_providers(providers)?;
    }
    let networks = match &body.allowed_ips {
        Some(Some(listed)) => Some(Some(parse_networks(listed)?)),
        Some(None) => Some(None),
        None => None,
    };
    super::keys::own_live_key(&context, session.user.id, key_id).await?;
    let providers = body.providers.clone().flatten();
    let cap = body.spend_cap.as_ref().and_then(Option::as_ref);
    let allowed_ips = networks.clone().flatten();
    sqlx::query!(
        r#"UPDATE api_keys SET
               name = COALESCE($2, name),
               expires_at = CASE WHEN $3 THEN $4 ELSE expires_at END,
               rps_limit = CASE WHEN $5 THEN $6 ELSE rps_limit END,
               providers = CASE WHEN $7 THEN $8 ELSE providers END,
               allowed_ips = CASE WHEN $9 THEN $10 ELSE allowed_ips END,
               spend_cap_credits = CASE WHEN $11 THEN $12 ELSE spend_cap_credits END,
               spend_cap_period = CASE WHEN $11 THEN $13 ELSE spend_cap_period END,
               changed_at = clock_timestamp()
           WHERE id = $1"#,
        key_id,
        name,
        body.expires_at.is_some(),
        body.expires_at.flatten(),
        body.rps_limit.is_some(),
        body.rps_limit.flatten(),
        body.providers.is_some(),
        providers.as_deref() as Option<&[String]>,
        networks.is_some(),
        allowed_ips.as_deref() as Option<&[String]>,
        body.spend_cap.is_some(),
        cap.map(|cap| cap.credits),
        cap.map(|cap| cap.period.as_str())
    )
    .execute(&context.pool)
    .await?;
    // This instance at once; the others on the notification.
    gateway.directory.forget_key(key_id);
    let view = super::keys::find_view(&context, session.user.id, key_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(ok(view))
}

#[derive(Deserialize, ToSchema)]
pub struct Rotation {
    /// How long the previous secret keeps working, 0 to 86400 seconds.
    pub grace_seconds: i64,
}

/// A new secret for a key, shown this once; the previous one keeps working for the grace
/// period (0: it stops at once).
#[utoipa::path(post, path = "/myapi/keys/{id}/rotate", tag = "keys", request_body = Rotation,
    params(("id" = Uuid, Path, description = "The key's id.")),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<CreatedKey>)),
    (status = 400, description = "`grace_seconds` outside 0..=86400.", body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody),
    (status = 403, description = "40302 another user's key.", body = ErrorBody),
    (status = 404, description = "No such key.", body = ErrorBody)))]
pub async fn rotate(
    context: web::Data<AppState>,
    gateway: web::Data<GatewayState>,
    Authorized(ActiveUser(session), (path, ApiJson(body))): Authorized<
        ActiveUser,
        PathAndBody<Uuid, Rotation>,
    >,
) -> Result<HttpResponse, ApiError> {
    let key_id = path.into_inner();
    if !(0..=MAX_GRACE_SECONDS).contains(&body.grace_seconds) {
        return Err(bad("field `grace_seconds`: 0 to 86400."));
    }
    super::keys::own_live_key(&context, session.user.id, key_id).await?;
    let key = token::generate(KEY_PREFIX);
    let prefix: String = key
        .expose_secret()
        .chars()
        .take(DISPLAY_PREFIX_CHARS)
        .collect();
    let grace_end = (body.grace_seconds > 0)
        .then(|| context.clock.now() + chrono::Duration::seconds(body.grace_seconds));
    let row = sqlx::query!(
        r#"UPDATE api_keys SET
               previous_key_hash = CASE WHEN $4::timestamptz IS NULL THEN NULL ELSE key_hash END,
               previous_expires_at = $4,
               key_hash = $2, prefix = $3, changed_at = clock_timestamp()
           WHERE id = $1 RETURNING name, created_at"#,
        key_id,
        token::digest(key.expose_secret()),
        prefix,
        grace_end
    )
    .fetch_one(&context.pool)
    .await?;
    // This instance at once; the others on the notification.
    gateway.directory.forget_key(key_id);
    tracing::info!(%key_id, grace_seconds = body.grace_seconds, "API key rotated");
    Ok(ok(CreatedKey {
        id: key_id,
        name: row.name,
        key: key.expose_secret().to_owned(),
        prefix,
        created_at: row.created_at,
    }))
}
