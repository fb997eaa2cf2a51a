//! Login: the same answer and the same work for an unknown address and a wrong password; a
//! captcha after three failures for an address or an IP within 15 minutes.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::captcha;
use super::error::AuthError;
use super::password::Passwords;
use super::register::LoggedIn;
use super::session;
use super::users;
use crate::state::AppState;

pub const FAILURE_WINDOW_MINUTES: i64 = 15;
pub const FAILURES_BEFORE_CAPTCHA: i64 = 3;

pub struct LoginAttempt<'a> {
    pub email: &'a str,
    pub password: &'a SecretString,
    pub captcha_id: Option<&'a str>,
    pub captcha: Option<&'a str>,
    pub ip: &'a str,
}

pub async fn login(
    context: &AppState,
    passwords: &Passwords,
    attempt: LoginAttempt<'_>,
) -> Result<LoggedIn, AuthError> {
    let now = context.clock.now();
    let subjects = failure_subjects(attempt.email, attempt.ip);
    if captcha_required(&context.pool, &subjects, now).await? {
        captcha::consume(&context.pool, now, attempt.captcha_id, attempt.captcha).await?;
    }

    let account = users::find_by_email(&context.pool, attempt.email).await?;
    let stored = account
        .as_ref()
        .map(|account| account.password_hash.as_str());
    let verified = passwords.verify(attempt.password, stored).await?;
    let Some(account) = account.filter(|_| verified.matches) else {
        record_failure(&context.pool, &subjects, now).await?;
        return Err(AuthError::InvalidCredentials);
    };
    if account.profile.is_frozen() {
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
    sqlx::query!("DELETE FROM login_failures WHERE subject = $1", subjects[0])
        .execute(&mut *transaction)
        .await?;
    let session = session::create(
        &mut transaction,
        account.profile.id,
        now,
        context.settings.auth.session_ttl,
    )
    .await?;
    transaction.commit().await?;
    Ok(LoggedIn::new(session, account.profile))
}

/// The address is kept as a digest: the failure log holds no email.
fn failure_subjects(email: &str, ip: &str) -> [String; 2] {
    let digest = hex::encode(&Sha256::digest(email.as_bytes())[..16]);
    [format!("email:{digest}"), format!("ip:{ip}")]
}

async fn captcha_required(
    pool: &PgPool,
    subjects: &[String; 2],
    now: DateTime<Utc>,
) -> Result<bool, AuthError> {
    let since = now - chrono::Duration::minutes(FAILURE_WINDOW_MINUTES);
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE subject = $1) AS "by_email!",
                  count(*) FILTER (WHERE subject = $2) AS "by_ip!"
           FROM login_failures WHERE subject IN ($1, $2) AND failed_at > $3"#,
        subjects[0],
        subjects[1],
        since
    )
    .fetch_one(pool)
    .await?;
    Ok(counts.by_email >= FAILURES_BEFORE_CAPTCHA || counts.by_ip >= FAILURES_BEFORE_CAPTCHA)
}

async fn record_failure(
    pool: &PgPool,
    subjects: &[String; 2],
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    let since = now - chrono::Duration::minutes(FAILURE_WINDOW_MINUTES);
    sqlx::query!(
        r#"WITH pruned AS (DELETE FROM login_failures WHERE subject IN ($1, $2) AND failed_at <= $4)
           INSERT INTO login_failures (subject, failed_at) VALUES ($1, $3), ($2, $3)"#,
        subjects[0],
        subjects[1],
        now,
        since
    )
    .execute(pool)
    .await?;
    Ok(())
}
