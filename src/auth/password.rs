//! Argon2id password hashing on a pool of its own: a thread per core but one
//! (`ARGON2_THREADS`), at the lowest priority (nice 19), so a login flood queues here, one core
//! stays free of it, and the kernel runs the gateway's threads first on the others: hashing
//! takes the CPU the rest of the service leaves.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use std::cell::RefCell;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::error::AuthError;
use crate::config::AuthSettings;

type Job = Box<dyn FnOnce() + Send>;

/// Hashes waiting for a thread beyond this answer 503 instead of queueing without end.
const MAX_QUEUED: usize = 1024;

/// The most hashes one client may have queued or running: past it, that client's next hash
/// answers 503 while every other client still gets a place.
const MAX_QUEUED_PER_CLIENT: usize = 32;

pub struct Passwords {
    params: Params,
    jobs: SyncSender<Job>,
    shares: Arc<ClientShares>,
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
        let (jobs, queue) = sync_channel::<Job>(MAX_QUEUED);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..settings.argon2_threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || hash_worker(&queue))?;
        }
        let mut passwords = Passwords {
            params,
            jobs,
            shares: Arc::new(ClientShares::new(MAX_QUEUED_PER_CLIENT)),
            dummy_hash: String::new(),
        };
        let dummy = SecretString::from(String::from("dummy password for unknown users"));
        passwords.dummy_hash = passwords.for_client("startup").hash(&dummy).await?;
        Ok(passwords)
    }

    /// Hashing on behalf of `client` (its throttle key), which holds at most its share of the
    /// queue.
    pub fn for_client(&self, client: impl Into<String>) -> ClientPasswords<'_> {
        ClientPasswords {
            passwords: self,
            client: client.into(),
        }
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }
}

/// The hashing of one client's request.
pub struct ClientPasswords<'a> {
    passwords: &'a Passwords,
    client: String,
}

impl ClientPasswords<'_> {
    /// A PHC string (`$argon2id$v=19$m=...`) with a fresh salt.
    pub async fn hash(&self, password: &SecretString) -> Result<String, AuthError> {
        let password = password.clone();
        let params = self.passwords.params.clone();
        self.on_blocking_pool(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Passwords::argon2(params)
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
        let stored = stored.unwrap_or(&self.passwords.dummy_hash).to_owned();
        let password = password.clone();
        let current = self.passwords.params.clone();
        self.on_blocking_pool(move || {
            let parsed = PasswordHash::new(&stored).map_err(|error| {
                AuthError::Internal(anyhow::anyhow!("bad stored hash: {error}"))
            })?;
            let matches = verify_with_kept_memory(password.expose_secret().as_bytes(), &parsed)?;
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
        // The place is given back when the job has run (or was refused), not when this
        // request goes away: a client that hangs up cannot queue more than its share.
        let place = self
            .passwords
            .shares
            .claim(&self.client)
            .ok_or(AuthError::Busy)?;
        let (done, result) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let _ = done.send(span.in_scope(work));
            drop(place);
        });
        match self.passwords.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(AuthError::Busy);
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(AuthError::Internal(anyhow::anyhow!(
                    "the hashing threads are gone"
                )));
            }
        }
        result
            .await
            .map_err(|_| AuthError::Internal(anyhow::anyhow!("a hashing job was lost")))?
    }
}

/// How many hashes each client has queued or running.
struct ClientShares {
    limit: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One client's place in the queue, given back when dropped.
struct Place {
    shares: Arc<ClientShares>,
    client: String,
}

impl ClientShares {
    fn new(limit: usize) -> ClientShares {
        ClientShares {
            limit,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// A place for `client`, or None when it already holds its share.
    fn claim(self: &Arc<Self>, client: &str) -> Option<Place> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(client.to_owned()).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Place {
            shares: self.clone(),
            client: client.to_owned(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.shares.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

thread_local! {
    /// Each hashing thread keeps its Argon2 memory. A fresh 19 MiB allocation per hash costs
    /// page faults whose time depends on the allocator's state: measured, that made a check
    /// against the dummy hash (unknown address) 10 ms slower than one against a real hash.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Recomputes the hash of `password` with the stored parameters and salt, in this thread's
/// kept memory, and compares in constant time.
fn verify_with_kept_memory(password: &[u8], stored: &PasswordHash<'_>) -> Result<bool, AuthError> {
    let bad = |what: &str| AuthError::Internal(anyhow::anyhow!("bad stored hash: {what}"));
    let algorithm = Algorithm::try_from(stored.algorithm).map_err(|_| bad("algorithm"))?;
    let version = match stored.version {
        Some(version) => Version::try_from(version).map_err(|_| bad("version"))?,
        None => Version::V0x13,
    };
    let params = Params::try_from(stored).map_err(|_| bad("parameters"))?;
    let expected = stored.hash.ok_or_else(|| bad("no output"))?;
    let mut salt = [0u8; 64];
    let salt = stored
        .salt
        .ok_or_else(|| bad("no salt"))?
        .decode_b64(&mut salt)
        .map_err(|_| bad("salt"))?;
    let mut output = vec![0u8; expected.len()];
    let blocks_needed = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    BLOCKS
        .with(|blocks| {
            let mut blocks = blocks.borrow_mut();
            if blocks.len() < blocks_needed {
                blocks.resize(blocks_needed, Block::default());
            }
            argon2.hash_password_into_with_memory(
                password,
                salt,
                &mut output,
                &mut blocks[..blocks_needed],
            )
        })
        .map_err(|error| AuthError::Internal(anyhow::anyhow!("hashing failed: {error}")))?;
    Ok(output.ct_eq(expected.as_bytes()).into())
}

/// A hashing thread: lowers its own priority, then runs jobs until the pool is dropped.
fn hash_worker(queue: &Mutex<Receiver<Job>>) {
    // Nice 19: the kernel preempts this thread as soon as any normal thread wants the core,
    // so hashing does not delay the gateway, yet it keeps a small share under full load, so
    // logins are slowed rather than starved (SCHED_IDLE would starve them). On Linux a thread
    // is a task of its own: `who = 0` is this thread alone.
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its integer arguments.
    unsafe {
        nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19);
    }
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::ClientShares;

    #[test]
    fn a_client_holds_at_most_its_share_and_others_still_get_places() {
        let shares = Arc::new(ClientShares::new(3));
        let flood: Vec<_> = (0..3).map(|_| shares.claim("ip:1").unwrap()).collect();
        assert!(shares.claim("ip:1").is_none(), "past its share");
        let other = shares
            .claim("ip:2")
            .expect("another client still gets a place");
        let mut flood = flood;
        flood.pop();
        assert!(
            shares.claim("ip:1").is_some(),
            "a finished hash frees a place"
        );
        drop(other);
        assert!(
            !shares.held.lock().unwrap().contains_key("ip:2"),
            "no entry is kept"
        );
    }
}
