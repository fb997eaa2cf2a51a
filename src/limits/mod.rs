//! The one rate limiter, for the account throttles and the gateway alike. GCRA everywhere, so a
//! limit means the same whether it is kept in process or shared by every instance through Redis
//! (one atomic script per check). A bundle of limits (the gateway's per second, per hour and
//! monthly quota) is checked together and consumed only when every limit passes; a refused
//! event consumes nothing.
//!
//! A busy subject of a bundle that allows it (`leased`: the gateway's) takes its shared limits'
//! events from Redis in leases sized to its pace (`lease.rs`), with the over-admission that
//! costs bounded and written down there.
//!
//! When Redis is unreachable a check falls back to the in-process state and logs it: limits stay
//! in force per instance rather than failing open or failing every call.

mod gcra;
mod lease;
mod redis_store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;

use crate::config::Settings;
pub use gcra::LocalCells;
pub use lease::{IDLE_RETURN as LEASE_IDLE_RETURN, LEASE_MAX};
use lease::{LeaseBook, lease_cap};
use redis_store::RedisStore;

/// `limit` events per `period`, all of which may come at once (burst = limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

impl Rate {
    pub fn per_second(limit: u32) -> Rate {
        Rate {
            limit: limit.max(1),
            period: Duration::from_secs(1),
        }
    }

    pub fn per_minute(limit: u32) -> Rate {
        Rate {
            limit: limit.max(1),
            period: Duration::from_secs(60),
        }
    }

    pub fn per_day(limit: u32) -> Rate {
        Rate {
            limit: limit.max(1),
            period: Duration::from_secs(86_400),
        }
    }

    pub fn per_hour(limit: u32) -> Rate {
        Rate {
            limit: limit.max(1),
            period: Duration::from_secs(3600),
        }
    }
}

/// A counter of events per period (a month's calls), checked with a bundle's rates.
#[derive(Clone, Copy, Debug)]
pub struct Quota {
    /// None: counted, never refused.
    pub limit: Option<i64>,
    /// Which period the count belongs to (YYYYMM for a month).
    pub period: u32,
    /// The period's count as the database knows it, for a shared counter that does not exist.
    pub seed: i64,
    /// How long a shared counter outlives its period's last event.
    pub ttl: Duration,
}

/// Limits checked and consumed together for one subject.
#[derive(Clone, Copy)]
pub struct Bundle<'a> {
    /// With `key`, names the subject: `login` and an IP, `gateway` and an account.
    pub class: &'static str,
    pub key: &'a str,
    /// At most `MAX_RATES`.
    pub rates: &'a [Rate],
    pub quota: Option<Quota>,
    /// This instance's state of the bundle: the limits in process, the fallback when Redis is
    /// down, and its lease.
    pub cells: &'a Arc<Mutex<LocalCells>>,
    /// Whether a busy subject may lease events from Redis (with the bounded over-admission of
    /// `lease.rs`) instead of asking it for every event.
    pub leased: bool,
}

/// Which limit refused an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// The rate at `index` of the bundle, free again after `retry_after`.
    Rate {
        index: usize,
        retry_after: Duration,
    },
    Quota,
}

/// The outcome of a bundle's check.
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    pub exceeded: Option<Exceeded>,
    /// Events still allowed by the first rate right now after this one.
    pub remaining: u32,
}

impl Verdict {
    fn refused(exceeded: Exceeded) -> Verdict {
        Verdict {
            exceeded: Some(exceeded),
            remaining: 0,
        }
    }
}

/// The outcome of one throttle check.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    pub allowed: bool,
    /// Events still allowed right now after this one.
    pub remaining: u32,
    /// When refused: how long until the next event would be allowed.
    pub retry_after: Duration,
}

impl Decision {
    /// `Retry-After` in whole seconds, at least one.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

/// Keys idle long enough to be full again are dropped once the throttles hold this many.
const PRUNE_ABOVE_KEYS: usize = 10_000;

type ThrottleKey = (&'static str, String);

pub struct Limiter {
    started: Instant,
    /// The in-process cells of single-rate throttles, keyed by class and subject.
    throttles: Mutex<HashMap<ThrottleKey, Arc<Mutex<LocalCells>>>>,
    shared: Option<RedisStore>,
    leases: Arc<LeaseBook>,
}

impl Limiter {
    /// Connects to `REDIS_URL` when it is set; an unreachable Redis stops startup, since a
    /// misconfigured address is better found at once than at the first fallback.
    pub async fn from_settings(settings: &Settings) -> anyhow::Result<Limiter> {
        let shared = match &settings.redis_url {
            Some(url) => {
                Some(RedisStore::connect(url.expose_secret(), &settings.redis_key_prefix).await?)
            }
            None => None,
        };
        let started = Instant::now();
        let leases = Arc::<LeaseBook>::default();
        if let Some(store) = &shared {
            lease::spawn_sweeper(&leases, store.clone(), started);
        }
        Ok(Limiter {
            started,
            throttles: Mutex::default(),
            shared,
            leases,
        })
    }

    fn now_us(&self) -> u64 {
        now_us(self.started)
    }

    /// Gives every leased event back to Redis: the instance is stopping.
    pub async fn return_leases(&self) {
        if let Some(shared) = &self.shared {
            self.leases.give_back(shared, None).await;
        }
    }

    /// Checks every limit of `bundle`; consumes one event from each only if all pass and
    /// `consume`.
    pub async fn check_bundle(&self, bundle: &Bundle<'_>, consume: bool) -> Verdict {
        if let Some(shared) = &self.shared {
            let period = bundle.quota.map(|quota| quota.period);
            let now = self.now_us();
            let cap = lease_cap(bundle.rates);
            let wanted = {
                let mut cells = lock(bundle.cells);
                if bundle.leased
                    && let Some((remaining, ahead)) = cells.lease.take(now, period, consume, cap)
                {
                    if consume && let Some(period) = period {
                        cells.record(period);
                    }
                    drop(cells);
                    if ahead > 0 {
                        self.lease_ahead(shared, bundle, ahead);
                    }
                    return Verdict {
                        exceeded: None,
                        remaining,
                    };
                }
                match (consume, bundle.leased) {
                    (false, _) => 0,
                    (true, false) => 1,
                    (true, true) => cells.lease.want(now, cap),
                }
            };
            // Boxed, like every wait on Redis here: its future is large, and would otherwise
            // weigh on every call's future, Redis or not.
            let answer = Box::pin(shared.check(bundle, wanted)).await;
            let granted = answer.as_ref().map_or(0, |(_, granted)| *granted);
            if granted > 0 || wanted > 1 {
                let mut cells = lock(bundle.cells);
                if wanted > 1 {
                    let remaining = answer.as_ref().map_or(0, |(verdict, _)| verdict.remaining);
                    cells
                        .lease
                        .land(granted.saturating_sub(1), remaining, period, now);
                }
                if granted > 0
                    && let Some(period) = period
                {
                    cells.record(period);
                }
            }
            if granted > 1 {
                self.leases.note(bundle);
            }
            match answer {
                Ok((verdict, _)) => return verdict,
                Err(error) => tracing::warn!(class = bundle.class, error = %error,
                    "Redis limiter unavailable; using the in-process limits"),
            }
        }
        let quota = bundle.quota.map(|quota| (quota.limit, quota.period));
        lock(bundle.cells).check(self.now_us(), bundle.rates, quota, consume)
    }

    /// Tops `bundle`'s lease up by `events` in the background: the call that asked goes on.
    fn lease_ahead(&self, shared: &RedisStore, bundle: &Bundle<'_>, events: u32) {
        let (shared, leases) = (shared.clone(), self.leases.clone());
        let (class, key, rates) = (bundle.class, bundle.key.to_owned(), bundle.rates.to_vec());
        let (quota, cells) = (bundle.quota, bundle.cells.clone());
        tokio::spawn(async move {
            let bundle = Bundle {
                class,
                key: &key,
                rates: &rates,
                quota,
                cells: &cells,
                leased: true,
            };
            let period = quota.map(|quota| quota.period);
            let answer = Box::pin(shared.check(&bundle, events)).await;
            let (granted, remaining) = match &answer {
                Ok((verdict, granted)) => (*granted, verdict.remaining),
                Err(error) => {
                    tracing::warn!(class, error = %error, "could not lease limit events ahead");
                    (0, 0)
                }
            };
            lock(&cells).lease.top_up(granted, remaining, period);
            if granted > 0 {
                leases.note(&bundle);
            }
        });
    }

    /// Gives back the event consumed by a successful check.
    pub async fn refund_bundle(&self, bundle: &Bundle<'_>) {
        let period = bundle.quota.map(|quota| quota.period);
        lock(bundle.cells).refund(bundle.rates, period);
        if let Some(shared) = &self.shared
            && let Err(error) = Box::pin(shared.refund(bundle, 1)).await
        {
            tracing::warn!(class = bundle.class, error = %error,
                "could not give an event back to Redis");
        }
    }

    /// Gives back the quota's count of an event, keeping its rate slots spent.
    pub async fn refund_quota(&self, bundle: &Bundle<'_>) {
        let quota_only = Bundle {
            rates: &[],
            ..*bundle
        };
        self.refund_bundle(&quota_only).await;
    }

    /// Counts one event of `class` for `key` against `rate`: the account throttles.
    pub async fn check(&self, class: &'static str, key: &str, rate: Rate) -> Decision {
        self.throttle(class, key, rate, true).await
    }

    /// Whether one more event of `class` for `key` would be allowed, without counting it: for
    /// limits on failures, which are counted only once they happened.
    pub async fn would_allow(&self, class: &'static str, key: &str, rate: Rate) -> Decision {
        self.throttle(class, key, rate, false).await
    }

    async fn throttle(
        &self,
        class: &'static str,
        key: &str,
        rate: Rate,
        consume: bool,
    ) -> Decision {
        let cells = self.throttle_cells(class, key);
        let bundle = Bundle {
            class,
            key,
            rates: &[rate],
            quota: None,
            cells: &cells,
            leased: false,
        };
        let verdict = self.check_bundle(&bundle, consume).await;
        match verdict.exceeded {
            None => Decision {
                allowed: true,
                remaining: verdict.remaining,
                retry_after: Duration::ZERO,
            },
            Some(Exceeded::Rate { retry_after, .. }) => Decision {
                allowed: false,
                remaining: 0,
                retry_after,
            },
            Some(Exceeded::Quota) => unreachable!("a throttle has no quota"),
        }
    }

    /// A throttle's cells (shared, since a check may await Redis while another runs).
    fn throttle_cells(&self, class: &'static str, key: &str) -> Arc<Mutex<LocalCells>> {
        let mut throttles = lock(&self.throttles);
        if throttles.len() > PRUNE_ABOVE_KEYS {
            let now = self.now_us();
            throttles.retain(|_, cells| !lock(cells).is_idle(now));
        }
        throttles
            .entry((class, key.to_owned()))
            .or_default()
            .clone()
    }
}

/// Microseconds on an instance's monotonic clock since `started`, offset by an hour so the first
/// cells are never "in the past" of zero.
fn now_us(started: Instant) -> u64 {
    started.elapsed().as_micros() as u64 + 3_600_000_000
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
