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
