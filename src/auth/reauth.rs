//! Confirming the password of a logged-in user before an irreversible step (deleting the
//! account). Wrong passwords count like a password change's, per account and per client, and
//! past the limit no Argon2 work is done.

use actix_web::HttpRequest;
use secrecy::SecretString;

use super::error::AuthError;
use super::password::Passwords;
use super::session::CurrentSession;
use super::users;
use crate::api::client_key;
use crate::limits::Rate;
use crate::state::AppState;

/// Wrong passwords a minute, per account and per client, before 429 (shared with changes).
const FAILED_CONFIRMATIONS_PER_MINUTE: u32 = 3;

pub async fn confirm_password(
    context: &AppState,
    passwords: &Passwords,
    req: &HttpRequest,
    session: &CurrentSession,
    password: &SecretString,
) -> Result<(), AuthError> {
    let failures = Rate::per_minute(FAILED_CONFIRMATIONS_PER_MINUTE);
    let client = client_key(req, &context.settings.trusted_proxies);
    let subjects = [session.user.id.to_string(), client];
    for subject in &subjects {
        let allowed = context
            .limiter
            .would_allow("password_change", subject, failures)
            .await;
        if !allowed.allowed {
            return Err(AuthError::TooManyRequests {
                retry_after_secs: allowed.retry_after_secs(),
            });
        }
    }
    let stored = users::find_by_email(&context.pool, &session.user.email).await?;
    let hash = stored.as_ref().map(|stored| stored.password_hash.as_str());
    let verified = passwords
        .for_client(subjects[1].clone())
        .verify(password, hash)
        .await?;
    if !verified.matches {
        for subject in &subjects {
            context
                .limiter
                .check("password_change", subject, failures)
                .await;
        }
        return Err(AuthError::InvalidCredentials);
    }
    Ok(())
}
