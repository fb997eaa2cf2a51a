//! The limits of a gateway call: the account plan's per second and per hour rates and its
//! monthly quota, one bundle of the shared limiter, checked together and consumed only when all
//! of them (and the caller's other conditions) pass, and given back when the upstream fails.

use std::time::Duration;

use crate::limits::Rate;

/// The limits of the account's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    pub rps: u32,
    pub rph: u32,
    pub monthly_quota: Option<i64>,
}

impl PlanLimits {
    /// A plan's limits; without any plan, one call a second and a hundred an hour.
    pub fn of(plan: Option<crate::plans::Plan>) -> PlanLimits {
        plan.map_or(
            PlanLimits {
                rps: 1,
                rph: 100,
                monthly_quota: Some(0),
            },
            |plan| PlanLimits {
                rps: u32::try_from(plan.rps_limit).unwrap_or(1).max(1),
                rph: u32::try_from(plan.rph_limit).unwrap_or(1).max(1),
                monthly_quota: plan.monthly_quota,
            },
        )
    }

    /// The bundle's rates: per second first (its remainder is `X-RateLimit-Remaining`), then
    /// per hour.
    pub fn rates(self) -> [Rate; 2] {
        [Rate::per_second(self.rps), Rate::per_hour(self.rph)]
    }
}

/// A month's shared counter outlives the month by a little.
pub const MONTH_COUNTER_TTL: Duration = Duration::from_secs(40 * 24 * 3600);

/// YYYYMM of a UTC time: the quota's month.
pub fn month_of(now: chrono::DateTime<chrono::Utc>) -> u32 {
    use chrono::Datelike;
    now.year() as u32 * 100 + now.month()
}

/// The first instant of `now`'s UTC month.
pub fn month_start(now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{Datelike, TimeZone};
    chrono::Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .expect("the first of a month at midnight UTC exists")
}

/// Whole seconds from `now` to the first instant of the next UTC month, when an exhausted
/// monthly quota comes back: what a refused caller should wait (`Retry-After`).
pub fn secs_until_next_month(now: chrono::DateTime<chrono::Utc>) -> u64 {
    use chrono::{Datelike, TimeZone};
    let (year, month) = match now.month() {
        12 => (now.year() + 1, 1),
        month => (now.year(), month + 1),
    };
    let next = chrono::Utc
        .with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .expect("the first of a month at midnight UTC exists");
    let wait = next - now;
    // Rounded up, so a caller that waits exactly this long is in the new month.
    let secs = wait.num_seconds() + i64::from(wait.subsec_nanos() > 0);
    secs.max(1) as u64
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_quota_comes_back_at_the_start_of_the_next_utc_month() {
        let at = |y, m, d, h, min, s| chrono::Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap();
        assert_eq!(secs_until_next_month(at(2026, 11, 30, 23, 59, 0)), 60);
        assert_eq!(secs_until_next_month(at(2026, 12, 31, 23, 0, 0)), 3600);
        assert_eq!(
            secs_until_next_month(at(2027, 2, 1, 0, 0, 0)),
            28 * 24 * 3600
        );
        let fraction = at(2026, 11, 30, 23, 59, 58) + chrono::Duration::milliseconds(500);
        assert_eq!(secs_until_next_month(fraction), 2);
    }
}
