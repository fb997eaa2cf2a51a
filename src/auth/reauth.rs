//! Confirming the password of a logged-in user before a sensitive step (changing the password,
//! disabling two-factor sign-in, deleting the account). Wrong passwords count per account and
//! per client, and past the limit no Argon2 work is done at all: a session cannot guess its
//! password without end, nor fill the hashing queue that every login needs.

use actix_web::HttpRequest;
use secrecy::SecretString;

use super::error::AuthError;
use super::password::Passwords;
use super::session::CurrentSession;
use super::users;
use crate::api::client_key;
use crate::limits::Rate;
use crate::state::AppState;

/// Wrong passwords a minute, per account and per client, before 429.
const FAILURES_PER_MINUTE: u32 = 3;

/// Who wrong passwords are counted against: the account and the client.
pub struct Subjects {
    pub account: String,
    pub client: String,
}

impl Subjects {
    pub fn of(context: &AppState, req: &HttpRequest, session: &CurrentSession) -> Subjects {
        Subjects {
            account: session.user.id.to_string(),
            client: client_key(req, &context.settings.trusted_proxies),
        }
    }

    fn both(&self) -> [&str; 2] {
        [&self.account, &self.client]
    }

    /// 429 when either has used up its wrong passwords.
    pub async fn check_budget(&self, context: &AppState) -> Result<(), AuthError> {
        for subject in self.both() {
            let allowed = context
                .limiter
                .would_allow("password_change", subject, rate())
                .await;
            if !allowed.allowed {
                return Err(AuthError::TooManyRequests {
                    retry_after_secs: allowed.retry_after_secs(),
                });
            }
        }
        Ok(())
    }

    /// Counts a wrong password against both.
    pub async fn count_failure(&self, context: &AppState) {
        for subject in self.both() {
            context
                .limiter
                .check("password_change", subject, rate())
                .await;
        }
    }
}

fn rate() -> Rate {
    Rate::per_minute(FAILURES_PER_MINUTE)
}

pub async fn confirm_password(
    context: &AppState,
    passwords: &Passwords,
    req: &HttpRequest,
    session: &CurrentSession,
    password: &SecretString,
) -> Result<(), AuthError> {
    let subjects = Subjects::of(context, req, session);
    subjects.check_budget(context).await?;
    let stored = users::find_by_email(&context.pool, &session.user.email).await?;
    let hash = stored.as_ref().map(|stored| stored.password_hash.as_str());
    let verified = passwords
        .for_client(subjects.client.clone())
        .verify(password, hash)
        .await?;
    if !verified.matches {
        subjects.count_failure(context).await;
        return Err(AuthError::InvalidCredentials);
    }
    Ok(())
}
