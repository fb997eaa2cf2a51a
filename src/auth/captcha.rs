//! Image captchas: a PNG a person can read, its answer kept server-side for five minutes and
//! consumed by the first attempt, right or wrong.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use captcha::Captcha;
use captcha::filters::{Dots, Noise, Wave};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::AuthError;

pub const CAPTCHA_TTL_SECS: i64 = 300;

#[derive(Serialize, ToSchema)]
pub struct IssuedCaptcha {
    pub captcha_id: Uuid,
    /// `data:image/png;base64,...`
    pub image: String,
    /// Seconds until the captcha expires.
    pub expires_in: i64,
}

/// Draws a captcha and stores its answer. With `CAPTCHA_TEST_CODE` set, the stored answer is
/// that code whatever the picture shows.
pub async fn issue(
    pool: &PgPool,
    now: DateTime<Utc>,
    test_code: Option<&str>,
) -> Result<IssuedCaptcha, AuthError> {
    let (answer, png) = tokio::task::spawn_blocking(draw)
        .await
        .map_err(|error| anyhow::anyhow!("captcha task failed: {error}"))??;
    let answer = test_code.map_or(answer, str::to_owned).to_lowercase();
    let id = Uuid::new_v4();
    let expires_at = now + chrono::Duration::seconds(CAPTCHA_TTL_SECS);
    // Expired answers are swept here, so the table stays as small as the captchas in flight.
    sqlx::query!("DELETE FROM captchas WHERE expires_at < $1", now)
        .execute(pool)
        .await?;
    sqlx::query!(
        "INSERT INTO captchas (id, answer, expires_at) VALUES ($1, $2, $3)",
        id,
        answer,
        expires_at
    )
    .execute(pool)
    .await?;
    Ok(IssuedCaptcha {
        captcha_id: id,
        image: format!("data:image/png;base64,{}", STANDARD.encode(png)),
        expires_in: CAPTCHA_TTL_SECS,
    })
}

fn draw() -> Result<(String, Vec<u8>), AuthError> {
    let mut captcha = Captcha::new();
    captcha
        .add_chars(5)
        .apply_filter(Noise::new(0.1))
        .apply_filter(Wave::new(2.0, 8.0).horizontal())
        .view(220, 90)
        .apply_filter(Dots::new(6));
    let png = captcha
        .as_png()
        .ok_or_else(|| anyhow::anyhow!("the captcha PNG failed"))?;
    Ok((captcha.chars_as_string(), png))
}

/// Checks a submitted captcha: 40002 when none was sent, 40001 when it is wrong, expired or
/// already used. Either way the captcha is gone afterwards.
pub async fn consume(
    pool: &PgPool,
    now: DateTime<Utc>,
    captcha_id: Option<&str>,
    answer: Option<&str>,
) -> Result<(), AuthError> {
    let (Some(captcha_id), Some(answer)) = (captcha_id, answer) else {
        return Err(AuthError::CaptchaRequired);
    };
    if captcha_id.trim().is_empty() || answer.trim().is_empty() {
        return Err(AuthError::CaptchaRequired);
    }
    let Ok(id) = Uuid::parse_str(captcha_id.trim()) else {
        return Err(AuthError::InvalidCaptcha);
    };
    let stored = sqlx::query!(
        "DELETE FROM captchas WHERE id = $1 RETURNING answer, expires_at",
        id
    )
    .fetch_optional(pool)
    .await?;
    match stored {
        Some(stored)
            if stored.expires_at > now && stored.answer == answer.trim().to_lowercase() =>
        {
            Ok(())
        }
        _ => Err(AuthError::InvalidCaptcha),
    }
}
