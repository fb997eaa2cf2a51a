//! Login: the same answer and the same work for an unknown address and a wrong password; a
//! captcha after three failures for an address or an IP within 15 minutes.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::captcha;
use super::error::AuthError;
use super::password::ClientPasswords;
use super::register::LoggedIn;
use super::session;
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

pub async fn login(
    context: &AppState,
    passwords: &ClientPasswords<'_>,
    attempt: LoginAttempt<'_>,
) -> Result<LoggedIn, AuthError> {
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
    // A login that succeeds clears the address's failures and its own attempt.
    sqlx::query!(
        "DELETE FROM login_failures WHERE subject = $1 OR id = ANY($2)",
        subjects[0],
        &recorded
    )
    .execute(&mut *transaction)
    .await?;
    let session = session::create(
        &mut transaction,
        account.profile.id,
        now,
        context.settings.auth.session_ttl,
        attempt.client,
    )
    .await?;
    if session::remember_device(&mut transaction, account.profile.id, attempt.client, now).await? {
        let alert = Email::NewSignIn {
            ip: attempt
                .client
                .ip
                .clone()
                .unwrap_or_else(|| String::from("-")),
            user_agent: attempt.client.user_agent.clone().unwrap_or_default(),
            at: now.format("%Y-%m-%d %H:%M UTC").to_string(),
        };
        let lang = Lang::parse(&account.profile.lang).unwrap_or_default();
        outbox::enqueue(&mut transaction, &account.profile.email, lang, &alert).await?;
    }
    transaction.commit().await?;
    Ok(LoggedIn::new(session, account.profile))
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
