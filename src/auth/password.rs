//! Argon2id password hashing, off the async executor and behind a limit sized to the cores, so
//! a login flood queues here instead of stalling every other request.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use super::error::AuthError;
use crate::config::AuthSettings;

pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// Verified against when the email is unknown, so that answer takes as long as a wrong
    /// password for a real account.
    dummy_hash: String,
}

/// The outcome of a verification.
pub struct Verified {
    pub matches: bool,
    /// The stored hash used other parameters than the current ones: rehash it now.
    pub outdated: bool,
}

impl Passwords {
    pub async fn new(settings: &AuthSettings) -> anyhow::Result<Passwords> {
        let params = Params::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.argon2_parallelism,
            None,
        )
        .map_err(|error| anyhow::anyhow!("invalid Argon2 parameters: {error}"))?;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let mut passwords = Passwords {
            params,
            permits: Arc::new(Semaphore::new(cores)),
            dummy_hash: String::new(),
        };
        let dummy = SecretString::from(String::from("dummy password for unknown users"));
        passwords.dummy_hash = passwords.hash(&dummy).await?;
        Ok(passwords)
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// A PHC string (`$argon2id$v=19$m=...`) with a fresh salt.
    pub async fn hash(&self, password: &SecretString) -> Result<String, AuthError> {
        let password = password.clone();
        let params = self.params.clone();
        self.on_blocking_pool(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Self::argon2(params)
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|error| AuthError::Internal(anyhow::anyhow!("hashing failed: {error}")))
        })
        .await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no
    /// account, so both cases cost the same.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<Verified, AuthError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.clone();
        let current = self.params.clone();
        self.on_blocking_pool(move || {
            let parsed = PasswordHash::new(&stored).map_err(|error| {
                AuthError::Internal(anyhow::anyhow!("bad stored hash: {error}"))
            })?;
            let matches = Argon2::default()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok();
            let outdated = Params::try_from(&parsed).map_or(true, |used| {
                used.m_cost() != current.m_cost()
                    || used.t_cost() != current.t_cost()
                    || used.p_cost() != current.p_cost()
            }) || parsed.algorithm != Algorithm::Argon2id.ident();
            Ok(Verified {
                matches: known && matches,
                outdated,
            })
        })
        .await
    }

    async fn on_blocking_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|error| anyhow::anyhow!(error))?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .await
            .map_err(|error| AuthError::Internal(anyhow::anyhow!("hashing task failed: {error}")))?
    }
}
