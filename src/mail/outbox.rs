//! The outbox: an email that reports a change (a payment, a failed renewal) is written in the
//! transaction that makes the change and sent after it commits, so it is never sent for a change
//! that rolled back nor lost when the mail server is down. A sender hands the due rows to the
//! mail server and deletes each one sent (with its address); a failure is retried later, with a
//! delay that doubles up to an hour, and given up (logged) after `MAX_ATTEMPTS`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::{Email, Mailer};
use crate::api::Lang;
use crate::clock::Clock;
use crate::telemetry::mask_email;

/// How often the sender looks for due emails.
const POLL: Duration = Duration::from_millis(500);
/// Emails one round sends at most.
const BATCH: i64 = 50;
const MAX_ATTEMPTS: i32 = 10;

/// Writes `email` to `recipient` into the outbox of the transaction `connection` runs.
pub async fn enqueue(
    connection: &mut PgConnection,
    recipient: &str,
    lang: Lang,
    email: &Email,
) -> Result<(), sqlx::Error> {
    let lang = match lang {
        Lang::En => "en",
        Lang::Zh => "zh",
    };
    let email = serde_json::to_value(email).expect("an email serialises");
    sqlx::query!(
        "INSERT INTO mail_outbox (recipient, lang, email) VALUES ($1, $2, $3)",
        recipient,
        lang,
        email
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Drops what is still queued for `recipient` (an erased account's address).
pub async fn discard_for(
    connection: &mut PgConnection,
    recipient: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM mail_outbox WHERE recipient = $1", recipient)
        .execute(connection)
        .await?;
    Ok(())
}

/// Sends what is due every half second until the service stops.
pub async fn run(pool: PgPool, mailer: Arc<Mailer>, clock: Arc<Clock>) {
    let mut every = tokio::time::interval(POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(error) = send_due(&pool, &mailer, &clock).await {
            tracing::warn!(%error, "the mail outbox could not be read; retrying");
        }
    }
}

/// One round: locks up to `BATCH` due rows (other instances skip them), sends each, and deletes
/// or reschedules it.
async fn send_due(pool: &PgPool, mailer: &Mailer, clock: &Clock) -> Result<(), sqlx::Error> {
    let mut transaction = pool.begin().await?;
    let due = sqlx::query!(
        r#"SELECT id, recipient, lang, email, attempts FROM mail_outbox
           WHERE next_attempt_at <= $1 ORDER BY id LIMIT $2
           FOR UPDATE SKIP LOCKED"#,
        clock.now(),
        BATCH
    )
    .fetch_all(&mut *transaction)
    .await?;
    for row in due {
        let lang = Lang::parse(&row.lang).unwrap_or_default();
        let sent = match serde_json::from_value::<Email>(row.email) {
            Ok(email) => mailer.send(&row.recipient, email, lang).await.is_ok(),
            Err(error) => {
                tracing::error!(id = row.id, %error, "an outbox email that cannot be read: dropped");
                true
            }
        };
        let attempts = row.attempts + 1;
        if sent || attempts >= MAX_ATTEMPTS {
            if !sent {
                tracing::error!(id = row.id, to = %mask_email(&row.recipient), attempts,
                    "an email failed every attempt: given up");
            }
            sqlx::query!("DELETE FROM mail_outbox WHERE id = $1", row.id)
                .execute(&mut *transaction)
                .await?;
        } else {
            let delay = chrono::Duration::seconds((1_i64 << attempts.min(12)).min(3600));
            sqlx::query!(
                "UPDATE mail_outbox SET attempts = $2, next_attempt_at = $3 WHERE id = $1",
                row.id,
                attempts,
                clock.now() + delay
            )
            .execute(&mut *transaction)
            .await?;
        }
    }
    transaction.commit().await
}
