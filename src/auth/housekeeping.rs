//! Housekeeping: what the account flows leave behind and no longer need (expired or ended
//! sessions, captchas, email codes, reset tokens, cooldowns, login failures out of their window,
//! devices unused for 90 days)
//! is removed in small batches, so the tables stay the size of what is live and no purge holds
//! long locks. Each round logs how many rows it removed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::clock::Clock;
use crate::config::Settings;

/// Rows removed by one statement; a round repeats it until less than this is left.
const BATCH: i64 = 1000;
/// Ended sessions and used reset links are kept this long after they ended, then removed.
const KEEP_ENDED: chrono::Duration = chrono::Duration::days(1);

/// How many rows of each kind one round removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub sessions: u64,
    pub captchas: u64,
    pub email_codes: u64,
    pub reset_tokens: u64,
    pub cooldowns: u64,
    pub login_failures: u64,
    pub known_devices: u64,
}

/// Runs a round every `HOUSEKEEPING_INTERVAL_SECS` until the service stops.
pub async fn run(pool: PgPool, clock: Arc<Clock>, settings: Arc<Settings>) {
    let mut every = tokio::time::interval(settings.auth.housekeeping_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match purge(&pool, clock.now(), &settings).await {
            Ok(purged) if purged != Purged::default() => {
                tracing::info!(?purged, "housekeeping removed what had expired");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "housekeeping failed; retrying later"),
        }
    }
}

/// One round at `now`.
pub async fn purge(
    pool: &PgPool,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<Purged, sqlx::Error> {
    let ended = now - KEEP_ENDED;
    let failures_since = now - chrono::Duration::minutes(super::login::FAILURE_WINDOW_MINUTES);
    let cooled =
        now - chrono::Duration::from_std(settings.auth.email_code_cooldown).unwrap_or_default();
    Ok(Purged {
        sessions: batched(|| async {
            sqlx::query!(
                r#"DELETE FROM sessions WHERE id IN (
                       SELECT id FROM sessions WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2)"#,
                ended,
                BATCH
            )
            .execute(pool)
            .await
        })
        .await?,
        captchas: batched(|| async {
            sqlx::query!(
                r#"DELETE FROM captchas WHERE id IN (
                       SELECT id FROM captchas WHERE expires_at < $1 LIMIT $2)"#,
                now,
                BATCH
            )
            .execute(pool)
            .await
        })
        .await?,
        email_codes: batched(|| async {
            sqlx::query!(
                r#"DELETE FROM email_codes WHERE email IN (
                       SELECT email FROM email_codes WHERE expires_at < $1 LIMIT $2)"#,
                now,
                BATCH
            )
            .execute(pool)
            .await
        })
        .await?,
        reset_tokens: batched(|| async {
            sqlx::query!(
                r#"DELETE FROM password_reset_tokens WHERE token_hash IN (
                       SELECT token_hash FROM password_reset_tokens
                       WHERE expires_at < $1 OR used_at < $1 LIMIT $2)"#,
                ended,
                BATCH
            )
            .execute(pool)
            .await
        })
        .await?,
        cooldowns: batched(|| async {
            sqlx::query!(
                r#"DELETE FROM mail_cooldowns WHERE (email, purpose) IN (
                       SELECT email, purpose FROM mail_cooldowns WHERE sent_at < $1 LIMIT $2)"#,
                cooled,
                BATCH
            )
            .execute(pool)
            .await
        })
        .await?,
        login_failures: batched(|| async {
            sqlx::query!(
                r#"DELETE FROM login_failures WHERE id IN (
                       SELECT id FROM login_failures WHERE failed_at <= $1 LIMIT $2)"#,
                failures_since,
                BATCH
            )
            .execute(pool)
            .await
        })
        .await?,
        // A device unused for 90 days is a new one again: its row serves nothing.
        known_devices: batched(|| async {
            sqlx::query!(
                r#"DELETE FROM known_devices WHERE (user_id, fingerprint) IN (
                       SELECT user_id, fingerprint FROM known_devices
                       WHERE last_seen_at <= $1 LIMIT $2)"#,
                now - chrono::Duration::days(90),
                BATCH
            )
            .execute(pool)
            .await
        })
        .await?,
    })
}

/// Repeats a batch until it removes less than a full batch; the total removed.
async fn batched<F, Fut>(mut batch: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<sqlx::postgres::PgQueryResult, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let removed = batch().await?.rows_affected();
        total += removed;
        if removed < BATCH as u64 {
            return Ok(total);
        }
        // Let other work in between batches.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
