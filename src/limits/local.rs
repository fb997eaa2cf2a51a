//! In-process GCRA with governor: one keyed limiter per (class, rate).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{Decision, Rate};

type KeyedLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Keys idle long enough to be full again are dropped once a limiter holds this many.
const PRUNE_ABOVE_KEYS: usize = 10_000;

#[derive(Default)]
pub struct LocalLimiter {
    limiters: Mutex<HashMap<(&'static str, Rate), Arc<KeyedLimiter>>>,
}

impl LocalLimiter {
    pub fn check(&self, class: &'static str, key: &str, rate: Rate) -> Decision {
        let limiter = {
            let mut limiters = self
                .limiters
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            limiters
                .entry((class, rate))
                .or_insert_with(|| Arc::new(new_limiter(rate)))
                .clone()
        };
        if limiter.len() > PRUNE_ABOVE_KEYS {
            limiter.retain_recent();
        }
        match limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => Decision {
                allowed: true,
                remaining: snapshot.remaining_burst_capacity(),
                retry_after: Duration::ZERO,
            },
            Err(not_until) => Decision {
                allowed: false,
                remaining: 0,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }
}

fn new_limiter(rate: Rate) -> KeyedLimiter {
    let burst = NonZeroU32::new(rate.limit).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(rate.emission_interval())
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst);
    RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_wait() {
        let limiter = LocalLimiter::default();
        let rate = Rate::per_minute(3);
        let remaining: Vec<u32> = (0..3)
            .map(|_| limiter.check("t", "k", rate))
            .map(|d| d.remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check("t", "k", rate);
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_secs(15));
        assert!(
            limiter.check("t", "other", rate).allowed,
            "keys are independent"
        );
    }
}
