//! Bundles of limits shared through Redis: one atomic script checks every rate and the quota of
//! a bundle and consumes from all of them only when all pass, clocked by Redis's `TIME` so the
//! instances' clocks do not matter. The service's one Redis connection lives here.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Bundle, Exceeded, Verdict};

/// KEYS[1..n]: a GCRA cell per rate; KEYS[n+1]: the quota's counter when ARGV[2] is '1'.
/// ARGV: n, has quota, events wanted (0: only check that one would pass), quota limit (-1:
/// none), quota seed, quota ttl s, then for each rate its emission interval and burst tolerance
/// in µs. Grants as many of the wanted events as every limit allows at once, at least one.
/// Returns {failed (0: none, i: rate i, n+1: the quota), remaining of rate 1 after the granted
/// events, retry µs, events granted}. A refused call writes nothing (a counter seeded from the
/// database excepted).
const CHECK: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local n = tonumber(ARGV[1])
local wanted = tonumber(ARGV[3])
local granted = math.max(wanted, 1)
local tats = {}
local first_allows = 0
for i = 1, n do
  local interval = tonumber(ARGV[5 + 2 * i])
  local tolerance = tonumber(ARGV[6 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if not tat or tat < now then tat = now end
  if tat - now > tolerance then return {i, 0, tat - now - tolerance, 0} end
  tats[i] = tat
  local allows = math.floor((tolerance - (tat - now)) / interval) + 1
  if i == 1 then first_allows = allows end
  granted = math.min(granted, allows)
end
if ARGV[2] == '1' then
  local used = tonumber(redis.call('GET', KEYS[n + 1]))
  if not used then
    used = tonumber(ARGV[5])
    redis.call('SET', KEYS[n + 1], used, 'EX', tonumber(ARGV[6]), 'NX')
  end
  local limit = tonumber(ARGV[4])
  if limit >= 0 then
    if used >= limit then return {n + 1, 0, 0, 0} end
    granted = math.min(granted, limit - used)
  end
end
if wanted == 0 then return {0, math.max(first_allows - 1, 0), 0, 0} end
for i = 1, n do
  local next_tat = tats[i] + granted * tonumber(ARGV[5 + 2 * i])
  local ttl = math.ceil((next_tat - now) / 1000) + 1
  redis.call('SET', KEYS[i], string.format('%.0f', next_tat), 'PX', ttl)
end
if ARGV[2] == '1' then redis.call('INCRBY', KEYS[n + 1], granted) end
return {0, math.max(first_allows - granted, 0), 0, granted}
";

/// KEYS as CHECK. ARGV: n, has quota, events, then each rate's emission interval in µs.
/// Gives consumed events back.
const REFUND: &str = r"
local n = tonumber(ARGV[1])
local events = tonumber(ARGV[3])
for i = 1, n do
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat then
    local back = tat - events * tonumber(ARGV[3 + i])
    redis.call('SET', KEYS[i], string.format('%.0f', back), 'KEEPTTL')
  end
end
if ARGV[2] == '1' then
  local used = tonumber(redis.call('GET', KEYS[n + 1]))
  if used and used > 0 then redis.call('SET', KEYS[n + 1], math.max(used - events, 0), 'KEEPTTL') end
end
return 1
";

/// A check that takes longer than this counts as Redis being unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    check: redis::Script,
    refund: redis::Script,
    prefix: String,
}

impl RedisStore {
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<RedisStore> {
        let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .context("cannot connect to REDIS_URL")?;
        Ok(RedisStore {
            connection,
            check: redis::Script::new(CHECK),
            refund: redis::Script::new(REFUND),
            prefix: prefix.to_owned(),
        })
    }

    fn keys(&self, bundle: &Bundle<'_>, invocation: &mut redis::ScriptInvocation<'_>) {
        let base = format!("{}:rl:{}:{}", self.prefix, bundle.class, bundle.key);
        for index in 0..bundle.rates.len() {
            invocation.key(format!("{base}:{index}"));
        }
        if let Some(quota) = &bundle.quota {
            invocation.key(format!("{base}:q{}", quota.period));
        }
    }

    /// Checks `bundle` and takes up to `wanted` events of it (none: only checks that one would
    /// pass); returns the verdict and the events granted.
    pub async fn check(
        &self,
        bundle: &Bundle<'_>,
        wanted: u32,
    ) -> redis::RedisResult<(Verdict, u32)> {
        let mut invocation = self.check.prepare_invoke();
        self.keys(bundle, &mut invocation);
        let quota = bundle.quota.as_ref();
        invocation
            .arg(bundle.rates.len())
            .arg(if quota.is_some() { "1" } else { "0" })
            .arg(wanted)
            .arg(quota.and_then(|quota| quota.limit).unwrap_or(-1))
            .arg(quota.map_or(0, |quota| quota.seed))
            .arg(quota.map_or(1, |quota| quota.ttl.as_secs().max(1)));
        for rate in bundle.rates {
            invocation.arg(rate.interval_us()).arg(rate.tolerance_us());
        }
        let (failed, remaining, retry_us, granted): (usize, i64, i64, u32) = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        let exceeded = match failed {
            0 => None,
            index if index <= bundle.rates.len() => Some(Exceeded::Rate {
                index: index - 1,
                retry_after: Duration::from_micros(u64::try_from(retry_us).unwrap_or(0)),
            }),
            _ => Some(Exceeded::Quota),
        };
        let verdict = Verdict {
            exceeded,
            remaining: u32::try_from(remaining).unwrap_or(0),
        };
        Ok((verdict, granted))
    }

    /// Gives `events` consumed events of `bundle` back.
    pub async fn refund(&self, bundle: &Bundle<'_>, events: u32) -> redis::RedisResult<()> {
        let mut invocation = self.refund.prepare_invoke();
        self.keys(bundle, &mut invocation);
        invocation
            .arg(bundle.rates.len())
            .arg(if bundle.quota.is_some() { "1" } else { "0" })
            .arg(events);
        for rate in bundle.rates {
            invocation.arg(rate.interval_us());
        }
        invocation
            .invoke_async::<i64>(&mut self.connection.clone())
            .await
            .map(drop)
    }
}
