//! The account limits of a gateway call: per second, per hour and per calendar month, checked
//! together and consumed only when all of them (and the caller's other conditions) pass, and
//! given back when the upstream fails. In process per account, or shared through Redis with one
//! atomic script per check; when Redis is unreachable the in-process state takes over, so limits
//! still hold per instance and credits (kept in PostgreSQL) are never affected.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The limits of the account's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    pub rps: u32,
    pub rph: u32,
    pub monthly_quota: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    PerSecond(Duration),
    PerHour(Duration),
    Monthly,
}

/// The outcome of a check.
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    pub exceeded: Option<Exceeded>,
    /// Calls still allowed this second after this one.
    pub rps_remaining: u32,
}

/// An account's in-process limit state: GCRA theoretical arrival times and the month's count.
#[derive(Debug, Default)]
pub struct LocalState {
    rps_tat: u64,
    rph_tat: u64,
    month: u32,
    month_calls: i64,
}

/// GCRA over microseconds: burst = limit, sustained rate = limit per period.
fn gcra(tat: u64, now: u64, limit: u32, period: Duration) -> (Result<u64, u64>, u32) {
    let interval = (period.as_micros() as u64 / u64::from(limit.max(1))).max(1);
    let tolerance = period.as_micros() as u64 - interval;
    let tat = tat.max(now);
    if tat - now > tolerance {
        return (Err(tat - now - tolerance), 0);
    }
    let new_tat = tat + interval;
    let remaining = (tolerance.saturating_sub(new_tat - now)) / interval;
    let remaining = if new_tat - now <= tolerance {
        remaining + 1
    } else {
        0
    };
    (Ok(new_tat), u32::try_from(remaining).unwrap_or(u32::MAX))
}

fn micros_since(start: Instant) -> u64 {
    // Offset by an hour so the first TATs are never "in the past" of zero.
    start.elapsed().as_micros() as u64 + 3_600_000_000
}

/// YYYYMM of a UTC time: the quota's month.
pub fn month_of(now: chrono::DateTime<chrono::Utc>) -> u32 {
    use chrono::Datelike;
    now.year() as u32 * 100 + now.month()
}

impl LocalState {
    pub fn seeded(month: u32, month_calls: i64) -> LocalState {
        LocalState {
            month,
            month_calls,
            ..LocalState::default()
        }
    }

    pub fn month_calls(&self, month: u32) -> i64 {
        if self.month == month {
            self.month_calls
        } else {
            0
        }
    }

    fn check(&mut self, now: u64, month: u32, limits: PlanLimits, consume: bool) -> Verdict {
        if self.month != month {
            self.month = month;
            self.month_calls = 0;
        }
        let (rps, rps_remaining) = gcra(self.rps_tat, now, limits.rps, Duration::from_secs(1));
        let (rph, _) = gcra(self.rph_tat, now, limits.rph, Duration::from_secs(3600));
        let exceeded = match (rps, rph) {
            (Err(wait), _) => Some(Exceeded::PerSecond(Duration::from_micros(wait))),
            (_, Err(wait)) => Some(Exceeded::PerHour(Duration::from_micros(wait))),
            _ if limits
                .monthly_quota
                .is_some_and(|quota| self.month_calls >= quota) =>
            {
                Some(Exceeded::Monthly)
            }
            _ => None,
        };
        if exceeded.is_none() && consume {
            self.rps_tat = rps.unwrap_or(self.rps_tat);
            self.rph_tat = rph.unwrap_or(self.rph_tat);
            self.month_calls += 1;
        }
        Verdict {
            exceeded,
            rps_remaining: if exceeded.is_some() { 0 } else { rps_remaining },
        }
    }

    fn refund(&mut self, month: u32, limits: PlanLimits) {
        let back = |tat: u64, limit: u32, period: Duration| {
            tat.saturating_sub((period.as_micros() as u64 / u64::from(limit.max(1))).max(1))
        };
        self.rps_tat = back(self.rps_tat, limits.rps, Duration::from_secs(1));
        self.rph_tat = back(self.rph_tat, limits.rph, Duration::from_secs(3600));
        if self.month == month {
            self.month_calls = (self.month_calls - 1).max(0);
        }
    }
}

/// KEYS: rps, rph, month. ARGV: rps interval µs, rps tolerance µs, rph interval µs, rph
/// tolerance µs, quota (-1: none), month seed, consume (1/0), month ttl s.
/// Returns {exceeded (0 none, 1 rps, 2 rph, 3 month), rps remaining, retry µs}.
const CHECK: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local function gcra(key, interval, tolerance)
  local tat = tonumber(redis.call('GET', key))
  if not tat or tat < now then tat = now end
  if tat - now > tolerance then return false, tat - now - tolerance, 0 end
  local new_tat = tat + interval
  local remaining = 0
  if new_tat - now <= tolerance then remaining = math.floor((tolerance - (new_tat - now)) / interval) + 1 end
  return true, new_tat, remaining
end
local rps_ok, rps_tat, rps_remaining = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if not rps_ok then return {1, 0, rps_tat} end
local rph_ok, rph_tat = gcra(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if not rph_ok then return {2, 0, rph_tat} end
local quota = tonumber(ARGV[5])
local used = tonumber(redis.call('GET', KEYS[3]))
if not used then
  used = tonumber(ARGV[6])
  redis.call('SET', KEYS[3], used, 'EX', tonumber(ARGV[8]), 'NX')
end
if quota >= 0 and used >= quota then return {3, 0, 0} end
if ARGV[7] == '1' then
  redis.call('SET', KEYS[1], string.format('%.0f', rps_tat), 'PX', 2000)
  redis.call('SET', KEYS[2], string.format('%.0f', rph_tat), 'PX', 3601000)
  redis.call('INCR', KEYS[3])
end
return {0, rps_remaining, 0}
";

/// KEYS as CHECK; ARGV: rps interval µs, rph interval µs. Gives one call back.
const REFUND: &str = r"
for i, interval in ipairs({tonumber(ARGV[1]), tonumber(ARGV[2])}) do
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat then redis.call('SET', KEYS[i], string.format('%.0f', tat - interval), 'KEEPTTL') end
end
local used = tonumber(redis.call('GET', KEYS[3]))
if used and used > 0 then redis.call('DECR', KEYS[3]) end
return 1
";

pub struct Shared {
    connection: ConnectionManager,
    check: redis::Script,
    refund: redis::Script,
    prefix: String,
}

pub struct CallLimiter {
    started: Instant,
    shared: Option<Shared>,
}

/// What the limiter needs to know about the account and the call.
pub struct Subject<'a> {
    pub user_id: uuid::Uuid,
    pub limits: PlanLimits,
    pub state: &'a Mutex<LocalState>,
    pub month: u32,
    /// The month's count as PostgreSQL knows it, to seed a shared counter that does not exist.
    pub month_seed: i64,
}

impl CallLimiter {
    pub async fn connect(redis_url: Option<&str>, prefix: &str) -> anyhow::Result<CallLimiter> {
        let shared = match redis_url {
            None => None,
            Some(url) => {
                let client =
                    redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_millis(500)))
                    .set_number_of_retries(1);
                let connection = ConnectionManager::new_with_config(client, config)
                    .await
                    .context("cannot connect to REDIS_URL")?;
                Some(Shared {
                    connection,
                    check: redis::Script::new(CHECK),
                    refund: redis::Script::new(REFUND),
                    prefix: prefix.to_owned(),
                })
            }
        };
        Ok(CallLimiter {
            started: Instant::now(),
            shared,
        })
    }

    fn keys(shared: &Shared, subject: &Subject<'_>) -> [String; 3] {
        let base = format!("{}:gw:{}", shared.prefix, subject.user_id);
        [
            format!("{base}:rps"),
            format!("{base}:rph"),
            format!("{base}:m:{}", subject.month),
        ]
    }

    /// Checks the three limits; consumes one call from each only if all pass and `consume`.
    pub async fn check(&self, subject: &Subject<'_>, consume: bool) -> Verdict {
        if let Some(shared) = &self.shared {
            match self.check_shared(shared, subject, consume).await {
                Ok(verdict) => return verdict,
                Err(error) => tracing::warn!(error = %error,
                    "Redis unavailable for gateway limits; using the in-process limits"),
            }
        }
        let now = micros_since(self.started);
        let mut state = subject
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        state.check(now, subject.month, subject.limits, consume)
    }

    async fn check_shared(
        &self,
        shared: &Shared,
        subject: &Subject<'_>,
        consume: bool,
    ) -> redis::RedisResult<Verdict> {
        let limits = subject.limits;
        let (rps_interval, rps_tolerance) = interval_and_tolerance(limits.rps, 1);
        let (rph_interval, rph_tolerance) = interval_and_tolerance(limits.rph, 3600);
        let mut invocation = shared.check.prepare_invoke();
        for key in Self::keys(shared, subject) {
            invocation.key(key);
        }
        invocation
            .arg(rps_interval)
            .arg(rps_tolerance)
            .arg(rph_interval)
            .arg(rph_tolerance)
            .arg(limits.monthly_quota.unwrap_or(-1))
            .arg(subject.month_seed)
            .arg(if consume { "1" } else { "0" })
            .arg(40 * 24 * 3600);
        let (exceeded, remaining, retry_us): (i64, i64, i64) = invocation
            .invoke_async(&mut shared.connection.clone())
            .await?;
        let wait = Duration::from_micros(u64::try_from(retry_us).unwrap_or(0));
        let exceeded = match exceeded {
            1 => Some(Exceeded::PerSecond(wait)),
            2 => Some(Exceeded::PerHour(wait)),
            3 => Some(Exceeded::Monthly),
            _ => None,
        };
        if exceeded.is_none() && consume {
            // Kept in step locally, so a fallback to in-process limits starts from the truth.
            let mut state = subject
                .state
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if state.month == subject.month {
                state.month_calls += 1;
            }
        }
        Ok(Verdict {
            exceeded,
            rps_remaining: u32::try_from(remaining).unwrap_or(0),
        })
    }

    /// Gives back the call consumed by a successful check (the upstream failed).
    pub async fn refund(&self, subject: &Subject<'_>) {
        {
            let mut state = subject
                .state
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            state.refund(subject.month, subject.limits);
        }
        if let Some(shared) = &self.shared {
            let mut invocation = shared.refund.prepare_invoke();
            for key in Self::keys(shared, subject) {
                invocation.key(key);
            }
            invocation
                .arg(interval_and_tolerance(subject.limits.rps, 1).0)
                .arg(interval_and_tolerance(subject.limits.rph, 3600).0);
            let refunded: redis::RedisResult<i64> = invocation
                .invoke_async(&mut shared.connection.clone())
                .await;
            if let Err(error) = refunded {
                tracing::warn!(error = %error, "could not give a failed call back to Redis");
            }
        }
    }
}

fn interval_and_tolerance(limit: u32, period_secs: u64) -> (u64, u64) {
    let period = period_secs * 1_000_000;
    let interval = (period / u64::from(limit.max(1))).max(1);
    (interval, period - interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PlanLimits = PlanLimits {
        rps: 3,
        rph: 5,
        monthly_quota: Some(4),
    };

    #[test]
    fn the_first_limit_that_fails_is_reported_and_nothing_is_consumed() {
        let mut state = LocalState::seeded(202611, 0);
        let now = 10_000_000_000;
        let remaining: Vec<u32> = (0..3)
            .map(|_| state.check(now, 202611, LIMITS, true).rps_remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        assert!(matches!(
            state.check(now, 202611, LIMITS, true).exceeded,
            Some(Exceeded::PerSecond(_))
        ));
        // A second later the burst is back; the fourth call of the month passes, the fifth
        // meets the quota before the hour's limit.
        let later = now + 1_000_000;
        assert!(state.check(later, 202611, LIMITS, true).exceeded.is_none());
        assert_eq!(
            state.check(later, 202611, LIMITS, true).exceeded,
            Some(Exceeded::Monthly)
        );
        assert_eq!(state.month_calls, 4);
        // A new month starts from zero.
        assert!(
            state
                .check(later + 1_000_000, 202612, LIMITS, true)
                .exceeded
                .is_none()
        );
    }

    #[test]
    fn a_check_that_does_not_consume_leaves_the_state_alone_and_a_refund_gives_back() {
        let mut state = LocalState::seeded(202611, 0);
        let now = 10_000_000_000;
        for _ in 0..10 {
            assert!(state.check(now, 202611, LIMITS, false).exceeded.is_none());
        }
        assert!(state.check(now, 202611, LIMITS, true).exceeded.is_none());
        state.refund(202611, LIMITS);
        assert_eq!(state.month_calls, 0);
        assert_eq!(state.check(now, 202611, LIMITS, true).rps_remaining, 2);
    }
}
