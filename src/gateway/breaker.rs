//! A circuit breaker per provider: after `failures` consecutive failed calls (unreachable,
//! timed out or 5xx) the provider's calls answer 50201 at once for `cool_down`, so one account
//! cannot drive a failing provider with the operator's credentials; then a single probe goes
//! through, and its outcome closes the breaker or opens it for another cool-down. Per instance:
//! each instance learns of a failing provider from its own calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// A probe is in flight: the others wait for its outcome.
    probing: bool,
}

pub struct Breakers {
    failures: u32,
    cool_down: Duration,
    states: Mutex<HashMap<String, State>>,
    /// How many providers have a state (`states.len()`): while none has, a call neither locks
    /// nor hashes its provider's slug, twice per call otherwise.
    troubled: AtomicUsize,
}

impl Breakers {
    pub fn new(failures: u32, cool_down: Duration) -> Breakers {
        Breakers {
            failures: failures.max(1),
            cool_down,
            states: Mutex::default(),
            troubled: AtomicUsize::new(0),
        }
    }

    /// Whether a call to `slug` may go to the upstream now.
    pub fn admit(&self, slug: &str) -> bool {
        if self.troubled.load(Ordering::Acquire) == 0 {
            return true;
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = states.get_mut(slug) else {
            return true;
        };
        match state.open_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            Some(_) if state.probing => false,
            Some(_) => {
                state.probing = true;
                true
            }
        }
    }

    /// The outcome of an admitted call to `slug`.
    pub fn record(&self, slug: &str, succeeded: bool) {
        if succeeded && self.troubled.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if succeeded {
            states.remove(slug);
        } else {
            let state = states.entry(slug.to_owned()).or_default();
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            if state.probing || state.consecutive_failures >= self.failures {
                state.open_until = Some(Instant::now() + self.cool_down);
                state.probing = false;
            }
        }
        self.troubled.store(states.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_after_the_failures_then_lets_one_probe_through() {
        let breakers = Breakers::new(2, Duration::from_millis(30));
        assert!(breakers.admit("p"));
        breakers.record("p", false);
        assert!(breakers.admit("p"), "one failure is not enough");
        breakers.record("p", false);
        assert!(!breakers.admit("p"), "open");
        assert!(breakers.admit("other"), "per provider");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breakers.admit("p"), "the probe");
        assert!(!breakers.admit("p"), "one probe at a time");
        breakers.record("p", false);
        assert!(!breakers.admit("p"), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breakers.admit("p"));
        breakers.record("p", true);
        assert!(
            breakers.admit("p") && breakers.admit("p"),
            "a good probe closes it"
        );
    }
}
