//! Two-factor sign-in with TOTP (RFC 6238, totp-rs): enrolment (a secret, its `otpauth://` URI
//! and QR code, confirmed by a first code, which also yields ten single-use recovery codes),
//! the code check every second step uses (a TOTP code is accepted once: its time step must be
//! later than the last accepted), and disabling with password and code.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use rand::RngCore;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::AuthError;
use super::password::Passwords;
use super::reauth::confirm_password;
use super::session::ActiveUser;
use crate::api::{ApiError, ApiJson, Authorized, ErrorBody, SuccessBody, ok};
use crate::state::AppState;

const ISSUER: &str = "meterapi";
const RECOVERY_CODES: usize = 10;
/// Recovery codes: ten characters of an alphabet without look-alikes, shown as XXXXX-XXXXX.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

fn totp(secret: Vec<u8>, account: &str) -> Result<totp_rs::Totp, AuthError> {
    totp_rs::Builder::new()
        .with_secret(secret)
        .with_account_name(account.replace(':', ""))
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|error| AuthError::Internal(anyhow::anyhow!("TOTP: {error}")))
}

fn recovery_digest(code: &str) -> Vec<u8> {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Sha256::digest(normal.as_bytes()).to_vec()
}

fn new_recovery_code() -> String {
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    let chars: String = bytes
        .iter()
        .map(|byte| ALPHABET[usize::from(*byte) % ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

/// Whether the account has two-factor sign-in enabled.
pub async fn enabled(connection: &mut PgConnection, user_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT totp_secret IS NOT NULL AS "enabled!" FROM users WHERE id = $1"#,
        user_id
    )
    .fetch_optional(connection)
    .await
    .map(|enabled| enabled.unwrap_or(false))
}

/// Checks a second-factor `code` of an enrolled account: a TOTP code of the current time step
/// or the one beside it, later than the last one accepted (and then remembered), or an unused
/// recovery code (then used up). Locks the user's row, so two requests cannot both use a code.
pub async fn check_code(
    connection: &mut PgConnection,
    user_id: Uuid,
    code: &str,
    now_secs: u64,
) -> Result<bool, AuthError> {
    let row = sqlx::query!(
        "SELECT email, totp_secret, totp_last_step FROM users WHERE id = $1 FOR UPDATE",
        user_id
    )
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let Some(secret) = row.totp_secret else {
        return Ok(false);
    };
    let code = code.trim();
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        let step = totp(secret, &row.email)?.check(code, now_secs);
        let fresh = step
            .and_then(|step| i64::try_from(step).ok())
            .filter(|step| row.totp_last_step.is_none_or(|last| *step > last));
        if let Some(step) = fresh {
            sqlx::query!(
                "UPDATE users SET totp_last_step = $2 WHERE id = $1",
                user_id,
                step
            )
            .execute(connection)
            .await?;
            return Ok(true);
        }
        return Ok(false);
    }
    let used = sqlx::query!(
        r#"UPDATE recovery_codes SET used_at = now()
           WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL"#,
        user_id,
        recovery_digest(code)
    )
    .execute(connection)
    .await?;
    Ok(used.rows_affected() == 1)
}

#[derive(Serialize, ToSchema)]
pub struct Enrolment {
    /// The secret in base32, for typing into an authenticator.
    pub secret: String,
    pub otpauth_uri: String,
    /// The URI as a QR code: a PNG data URL.
    pub qr: String,
}

/// Starts enrolment: a new secret (kept aside until a first code confirms it).
#[utoipa::path(post, path = "/myapi/auth/2fa/setup", tag = "auth", security(("session" = [])),
    responses((status = 200, body = inline(SuccessBody<Enrolment>)),
    (status = 400, description = "Two-factor sign-in is already enabled.", body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn setup(
    context: web::Data<AppState>,
    ActiveUser(session): ActiveUser,
) -> Result<HttpResponse, ApiError> {
    let mut connection = context.pool.acquire().await?;
    if enabled(&mut connection, session.user.id).await? {
        return Err(ApiError::bad_request(
            "Two-factor sign-in is already enabled.",
        ));
    }
    let mut secret = vec![0u8; 20];
    rand::rng().fill_bytes(&mut secret);
    let totp = totp(secret.clone(), &session.user.email)?;
    let uri = totp
        .to_url()
        .map_err(|error| AuthError::Internal(anyhow::anyhow!("otpauth URI: {error}")))?;
    let qr = totp
        .to_qr_base64()
        .map_err(|error| AuthError::Internal(anyhow::anyhow!("QR code: {error}")))?;
    sqlx::query!(
        "UPDATE users SET totp_pending_secret = $2 WHERE id = $1",
        session.user.id,
        secret
    )
    .execute(&mut *connection)
    .await?;
    Ok(ok(Enrolment {
        secret: totp.secret().to_base32(),
        otpauth_uri: uri,
        qr: format!("data:image/png;base64,{qr}"),
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct CodeRequest {
    /// A code of the authenticator.
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes for when the authenticator is lost: shown this once.
    pub recovery_codes: Vec<String>,
}

/// Confirms enrolment with a first code; answers the recovery codes, shown this once.
#[utoipa::path(post, path = "/myapi/auth/2fa/enable", tag = "auth", request_body = CodeRequest,
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<RecoveryCodes>)),
    (status = 400, description = "No enrolment started, or 40009 a wrong code.", body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn enable(
    context: web::Data<AppState>,
    Authorized(ActiveUser(session), ApiJson(body)): Authorized<ActiveUser, ApiJson<CodeRequest>>,
) -> Result<HttpResponse, ApiError> {
    let user_id = session.user.id;
    let mut transaction = context.pool.begin().await?;
    let pending = sqlx::query_scalar!(
        "SELECT totp_pending_secret FROM users WHERE id = $1 FOR UPDATE",
        user_id
    )
    .fetch_one(&mut *transaction)
    .await?;
    let Some(secret) = pending else {
        return Err(ApiError::bad_request(
            "Start with /myapi/auth/2fa/setup: no enrolment is waiting.",
        ));
    };
    let now = u64::try_from(context.clock.now().timestamp()).unwrap_or(0);
    let step = totp(secret.clone(), &session.user.email)?
        .check(body.code.trim(), now)
        .and_then(|step| i64::try_from(step).ok())
        .ok_or(AuthError::SecondFactorInvalid)?;
    sqlx::query!(
        r#"UPDATE users SET totp_secret = totp_pending_secret, totp_pending_secret = NULL,
                  totp_last_step = $2
           WHERE id = $1"#,
        user_id,
        step
    )
    .execute(&mut *transaction)
    .await?;
    sqlx::query!("DELETE FROM recovery_codes WHERE user_id = $1", user_id)
        .execute(&mut *transaction)
        .await?;
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let digests: Vec<Vec<u8>> = codes.iter().map(|code| recovery_digest(code)).collect();
    sqlx::query!(
        r#"INSERT INTO recovery_codes (user_id, code_hash)
           SELECT $1, code_hash FROM unnest($2::bytea[]) AS code_hash"#,
        user_id,
        &digests
    )
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    tracing::info!(%user_id, "two-factor sign-in enabled");
    Ok(ok(RecoveryCodes {
        recovery_codes: codes,
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct DisableRequest {
    #[schema(value_type = String)]
    pub password: SecretString,
    /// A code of the authenticator, or a recovery code.
    pub code: String,
}

/// Disables two-factor sign-in, with the password and a code.
#[utoipa::path(post, path = "/myapi/auth/2fa/disable", tag = "auth",
    request_body = DisableRequest, security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 400, description = "40009 a wrong code, or two-factor sign-in is not enabled.",
        body = ErrorBody),
    (status = 401, description = "40101 no valid session; 40111 a wrong password.",
        body = ErrorBody),
    (status = 429, description = "Too many wrong passwords.", body = ErrorBody)))]
pub async fn disable(
    context: web::Data<AppState>,
    passwords: web::Data<Passwords>,
    req: HttpRequest,
    Authorized(ActiveUser(session), ApiJson(body)): Authorized<ActiveUser, ApiJson<DisableRequest>>,
) -> Result<HttpResponse, ApiError> {
    confirm_password(&context, &passwords, &req, &session, &body.password).await?;
    let user_id = session.user.id;
    let mut transaction = context.pool.begin().await?;
    let now = u64::try_from(context.clock.now().timestamp()).unwrap_or(0);
    if !check_code(&mut transaction, user_id, &body.code, now).await? {
        return Err(AuthError::SecondFactorInvalid.into());
    }
    sqlx::query!(
        r#"UPDATE users SET totp_secret = NULL, totp_pending_secret = NULL, totp_last_step = NULL
           WHERE id = $1"#,
        user_id
    )
    .execute(&mut *transaction)
    .await?;
    sqlx::query!("DELETE FROM recovery_codes WHERE user_id = $1", user_id)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    tracing::info!(%user_id, "two-factor sign-in disabled");
    Ok(ok(()))
}

/// A login ticket: `mt_` and 256 random bits; only its digest is stored.
pub fn new_ticket() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let ticket = format!(
        "mt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let digest = Sha256::digest(ticket.as_bytes()).to_vec();
    (ticket, digest)
}

pub fn ticket_digest(ticket: &str) -> Vec<u8> {
    Sha256::digest(ticket.as_bytes()).to_vec()
}
