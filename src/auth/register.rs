//! Registration: a 6-digit code emailed to the address, then the account, its first session and
//! the consumed code in one transaction.

use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::cooldown::{self, Purpose};
use super::error::AuthError;
use super::password::ClientPasswords;
use super::session::{self, NewSession};
use super::users::{self, Profile, Role};
use crate::api::Lang;
use crate::limits::Rate;
use crate::mail::Email;
use crate::state::AppState;

pub const CODE_TTL_MINUTES: i64 = 10;
pub const MAX_CODE_ATTEMPTS: i32 = 5;

#[derive(Serialize, ToSchema)]
pub struct CodeSent {
    /// Seconds the code stays valid.
    pub expires_in: i64,
    /// Seconds before another code can be sent to the address.
    pub cooldown: u64,
}

/// The answer of register and login.
#[derive(Serialize, ToSchema)]
pub struct LoggedIn {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: Profile,
}

impl LoggedIn {
    pub fn new(session: NewSession, user: Profile) -> LoggedIn {
        LoggedIn {
            token: session.token.expose_secret().to_owned(),
            expires_at: session.expires_at,
            user,
        }
    }
}

/// The code's digest, bound to the address so a digest is worthless for any other.
fn code_digest(email: &str, code: &str) -> Vec<u8> {
    Sha256::digest(format!("{email}:{code}").as_bytes()).to_vec()
}

/// Sends a registration code to `email` (already normalized, captcha already passed).
pub async fn send_code(context: &AppState, email: &str, lang: Lang) -> Result<CodeSent, AuthError> {
    if users::email_taken(&context.pool, email).await? {
        return Err(AuthError::EmailExists);
    }
    let now = context.clock.now();
    let cooldown = context.settings.auth.email_code_cooldown;
    let slot = cooldown::take(&context.pool, email, Purpose::EmailCode, now, cooldown).await?;

    let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
    let digest = code_digest(email, &code);
    sqlx::query!(
        r#"INSERT INTO email_codes (email, code_hash, attempts, expires_at, created_at)
           VALUES ($1, $2, 0, $3, $4)
           ON CONFLICT (email) DO UPDATE
           SET code_hash = EXCLUDED.code_hash, attempts = 0,
               expires_at = EXCLUDED.expires_at, created_at = EXCLUDED.created_at"#,
        email,
        digest,
        now + chrono::Duration::minutes(CODE_TTL_MINUTES),
        now
    )
    .execute(&context.pool)
    .await?;

    let sent = context
        .mailer
        .send(
            email,
            Email::Code {
                code,
                minutes: CODE_TTL_MINUTES,
            },
            lang,
        )
        .await;
    if let Err(error) = sent {
        // Nothing of the failed attempt may stand in the way of a retry.
        sqlx::query!(
            "DELETE FROM email_codes WHERE email = $1 AND code_hash = $2",
            email,
            digest
        )
        .execute(&context.pool)
        .await?;
        slot.release(&context.pool).await?;
        return Err(error.into());
    }
    Ok(CodeSent {
        expires_in: CODE_TTL_MINUTES * 60,
        cooldown: cooldown.as_secs(),
    })
}

/// Judges `code` against the live code of `email` (every try counted first: at most five per
/// code, and a daily cap per address across re-sends); answers the code's digest, which the
/// caller deletes in its own transaction so the code is used once.
pub async fn check_code(
    context: &AppState,
    email: &str,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Vec<u8>, AuthError> {
    // Wrong codes are also counted per address and day across re-sends (each new code starts
    // its own five tries), so nobody can guess an address's codes for long; the key is a digest,
    // so the limiter's store holds no address.
    let guesses = Rate::per_day(context.settings.auth.code_guesses_per_address_per_day);
    let address = hex::encode(&Sha256::digest(email.as_bytes())[..16]);
    let allowed = context
        .limiter
        .would_allow("code_guess", &address, guesses)
        .await;
    if !allowed.allowed {
        return Err(AuthError::TooManyRequests {
            retry_after_secs: allowed.retry_after_secs(),
        });
    }
    // Every try is counted before it is judged, so at most five guesses are ever compared.
    let live = sqlx::query!(
        r#"UPDATE email_codes SET attempts = attempts + 1
           WHERE email = $1 AND expires_at > $2 AND attempts < $3
           RETURNING code_hash"#,
        email,
        now,
        MAX_CODE_ATTEMPTS
    )
    .fetch_optional(&context.pool)
    .await?
    .ok_or(AuthError::EmailCodeInvalid)?;
    let digest = code_digest(email, code.trim());
    if !bool::from(live.code_hash.ct_eq(&digest)) {
        context.limiter.check("code_guess", &address, guesses).await;
        return Err(AuthError::EmailCodeInvalid);
    }
    Ok(digest)
}

/// Uses up the code `check_code` accepted, in the caller's transaction: whoever deletes it first
/// wins, a racing twin finds nothing to delete (40004).
pub async fn consume_code(
    connection: &mut sqlx::PgConnection,
    email: &str,
    digest: &[u8],
) -> Result<(), AuthError> {
    let consumed = sqlx::query!(
        "DELETE FROM email_codes WHERE email = $1 AND code_hash = $2",
        email,
        digest
    )
    .execute(connection)
    .await?;
    if consumed.rows_affected() != 1 {
        return Err(AuthError::EmailCodeInvalid);
    }
    Ok(())
}

/// Creates the account when `code` is the live code of `email`.
pub async fn register(
    context: &AppState,
    passwords: &ClientPasswords<'_>,
    email: &str,
    password: &SecretString,
    code: &str,
    client: &session::Client,
) -> Result<LoggedIn, AuthError> {
    let now = context.clock.now();
    let digest = check_code(context, email, code, now).await?;

    // Hashed before the transaction, so no row lock or connection waits on Argon2.
    let password_hash = passwords.hash(password).await?;
    let role = if context
        .settings
        .admin_emails
        .iter()
        .any(|admin| admin == email)
    {
        Role::Admin
    } else {
        Role::User
    };

    let mut transaction = context.pool.begin().await?;
    // Whoever uses the code first registers.
    consume_code(&mut transaction, email, &digest).await?;
    let user = users::insert(&mut transaction, email, &password_hash, role).await?;
    let session = session::create(
        &mut transaction,
        user.id,
        now,
        context.settings.auth.session_ttl,
        client,
    )
    .await?;
    session::remember_device(&mut transaction, user.id, client, now).await?;
    transaction.commit().await?;
    Ok(LoggedIn::new(session, user))
}
