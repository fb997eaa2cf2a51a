//! Limit events leased from Redis in batches, the way the gateway leases credits: a busy
//! subject takes several events of its shared limits in one script call and spends them in
//! process, so Redis is asked once per lease instead of once per call.
//!
//! What it costs in exactness, per limit (written out in `docs/RELIABILITY.md`):
//! - Over-admission: an instance holds at most `lease_cap` events of a subject, leased or on
//!   their way (a sixteenth of the smallest limit, at most `LEASE_MAX`; one lease at a time,
//!   topped up to its size when half spent), and every leased event was counted by Redis when it
//!   was leased. So in any window, the events admitted are at most what
//!   the shared limit allows in that window plus, per instance, the events it held unused when
//!   the window began: `instances × lease_cap`.
//! - Exact where the rate is low: a limit below `2 × SHARE_OF_LIMIT` events per period gives a
//!   cap of one, which is no lease at all (every event asks Redis, as before).
//! - Under-admission: events leased and not used are given back once the subject has been idle
//!   for `IDLE_RETURN`, so the monthly quota still ends at its number exactly.
//!
//! A lease is sized to the subject's pace: it doubles while leases run out within
//! `PACE_WINDOW` of each other and halves when they do not, so a quiet subject (a call now and
//! then) never holds more than the one event its call needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::redis_store::RedisStore;
use super::{Bundle, LocalCells, Quota, Rate, lock};

/// The largest lease, in events.
pub const LEASE_MAX: u32 = 1024;
/// A lease takes at most this share of a limit (one sixteenth).
const SHARE_OF_LIMIT: u32 = 16;
/// Leases that run out within this time of each other double the next one's size.
const PACE_WINDOW_US: u64 = 100_000;
/// Leased events untouched this long go back to Redis.
pub const IDLE_RETURN: Duration = Duration::from_millis(250);
/// How often idle leases are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// The most events one lease of `rates` may take; one means no lease.
pub(super) fn lease_cap(rates: &[Rate]) -> u32 {
    rates
        .iter()
        .map(|rate| rate.limit / SHARE_OF_LIMIT)
        .min()
        .unwrap_or(1)
        .clamp(1, LEASE_MAX)
}

/// One instance's lease of a subject's limits.
#[derive(Debug)]
pub struct Lease {
    /// Events leased and not yet used.
    tokens: u32,
    /// The quota's period the tokens were counted in.
    period: Option<u32>,
    /// The next lease's size.
    size: u32,
    last_refill_us: u64,
    last_use_us: u64,
    /// A lease is on its way from Redis: other callers ask for one event each meanwhile, so an
    /// instance never holds more than one lease of a subject.
    refilling: bool,
    /// The first rate's remaining events in Redis when the lease was granted.
    remaining_hint: u32,
}

impl Default for Lease {
    fn default() -> Lease {
        Lease {
            tokens: 0,
            period: None,
            size: 1,
            last_refill_us: 0,
            last_use_us: 0,
            refilling: false,
            remaining_hint: 0,
        }
    }
}

impl Lease {
    /// A leased event for a call in `period`: taken when `consume`, only looked at otherwise.
    /// Returns the first rate's events still allowed, as far as this instance knows, and how
    /// many events to lease ahead now (zero: none), so that a busy subject's calls rarely find
    /// the lease empty: when the taken event leaves the lease half empty and no lease is on its
    /// way, the lease is topped up to its size (`top_up`) while calls go on spending the rest.
    pub(super) fn take(
        &mut self,
        now: u64,
        period: Option<u32>,
        consume: bool,
        cap: u32,
    ) -> Option<(u32, u32)> {
        if self.tokens == 0 || self.period != period {
            return None;
        }
        let remaining = self
            .remaining_hint
            .saturating_add(self.tokens - u32::from(consume));
        if !consume {
            return Some((remaining, 0));
        }
        self.tokens -= 1;
        self.last_use_us = now;
        if self.refilling || self.tokens > self.size / 2 {
            return Some((remaining, 0));
        }
        self.pace(now, cap);
        let ahead = self.size.saturating_sub(self.tokens);
        self.refilling = ahead > 0;
        Some((remaining, ahead))
    }

    /// Sizes the next lease: double when the last one ran low within `PACE_WINDOW` of the one
    /// before, half otherwise, within one event and `cap`.
    fn pace(&mut self, now: u64, cap: u32) {
        let quick = now.saturating_sub(self.last_refill_us) < PACE_WINDOW_US;
        self.size = if quick {
            self.size.saturating_mul(2)
        } else {
            self.size / 2
        }
        .clamp(1, cap);
        self.last_refill_us = now;
    }

    /// Events leased ahead by `take` arrived (none when the lease failed or was refused).
    pub(super) fn top_up(&mut self, events: u32, remaining_hint: u32, period: Option<u32>) {
        self.refilling = false;
        if events == 0 {
            return;
        }
        if self.period != period {
            self.tokens = 0;
            self.period = period;
        }
        self.tokens += events;
        self.remaining_hint = remaining_hint;
    }

    /// How many events a call that found no leased event asks Redis for, at most `cap`: its
    /// own, plus a lease when the pace calls for one and no other lease is on its way.
    pub(super) fn want(&mut self, now: u64, cap: u32) -> u32 {
        if self.refilling {
            return 1;
        }
        self.pace(now, cap);
        self.refilling = self.size > 1;
        self.size
    }

    /// The lease asked for by a `want` above one arrived with `extra` events beyond its caller's own (none
    /// when it failed or was refused).
    pub(super) fn land(&mut self, extra: u32, remaining_hint: u32, period: Option<u32>, now: u64) {
        self.refilling = false;
        self.tokens = extra;
        self.period = period;
        self.remaining_hint = remaining_hint;
        self.last_use_us = now;
    }

    /// The unused events of a lease idle since before `idle_since` (all of them when `None`),
    /// taken out to be given back, with their period.
    fn take_unused(&mut self, idle_since: Option<u64>) -> Option<(u32, Option<u32>)> {
        let idle = idle_since.is_none_or(|since| self.last_use_us <= since);
        if self.tokens == 0 || self.refilling || !idle {
            return None;
        }
        Some((std::mem::take(&mut self.tokens), self.period))
    }

    fn holds_events(&self) -> bool {
        self.tokens > 0 || self.refilling
    }
}

/// A subject with a lease out: what giving its events back needs.
struct Outstanding {
    cells: Weak<Mutex<LocalCells>>,
    class: &'static str,
    key: String,
    rates: Vec<Rate>,
    has_quota: bool,
}

/// Every subject with a lease out on this instance; a task gives idle leases back.
#[derive(Default)]
pub(super) struct LeaseBook {
    outstanding: Mutex<HashMap<(&'static str, String), Outstanding>>,
}

impl LeaseBook {
    /// Notes that `bundle`'s subject holds leased events.
    pub(super) fn note(&self, bundle: &Bundle<'_>) {
        lock(&self.outstanding)
            .entry((bundle.class, bundle.key.to_owned()))
            .or_insert_with(|| Outstanding {
                cells: Arc::downgrade(bundle.cells),
                class: bundle.class,
                key: bundle.key.to_owned(),
                rates: bundle.rates.to_vec(),
                has_quota: bundle.quota.is_some(),
            });
    }

    /// Gives back to Redis the events of leases idle since `idle_since` (every lease when
    /// `None`: the instance is stopping) and forgets the subjects that hold none.
    pub(super) async fn give_back(&self, store: &RedisStore, idle_since: Option<u64>) {
        let mut returns = Vec::new();
        lock(&self.outstanding).retain(|_, entry| {
            let Some(cells) = entry.cells.upgrade() else {
                return false;
            };
            let mut cells = lock(&cells);
            if let Some((events, period)) = cells.lease.take_unused(idle_since) {
                returns.push((
                    entry.class,
                    entry.key.clone(),
                    entry.rates.clone(),
                    period.filter(|_| entry.has_quota),
                    events,
                ));
            }
            cells.lease.holds_events()
        });
        for (class, key, rates, period, events) in returns {
            let cells = Arc::default();
            let bundle = Bundle {
                class,
                key: &key,
                rates: &rates,
                quota: period.map(|period| Quota {
                    limit: None,
                    period,
                    seed: 0,
                    ttl: Duration::ZERO,
                }),
                cells: &cells,
                leased: true,
            };
            if let Err(error) = store.refund(&bundle, events).await {
                tracing::warn!(class, error = %error, events,
                    "could not give leased limit events back to Redis");
            }
        }
    }
}

/// Gives idle leases back every `SWEEP_EVERY`, until the limiter is dropped.
pub(super) fn spawn_sweeper(book: &Arc<LeaseBook>, store: RedisStore, started: Instant) {
    let book = Arc::downgrade(book);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(book) = book.upgrade() else { break };
            let now = super::now_us(started);
            let idle_since = now.saturating_sub(IDLE_RETURN.as_micros() as u64);
            book.give_back(&store, Some(idle_since)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_limits_are_never_leased_and_high_ones_take_a_sixteenth_at_most() {
        assert_eq!(lease_cap(&[Rate::per_second(5), Rate::per_hour(100)]), 1);
        assert_eq!(lease_cap(&[Rate::per_second(31)]), 1);
        assert_eq!(
            lease_cap(&[Rate::per_second(100), Rate::per_hour(100_000)]),
            6
        );
        assert_eq!(lease_cap(&[Rate::per_second(1_000_000)]), LEASE_MAX);
    }

    #[test]
    fn a_lease_grows_with_the_pace_and_shrinks_when_calls_slow_down() {
        let mut lease = Lease::default();
        let mut now = 1_000_000;
        let mut sizes = Vec::new();
        for _ in 0..8 {
            let size = lease.want(now, 16);
            sizes.push(size);
            lease.land(size - 1, 0, None, now);
            lease.tokens = 0;
            now += 10_000;
        }
        // The first call after a long quiet is on its own; then each quick refill doubles.
        assert_eq!(sizes, [1, 2, 4, 8, 16, 16, 16, 16]);
        // A second between calls: the lease halves each time, down to one event (no lease).
        let slow: Vec<u32> = (0..5)
            .map(|_| {
                now += 1_000_000;
                let size = lease.want(now, 16);
                lease.land(size - 1, 0, None, now);
                lease.tokens = 0;
                size
            })
            .collect();
        assert_eq!(slow, [8, 4, 2, 1, 1]);
    }

    #[test]
    fn one_lease_at_a_time_and_idle_events_are_taken_out_to_go_back() {
        let mut lease = Lease::default();
        let start = 1_000_000;
        assert_eq!(lease.want(start, 16), 1, "a first call leases nothing");
        assert_eq!(lease.want(start + 1, 16), 2, "the pace doubled the lease");
        assert_eq!(
            lease.want(start + 2, 16),
            1,
            "a lease is on its way: one event only"
        );
        lease.land(1, 3, Some(202611), 2);
        assert_eq!(lease.take(3, Some(202611), false, 16), Some((4, 0)));
        assert_eq!(
            lease.take(3, Some(202612), true, 16),
            None,
            "another month's events"
        );
        assert_eq!(lease.take(3, Some(202611), true, 16).map(|t| t.0), Some(3));
        assert_eq!(lease.take(4, Some(202611), true, 16), None);
        lease.top_up(0, 0, Some(202611));
        lease.want(5, 16);
        lease.land(5, 0, Some(202611), 5);
        assert_eq!(lease.take_unused(Some(4)), None, "used since");
        assert_eq!(lease.take_unused(Some(5)), Some((5, Some(202611))));
        assert!(!lease.holds_events());
    }

    #[test]
    fn a_busy_lease_is_topped_up_ahead_when_half_spent_and_never_beyond_its_size() {
        const P: Option<u32> = Some(202611);
        let mut lease = Lease::default();
        let now = 1_000_000;
        lease.want(now, 16);
        assert_eq!(lease.want(now + 1, 16), 2);
        lease.land(1, 10, P, now + 1);
        assert_eq!(lease.take(now + 2, P, true, 16), Some((10, 4)));
        assert_eq!(
            lease.take(now + 2, P, true, 16),
            None,
            "spent; the top-up is on its way"
        );
        assert_eq!(
            lease.want(now + 2, 16),
            1,
            "meanwhile a call asks for its own event"
        );
        lease.top_up(4, 10, P);
        assert_eq!(lease.take(now + 3, P, true, 16), Some((13, 0)));
        assert_eq!(
            lease.take(now + 3, P, true, 16),
            Some((12, 6)),
            "half spent: up to 8"
        );
        assert_eq!(
            lease.take(now + 3, P, true, 16),
            Some((11, 0)),
            "one top-up at a time"
        );
        lease.top_up(6, 10, P);
        assert_eq!(lease.tokens, 7, "at most the lease's size, 8");
    }
}
