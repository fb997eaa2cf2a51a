//! One email per address and purpose per cooldown, shared by every instance: the slot is taken
//! with one conditional upsert, and given back when the email could not be sent, so a failed
//! send never blocks an immediate retry.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::error::AuthError;

#[derive(Clone, Copy)]
pub enum Purpose {
    EmailCode,
    PasswordReset,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::EmailCode => "email_code",
            Purpose::PasswordReset => "password_reset",
        }
    }
}

/// A taken slot; `release` it when the email was not sent.
pub struct Slot {
    email: String,
    purpose: Purpose,
    sent_at: DateTime<Utc>,
}

pub async fn take(
    pool: &PgPool,
    email: &str,
    purpose: Purpose,
    now: DateTime<Utc>,
    cooldown: std::time::Duration,
) -> Result<Slot, AuthError> {
    let cooldown = chrono::Duration::from_std(cooldown).map_err(anyhow::Error::from)?;
    let taken = sqlx::query_scalar!(
        r#"INSERT INTO mail_cooldowns (email, purpose, sent_at) VALUES ($1, $2, $3)
           ON CONFLICT (email, purpose) DO UPDATE SET sent_at = EXCLUDED.sent_at
           WHERE mail_cooldowns.sent_at <= $4
           RETURNING sent_at"#,
        email,
        purpose.as_str(),
        now,
        now - cooldown
    )
    .fetch_optional(pool)
    .await?;
    if taken.is_some() {
        return Ok(Slot {
            email: email.to_owned(),
            purpose,
            sent_at: now,
        });
    }
    let last = sqlx::query_scalar!(
        "SELECT sent_at FROM mail_cooldowns WHERE email = $1 AND purpose = $2",
        email,
        purpose.as_str()
    )
    .fetch_optional(pool)
    .await?
    .unwrap_or(now);
    let wait = (last + cooldown - now).num_milliseconds().max(0);
    Err(AuthError::Cooldown {
        retry_after_secs: u64::try_from(wait).unwrap_or(0).div_ceil(1000),
    })
}

impl Slot {
    pub async fn release(self, pool: &PgPool) -> Result<(), AuthError> {
        sqlx::query!(
            "DELETE FROM mail_cooldowns WHERE email = $1 AND purpose = $2 AND sent_at = $3",
            self.email,
            self.purpose.as_str(),
            self.sent_at
        )
        .execute(pool)
        .await?;
        Ok(())
    }
}
