//! Login sessions: opaque bearer tokens of 256 random bits, stored as SHA-256 digests with an
//! expiry, revoked on logout, password reset and password change. `CurrentSession`,
//! `ActiveUser` and `AdminUser` are the extractors of every `/myapi` route that needs a login.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::error::AuthError;
use super::token;
use super::users::{Profile, Role, UserStatus};
use crate::api::{ApiError, Code};
use crate::state::AppState;

const TOKEN_PREFIX: &str = "ses_";

/// A new session's token (shown to the client once) and its expiry.
pub struct NewSession {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// Where a session is opened from, as the user will see it in their session list.
pub struct Client {
    pub ip: Option<String>,
    /// At most 300 characters of `User-Agent`.
    pub user_agent: Option<String>,
}

impl Client {
    pub fn of(req: &HttpRequest, trusted: &[ipnet::IpNet]) -> Client {
        let user_agent = req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(300).collect());
        Client {
            ip: crate::api::client_ip(req, trusted).map(|ip| ip.to_string()),
            user_agent,
        }
    }

    /// The digest a device is remembered by: no address or agent is kept in clear for it.
    fn fingerprint(&self) -> Vec<u8> {
        let mut digest = Sha256::new();
        digest.update(self.ip.as_deref().unwrap_or_default());
        digest.update([0]);
        digest.update(self.user_agent.as_deref().unwrap_or_default());
        digest.finalize().to_vec()
    }
}

/// How long a device is remembered: a sign-in from one not seen for longer is announced.
const DEVICE_MEMORY: chrono::Duration = chrono::Duration::days(90);
/// `last_seen_at` is written when it is older than this, not on every request.
const LAST_SEEN_EVERY: chrono::Duration = chrono::Duration::minutes(5);

pub async fn create(
    connection: &mut PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
    ttl: std::time::Duration,
    client: &Client,
) -> Result<NewSession, AuthError> {
    let token = token::generate(TOKEN_PREFIX);
    let expires_at = now + chrono::Duration::from_std(ttl).map_err(anyhow::Error::from)?;
    sqlx::query!(
        r#"INSERT INTO sessions (user_id, token_hash, created_at, expires_at, last_seen_at, ip,
                                 user_agent)
           VALUES ($1, $2, $3, $4, $3, $5, $6)"#,
        user_id,
        token::digest(token.expose_secret()),
        now,
        expires_at,
        client.ip,
        client.user_agent
    )
    .execute(connection)
    .await?;
    Ok(NewSession { token, expires_at })
}

/// Remembers the device of a sign-in; true when it is news to tell the owner: the account had
/// not used it for 90 days (or ever) but was used from another device in that time. An
/// account's first recorded sign-in (a new account, or one from before devices were kept) only
/// teaches the device.
pub async fn remember_device(
    connection: &mut PgConnection,
    user_id: Uuid,
    client: &Client,
    now: DateTime<Utc>,
) -> Result<bool, AuthError> {
    let fingerprint = client.fingerprint();
    let known_elsewhere = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM known_devices
             WHERE user_id = $1 AND fingerprint <> $2 AND last_seen_at > $3) AS "known!""#,
        user_id,
        fingerprint,
        now - DEVICE_MEMORY
    )
    .fetch_one(&mut *connection)
    .await?;
    let previous = sqlx::query_scalar!(
        r#"INSERT INTO known_devices AS d (user_id, fingerprint, last_seen_at)
           VALUES ($1, $2, $3)
           ON CONFLICT (user_id, fingerprint) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at
           RETURNING (SELECT last_seen_at FROM known_devices
                      WHERE user_id = $1 AND fingerprint = $2) AS seen"#,
        user_id,
        fingerprint,
        now
    )
    .fetch_one(connection)
    .await?;
    Ok(known_elsewhere && previous.is_none_or(|seen| now - seen > DEVICE_MEMORY))
}

pub async fn revoke(
    connection: &mut PgConnection,
    session_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    sqlx::query!(
        "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        session_id,
        now
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Revokes every live session of the user except `keep` (none: all of them).
pub async fn revoke_all_of_user(
    connection: &mut PgConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    sqlx::query!(
        r#"UPDATE sessions SET revoked_at = $3
           WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2"#,
        user_id,
        keep,
        now
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The session of the request's bearer token and its user, whatever the user's status.
pub struct CurrentSession {
    pub session_id: Uuid,
    pub user: Profile,
}

/// A logged-in user whose account is not frozen (40301 otherwise).
pub struct ActiveUser(pub CurrentSession);

impl FromRequest for CurrentSession {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let context = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req);
        Box::pin(async move {
            let context =
                context.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no context")))?;
            let token = token.ok_or(AuthError::SessionInvalid)?;
            Ok(load(&context, &token).await?)
        })
    }
}

impl FromRequest for ActiveUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = CurrentSession::from_request(req, payload);
        Box::pin(async move {
            let session = session.await?;
            if session.user.is_frozen() {
                return Err(AuthError::AccountFrozen.into());
            }
            Ok(ActiveUser(session))
        })
    }
}

/// A logged-in, active user with the `admin` role: the guard of every `/myapi/admin` route
/// (403 with the global code for anyone else).
pub struct AdminUser(pub Profile);

impl FromRequest for AdminUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = ActiveUser::from_request(req, payload);
        Box::pin(async move {
            let ActiveUser(session) = user.await?;
            if session.user.role != Role::Admin {
                return Err(ApiError::new(Code::FORBIDDEN).with_detail("Admins only."));
            }
            Ok(AdminUser(session.user))
        })
    }
}

/// `Authorization: Bearer <token>`.
pub fn bearer_token(req: &HttpRequest) -> Option<String> {
    bearer_in(req.headers().get(AUTHORIZATION)?.as_bytes())
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer_in(value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

async fn load(context: &AppState, token: &str) -> Result<CurrentSession, AuthError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Err(AuthError::SessionInvalid);
    }
    let row = sqlx::query!(
        r#"SELECT s.id AS session_id, s.expires_at, s.revoked_at, s.last_seen_at,
                  u.id AS "user_id?", u.email AS "email?", u.role AS "role?: Role",
                  u.status AS "status?: UserStatus", u.created_at AS "created_at?",
                  u.lang AS "lang?", u.low_balance_alert
           FROM sessions s LEFT JOIN users u ON u.id = s.user_id
           WHERE s.token_hash = $1"#,
        token::digest(token)
    )
    .fetch_optional(&context.pool)
    .await?
    .ok_or(AuthError::SessionInvalid)?;
    if row.revoked_at.is_some() || row.expires_at <= context.clock.now() {
        return Err(AuthError::SessionInvalid);
    }
    let (Some(id), Some(email), Some(role), Some(status), Some(created_at), Some(lang)) = (
        row.user_id,
        row.email,
        row.role,
        row.status,
        row.created_at,
        row.lang,
    ) else {
        return Err(AuthError::UserNotFound);
    };
    let now = context.clock.now();
    if row
        .last_seen_at
        .is_none_or(|seen| now - seen > LAST_SEEN_EVERY)
    {
        let touched = sqlx::query!(
            "UPDATE sessions SET last_seen_at = $2 WHERE id = $1",
            row.session_id,
            now
        )
        .execute(&context.pool)
        .await;
        if let Err(error) = touched {
            tracing::warn!(%error, "a session's last_seen_at was not written");
        }
    }
    Ok(CurrentSession {
        session_id: row.session_id,
        user: Profile {
            id,
            email,
            role,
            status,
            created_at,
            lang,
            low_balance_alert: row.low_balance_alert,
        },
    })
}
