//! Login: the same answer and the same work for an unknown address and a wrong password; a
//! captcha after three failures for an address or an IP within 15 minutes.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::captcha;
use super::error::AuthError;
use super::password::ClientPasswords;
use super::register::LoggedIn;
use super::session;
use super::two_factor;
use super::users;
use crate::api::Lang;
use crate::mail::{Email, outbox};
use crate::state::AppState;

pub const FAILURE_WINDOW_MINUTES: i64 = 15;
pub const FAILURES_BEFORE_CAPTCHA: i64 = 3;

pub struct LoginAttempt<'a> {
    pub email: &'a str,
    pub password: &'a SecretString,
    pub captcha_id: Option<&'a str>,
    pub captcha: Option<&'a str>,
    pub ip: &'a str,
    /// Where the session is opened from.
    pub client: &'a session::Client,
}

/// How long the ticket of a login's second step lives.
pub const TICKET_TTL_SECS: i64 = 300;

/// What a login answers: a session, or for an account with two-factor sign-in a ticket for the
/// second step.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginAnswer {
    LoggedIn(LoggedIn),
    SecondStep(SecondStep),
}

#[derive(Serialize, ToSchema)]
pub struct SecondStep {
    /// Always true: send `ticket` and a code to `/myapi/auth/login/2fa`.
    pub mfa_required: bool,
    pub ticket: String,
    /// Seconds the ticket lives.
    pub expires_in: i64,
}

pub async fn login(
    context: &AppState,
    passwords: &ClientPasswords<'_>,
    attempt: LoginAttempt<'_>,
) -> Result<LoginAnswer, AuthError> {
    let now = context.clock.now();
    let subjects = failure_subjects(attempt.email, attempt.ip);
    // The attempt is recorded as a failure before anything is judged, and the captcha rule
    // counts the attempts recorded before it: concurrent wrong logins cannot all read "fewer
    // than three" before any of them is written.
    let recorded = record_attempt(&context.pool, &subjects, now).await?;
    if captcha_required(&context.pool, &subjects, now, &recorded).await? {
        captcha::consume(&context.pool, now, attempt.captcha_id, attempt.captcha).await?;
    }

    let account = users::find_by_email(&context.pool, attempt.email).await?;
    let stored = account
        .as_ref()
        .map(|account| account.password_hash.as_str());
    let verified = passwords.verify(attempt.password, stored).await?;
    let Some(account) = account.filter(|_| verified.matches) else {
        return Err(AuthError::InvalidCredentials);
    };
    if account.profile.is_frozen() {
        forget_attempt(&context.pool, &recorded).await?;
        return Err(AuthError::AccountFrozen);
    }

    let rehash = if verified.outdated {
        Some(passwords.hash(attempt.password).await?)
    } else {
        None
    };
    let mut transaction = context.pool.begin().await?;
    if let Some(hash) = rehash {
        users::set_password_hash(&mut transaction, account.profile.id, &hash).await?;
    }
    if two_factor::enabled(&mut transaction, account.profile.id).await? {
        // The password was right: not a failure. The second step counts its own attempts.
        sqlx::query!("DELETE FROM login_failures WHERE id = ANY($1)", &recorded)
            .execute(&mut *transaction)
            .await?;
        let (ticket, digest) = two_factor::new_ticket();
        sqlx::query!(
            r#"INSERT INTO login_tickets (ticket_hash, user_id, expires_at, ip, user_agent)
               VALUES ($1, $2, $3, $4, $5)"#,
            digest,
            account.profile.id,
            now + chrono::Duration::seconds(TICKET_TTL_SECS),
            attempt.client.ip,
            attempt.client.user_agent
        )
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        return Ok(LoginAnswer::SecondStep(SecondStep {
            mfa_required: true,
            ticket,
            expires_in: TICKET_TTL_SECS,
        }));
    }
    let session = open_session(
        &mut transaction,
        context,
        &account.profile,
        attempt.client,
        &subjects,
        &recorded,
    )
    .await?;
    transaction.commit().await?;
    Ok(LoginAnswer::LoggedIn(LoggedIn::new(
        session,
        account.profile,
    )))
}

/// The second step of an enrolled account's login: the ticket and a TOTP or recovery code,
/// counted and captcha-guarded like passwords.
pub struct SecondStepAttempt<'a> {
    pub ticket: &'a str,
    pub code: &'a str,
    pub captcha_id: Option<&'a str>,
    pub captcha: Option<&'a str>,
    pub ip: &'a str,
    pub client: &'a session::Client,
}

pub async fn second_step(
    context: &AppState,
    attempt: SecondStepAttempt<'_>,
) -> Result<LoggedIn, AuthError> {
    let now = context.clock.now();
    let digest = two_factor::ticket_digest(attempt.ticket);
    let user_id = sqlx::query_scalar!(
        "SELECT user_id FROM login_tickets WHERE ticket_hash = $1 AND expires_at > $2",
        digest,
        now
    )
    .fetch_optional(&context.pool)
    .await?
    .ok_or(AuthError::SecondFactorInvalid)?;
    let profile = users::find(&context.pool, user_id)
        .await?
        .ok_or(AuthError::SecondFactorInvalid)?;
    let subjects = failure_subjects(&profile.email, attempt.ip);
    let recorded = record_attempt(&context.pool, &subjects, now).await?;
    if captcha_required(&context.pool, &subjects, now, &recorded).await? {
        captcha::consume(&context.pool, now, attempt.captcha_id, attempt.captcha).await?;
    }
    if profile.is_frozen() {
        forget_attempt(&context.pool, &recorded).await?;
        return Err(AuthError::AccountFrozen);
    }
    let mut transaction = context.pool.begin().await?;
    let now_secs = u64::try_from(now.timestamp()).unwrap_or(0);
    if !two_factor::check_code(&mut transaction, user_id, attempt.code, now_secs).await? {
        return Err(AuthError::SecondFactorInvalid);
    }
    // The ticket is used once.
    let taken = sqlx::query!("DELETE FROM login_tickets WHERE ticket_hash = $1", digest)
        .execute(&mut *transaction)
        .await?;
    if taken.rows_affected() != 1 {
        return Err(AuthError::SecondFactorInvalid);
    }
    let session = open_session(
        &mut transaction,
        context,
        &profile,
        attempt.client,
        &subjects,
        &recorded,
    )
    .await?;
    transaction.commit().await?;
    Ok(LoggedIn::new(session, profile))
}

/// A successful sign-in: the address's failures and this attempt's are cleared, the session
/// opened, and a device not seen for 90 days announced to the owner.
async fn open_session(
    transaction: &mut sqlx::PgConnection,
    context: &AppState,
    profile: &users::Profile,
    client: &session::Client,
    subjects: &[String; 2],
    recorded: &[i64],
) -> Result<session::NewSession, AuthError> {
    let now = context.clock.now();
    sqlx::query!(
        "DELETE FROM login_failures WHERE subject = $1 OR id = ANY($2)",
        subjects[0],
        recorded
    )
    .execute(&mut *transaction)
    .await?;
    let session = session::create(
        &mut *transaction,
        profile.id,
        now,
        context.settings.auth.session_ttl,
        client,
    )
    .await?;
    if session::remember_device(&mut *transaction, profile.id, client, now).await? {
        let alert = Email::NewSignIn {
            ip: client.ip.clone().unwrap_or_else(|| String::from("-")),
            user_agent: client.user_agent.clone().unwrap_or_default(),
            at: now.format("%Y-%m-%d %H:%M UTC").to_string(),
        };
        let lang = Lang::parse(&profile.lang).unwrap_or_default();
        outbox::enqueue(transaction, &profile.email, lang, &alert).await?;
    }
    Ok(session)
}

/// The address is kept as a digest: the failure log holds no email.
fn failure_subjects(email: &str, ip: &str) -> [String; 2] {
    let digest = hex::encode(&Sha256::digest(email.as_bytes())[..16]);
    [format!("email:{digest}"), format!("ip:{ip}")]
}

/// Whether the other attempts recorded for the address or the IP within the window (every one
/// written before this count, whatever order they started in) reach the number that asks for a
/// captcha. Of any four concurrent attempts, the last to be written sees the other three.
async fn captcha_required(
    pool: &PgPool,
    subjects: &[String; 2],
    now: DateTime<Utc>,
    own: &[i64],
) -> Result<bool, AuthError> {
    let since = now - chrono::Duration::minutes(FAILURE_WINDOW_MINUTES);
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE subject = $1) AS "by_email!",
                  count(*) FILTER (WHERE subject = $2) AS "by_ip!"
           FROM login_failures
           WHERE subject IN ($1, $2) AND failed_at > $3 AND id <> ALL($4)"#,
        subjects[0],
        subjects[1],
        since,
        own
    )
    .fetch_one(pool)
    .await?;
    Ok(counts.by_email >= FAILURES_BEFORE_CAPTCHA || counts.by_ip >= FAILURES_BEFORE_CAPTCHA)
}

/// Records an attempt for the address and the IP (pruning what left the window) and returns
/// the rows it wrote; they stay as failures unless the login succeeds.
async fn record_attempt(
    pool: &PgPool,
    subjects: &[String; 2],
    now: DateTime<Utc>,
) -> Result<Vec<i64>, AuthError> {
    let since = now - chrono::Duration::minutes(FAILURE_WINDOW_MINUTES);
    let ids = sqlx::query_scalar!(
        r#"WITH pruned AS (DELETE FROM login_failures WHERE subject IN ($1, $2) AND failed_at <= $4)
           INSERT INTO login_failures (subject, failed_at) VALUES ($1, $3), ($2, $3)
           RETURNING id"#,
        subjects[0],
        subjects[1],
        now,
        since
    )
    .fetch_all(pool)
    .await?;
    Ok(ids)
}

async fn forget_attempt(pool: &PgPool, recorded: &[i64]) -> Result<(), AuthError> {
    sqlx::query!("DELETE FROM login_failures WHERE id = ANY($1)", recorded)
        .execute(pool)
        .await?;
    Ok(())
}
