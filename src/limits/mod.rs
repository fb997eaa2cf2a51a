//! Rate limits: GCRA everywhere, so a limit means the same whether it is kept in process
//! (governor) or shared by every instance through Redis (one atomic script per check, clocked by
//! Redis itself so instances' clocks do not matter). A rejected call consumes nothing.
//!
//! When Redis is unreachable, `check` falls back to the in-process limiter and logs it: the
//! account throttles stay in force per instance rather than failing open or failing every call.

mod local;
mod redis_gcra;

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::Settings;
use local::LocalLimiter;
use redis_gcra::RedisLimiter;

/// `limit` events per `period`, all of which may come at once (burst = limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

impl Rate {
    pub fn per_minute(limit: u32) -> Rate {
        Rate {
            limit: limit.max(1),
            period: Duration::from_secs(60),
        }
    }

    pub fn per_hour(limit: u32) -> Rate {
        Rate {
            limit: limit.max(1),
            period: Duration::from_secs(3600),
        }
    }

    /// The time between two events at the sustained rate.
    fn emission_interval(self) -> Duration {
        self.period / self.limit
    }
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    pub allowed: bool,
    /// Events still allowed right now after this one.
    pub remaining: u32,
    /// When rejected: how long until the next event would be allowed.
    pub retry_after: Duration,
}

impl Decision {
    /// `Retry-After` in whole seconds, at least one.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

pub struct Limiter {
    local: LocalLimiter,
    shared: Option<RedisLimiter>,
}

impl Limiter {
    /// Connects to `REDIS_URL` when it is set; an unreachable Redis stops startup, since a
    /// misconfigured address is better found at once than at the first fallback.
    pub async fn from_settings(settings: &Settings) -> anyhow::Result<Limiter> {
        let shared = match &settings.redis_url {
            Some(url) => {
                Some(RedisLimiter::connect(url.expose_secret(), &settings.redis_key_prefix).await?)
            }
            None => None,
        };
        Ok(Limiter {
            local: LocalLimiter::default(),
            shared,
        })
    }

    /// Counts one event of `class` for `key` against `rate`.
    pub async fn check(&self, class: &'static str, key: &str, rate: Rate) -> Decision {
        if let Some(shared) = &self.shared {
            match shared.check(class, key, rate).await {
                Ok(decision) => return decision,
                Err(error) => tracing::warn!(class, error = %error,
                    "Redis limiter unavailable; using the in-process limit"),
            }
        }
        self.local.check(class, key, rate)
    }
}
