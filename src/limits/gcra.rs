//! GCRA over microseconds, the one implementation of a rate in process (Redis runs the same
//! steps in `redis_store.rs`'s script), and the in-process state of a bundle of limits.

use std::time::Duration;

use super::lease::Lease;
use super::{Exceeded, Rate, Verdict};

/// The most rates a bundle holds (the gateway's per second and per hour).
pub const MAX_RATES: usize = 2;

impl Rate {
    /// The time between two events at the sustained rate, in µs (at least one).
    pub(super) fn interval_us(self) -> u64 {
        (self.period.as_micros() as u64 / u64::from(self.limit.max(1))).max(1)
    }

    /// How far ahead of now the theoretical arrival time may run: the burst, in µs.
    pub(super) fn tolerance_us(self) -> u64 {
        (self.period.as_micros() as u64).saturating_sub(self.interval_us())
    }
}

/// One GCRA step: the cell's next theoretical arrival time and the events still allowed after
/// this one, or how long until the next event would be allowed.
pub fn step(tat: u64, now: u64, rate: Rate) -> Result<(u64, u32), Duration> {
    let (interval, tolerance) = (rate.interval_us(), rate.tolerance_us());
    let tat = tat.max(now);
    if tat - now > tolerance {
        return Err(Duration::from_micros(tat - now - tolerance));
    }
    let new_tat = tat + interval;
    let remaining = match tolerance.checked_sub(new_tat - now) {
        Some(room) => room / interval + 1,
        None => 0,
    };
    Ok((new_tat, u32::try_from(remaining).unwrap_or(u32::MAX)))
}

/// This instance's state of one bundle: a cell per rate and the counter of the current period.
#[derive(Debug, Default)]
pub struct LocalCells {
    tats: [u64; MAX_RATES],
    period: u32,
    count: i64,
    /// Events of the shared limits leased from Redis.
    pub(super) lease: Lease,
}

impl LocalCells {
    /// Cells whose counter starts at `count` events in `period`.
    pub fn seeded(period: u32, count: i64) -> LocalCells {
        LocalCells {
            period,
            count,
            ..LocalCells::default()
        }
    }

    /// The events counted in `period` (zero for any other period).
    pub fn count_in(&self, period: u32) -> i64 {
        if self.period == period { self.count } else { 0 }
    }

    /// Counts one consumed event that was decided elsewhere (Redis), so a fallback to the
    /// in-process state starts from the truth.
    pub(super) fn record(&mut self, period: u32) {
        if self.period == period {
            self.count += 1;
        }
    }

    /// Checks every rate and the quota; consumes from all of them only if all pass and
    /// `consume`.
    pub(super) fn check(
        &mut self,
        now: u64,
        rates: &[Rate],
        quota: Option<(Option<i64>, u32)>,
        consume: bool,
    ) -> Verdict {
        let mut next = self.tats;
        let mut remaining = 0;
        for (index, rate) in rates.iter().enumerate().take(MAX_RATES) {
            match step(self.tats[index], now, *rate) {
                Ok((tat, left)) => {
                    next[index] = tat;
                    if index == 0 {
                        remaining = left;
                    }
                }
                Err(retry_after) => {
                    return Verdict::refused(Exceeded::Rate { index, retry_after });
                }
            }
        }
        if let Some((limit, period)) = quota {
            if self.period != period {
                self.period = period;
                self.count = 0;
            }
            if limit.is_some_and(|limit| self.count >= limit) {
                return Verdict::refused(Exceeded::Quota);
            }
        }
        if consume {
            self.tats = next;
            if quota.is_some() {
                self.count += 1;
            }
        }
        Verdict {
            exceeded: None,
            remaining,
        }
    }

    /// Whether every cell is full again (nothing to remember).
    pub(super) fn is_idle(&self, now: u64) -> bool {
        self.tats.iter().all(|tat| *tat <= now)
    }

    /// Gives back one consumed event.
    pub(super) fn refund(&mut self, rates: &[Rate], period: Option<u32>) {
        for (tat, rate) in self.tats.iter_mut().zip(rates) {
            *tat = tat.saturating_sub(rate.interval_us());
        }
        if period == Some(self.period) {
            self.count = (self.count - 1).max(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Rate = Rate {
        limit: 3,
        period: Duration::from_secs(1),
    };
    const HOUR: Rate = Rate {
        limit: 5,
        period: Duration::from_secs(3600),
    };

    #[test]
    fn the_first_limit_that_fails_is_reported_and_nothing_is_consumed() {
        let mut cells = LocalCells::seeded(202611, 0);
        let quota = Some((Some(4), 202611));
        let now = 10_000_000_000;
        let remaining: Vec<u32> = (0..3)
            .map(|_| cells.check(now, &[SECOND, HOUR], quota, true).remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        assert!(matches!(
            cells.check(now, &[SECOND, HOUR], quota, true).exceeded,
            Some(Exceeded::Rate { index: 0, .. })
        ));
        // A second later the burst is back; the fourth event of the period passes, the fifth
        // meets the quota before the hour's limit.
        let later = now + 1_000_000;
        assert!(
            cells
                .check(later, &[SECOND, HOUR], quota, true)
                .exceeded
                .is_none()
        );
        assert_eq!(
            cells.check(later, &[SECOND, HOUR], quota, true).exceeded,
            Some(Exceeded::Quota)
        );
        assert_eq!(cells.count_in(202611), 4);
        // A new period starts from zero.
        let next_month = Some((Some(4), 202612));
        let verdict = cells.check(later + 1_000_000, &[SECOND, HOUR], next_month, true);
        assert!(verdict.exceeded.is_none());
    }

    #[test]
    fn a_check_that_does_not_consume_leaves_the_state_alone_and_a_refund_gives_back() {
        let mut cells = LocalCells::seeded(202611, 0);
        let quota = Some((Some(4), 202611));
        let now = 10_000_000_000;
        for _ in 0..10 {
            let verdict = cells.check(now, &[SECOND, HOUR], quota, false);
            assert!(verdict.exceeded.is_none());
        }
        assert!(
            cells
                .check(now, &[SECOND, HOUR], quota, true)
                .exceeded
                .is_none()
        );
        cells.refund(&[SECOND, HOUR], Some(202611));
        assert_eq!(cells.count_in(202611), 0);
        assert_eq!(cells.check(now, &[SECOND, HOUR], quota, true).remaining, 2);
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_wait() {
        let per_minute = Rate::per_minute(3);
        let mut tat = 0;
        let now = 10_000_000_000;
        for expected in [2, 1, 0] {
            let (next, remaining) = step(tat, now, per_minute).unwrap();
            assert_eq!(remaining, expected);
            tat = next;
        }
        let wait = step(tat, now, per_minute).unwrap_err();
        assert!(wait > Duration::from_secs(15));
    }
}
