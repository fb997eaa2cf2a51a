//! Forgotten, reset and changed passwords. A reset link carries 256 random bits, stored as a
//! digest, valid 30 minutes and once; a reset ends every session, a change every other one,
//! and both tell the owner by email.

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::cooldown::{self, Purpose};
use super::error::AuthError;
use super::password::ClientPasswords;
use super::session::{self, CurrentSession};
use super::{token, users};
use crate::api::Lang;
use crate::mail::Email;
use crate::state::AppState;
use crate::telemetry::mask_email;

pub const RESET_TTL_MINUTES: i64 = 30;

#[derive(Serialize, ToSchema)]
pub struct ResetSent {
    /// Seconds the link stays valid.
    pub expires_in: i64,
}

/// Emails a reset link to `email` (normalized, captcha passed): 40401 when no account has it.
pub async fn forgot(context: &AppState, email: &str, lang: Lang) -> Result<ResetSent, AuthError> {
    let account = users::find_by_email(&context.pool, email)
        .await?
        .ok_or(AuthError::EmailNotFound)?;
    let now = context.clock.now();
    let cooldown = context.settings.auth.email_code_cooldown;
    let slot = cooldown::take(&context.pool, email, Purpose::PasswordReset, now, cooldown).await?;

    let reset_token = token::generate("");
    let digest = token::digest(reset_token.expose_secret());
    sqlx::query!(
        r#"INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at)
           VALUES ($1, $2, $3, $4)"#,
        digest,
        account.profile.id,
        now,
        now + chrono::Duration::minutes(RESET_TTL_MINUTES)
    )
    .execute(&context.pool)
    .await?;

    let mut link = context
        .settings
        .public_url
        .join("reset-password")
        .map_err(anyhow::Error::from)?;
    link.query_pairs_mut()
        .append_pair("token", reset_token.expose_secret());
    let email_message = Email::PasswordReset {
        link: link.to_string(),
        minutes: RESET_TTL_MINUTES,
    };
    if let Err(error) = context.mailer.send(email, email_message, lang).await {
        sqlx::query!(
            "DELETE FROM password_reset_tokens WHERE token_hash = $1",
            digest
        )
        .execute(&context.pool)
        .await?;
        slot.release(&context.pool).await?;
        return Err(error.into());
    }
    Ok(ResetSent {
        expires_in: RESET_TTL_MINUTES * 60,
    })
}

/// Sets a new password with a reset token and ends every session of the account.
pub async fn reset(
    context: &AppState,
    passwords: &ClientPasswords<'_>,
    reset_token: &SecretString,
    password: &SecretString,
    lang: Lang,
) -> Result<(), AuthError> {
    let now = context.clock.now();
    let digest = token::digest(reset_token.expose_secret().trim());
    // A cheap look first, so an unknown token costs no Argon2 work.
    let usable = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM password_reset_tokens
                          WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2) AS "usable!""#,
        digest,
        now
    )
    .fetch_one(&context.pool)
    .await?;
    if !usable {
        return Err(AuthError::ResetTokenInvalid);
    }
    let password_hash = passwords.hash(password).await?;

    let mut transaction = context.pool.begin().await?;
    // Whoever marks the token used first resets; a racing twin finds it used.
    let user_id = sqlx::query_scalar!(
        r#"UPDATE password_reset_tokens SET used_at = $2
           WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
           RETURNING user_id"#,
        digest,
        now
    )
    .fetch_optional(&mut *transaction)
    .await?
    .ok_or(AuthError::ResetTokenInvalid)?;
    users::set_password_hash(&mut transaction, user_id, &password_hash).await?;
    session::revoke_all_of_user(&mut transaction, user_id, None, now).await?;
    revoke_reset_tokens(&mut transaction, user_id, now).await?;
    let email = users::email_of(&mut transaction, user_id).await?;
    transaction.commit().await?;
    notify_changed(context, user_id, &email, lang).await;
    Ok(())
}

/// Changes the password of the logged-in user, who proves the old one; ends the other sessions.
pub async fn change(
    context: &AppState,
    passwords: &ClientPasswords<'_>,
    session: &CurrentSession,
    old_password: &SecretString,
    new_password: &SecretString,
    lang: Lang,
) -> Result<(), AuthError> {
    let account = users::find_by_email(&context.pool, &session.user.email)
        .await?
        .ok_or(AuthError::UserNotFound)?;
    let verified = passwords
        .verify(old_password, Some(account.password_hash.as_str()))
        .await?;
    if !verified.matches {
        return Err(AuthError::InvalidCredentials);
    }
    let password_hash = passwords.hash(new_password).await?;
    let now = context.clock.now();
    let mut transaction = context.pool.begin().await?;
    users::set_password_hash(&mut transaction, session.user.id, &password_hash).await?;
    session::revoke_all_of_user(
        &mut transaction,
        session.user.id,
        Some(session.session_id),
        now,
    )
    .await?;
    revoke_reset_tokens(&mut transaction, session.user.id, now).await?;
    transaction.commit().await?;
    notify_changed(context, session.user.id, &session.user.email, lang).await;
    Ok(())
}

/// After a reset or a change no older reset link works: whoever took over the account cannot
/// come back through a link sent before.
async fn revoke_reset_tokens(
    connection: &mut sqlx::PgConnection,
    user_id: Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), AuthError> {
    sqlx::query!(
        "UPDATE password_reset_tokens SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
        user_id,
        now
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The change is done whatever the mail server says; a failed notice is logged, not answered.
async fn notify_changed(context: &AppState, user_id: Uuid, email: &str, lang: Lang) {
    if let Err(error) = context
        .mailer
        .send(email, Email::PasswordChanged, lang)
        .await
    {
        tracing::warn!(%user_id, to = %mask_email(email), error = %error,
            "the password-changed notice was not sent");
    }
}
