//! Bundles of limits shared through Redis: one atomic script checks every rate and the quota of
//! a bundle and consumes from all of them only when all pass, clocked by Redis's `TIME` so the
//! instances' clocks do not matter. The service's one Redis connection lives here.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Bundle, Exceeded, Verdict};

/// KEYS[1..n]: a GCRA cell per rate; KEYS[n+1]: the quota's counter when ARGV[2] is '1'.
/// ARGV: n, has quota, consume ('1'/'0'), quota limit (-1: none), quota seed, quota ttl s,
/// then for each rate its emission interval and burst tolerance in µs.
/// Returns {failed (0: none, i: rate i, n+1: the quota), remaining of rate 1, retry µs}.
/// A refused call writes nothing (a counter seeded from the database excepted).
const CHECK: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local n = tonumber(ARGV[1])
local next_tats = {}
local remaining = 0
for i = 1, n do
  local interval = tonumber(ARGV[5 + 2 * i])
  local tolerance = tonumber(ARGV[6 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if not tat or tat < now then tat = now end
  if tat - now > tolerance then return {i, 0, tat - now - tolerance} end
  next_tats[i] = tat + interval
  if i == 1 and next_tats[i] - now <= tolerance then
    remaining = math.floor((tolerance - (next_tats[i] - now)) / interval) + 1
  end
end
if ARGV[2] == '1' then
  local used = tonumber(redis.call('GET', KEYS[n + 1]))
  if not used then
    used = tonumber(ARGV[5])
    redis.call('SET', KEYS[n + 1], used, 'EX', tonumber(ARGV[6]), 'NX')
  end
  local limit = tonumber(ARGV[4])
  if limit >= 0 and used >= limit then return {n + 1, 0, 0} end
end
if ARGV[3] == '1' then
  for i = 1, n do
    local ttl = math.ceil((next_tats[i] - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', next_tats[i]), 'PX', ttl)
  end
  if ARGV[2] == '1' then redis.call('INCR', KEYS[n + 1]) end
end
return {0, remaining, 0}
";

/// KEYS as CHECK. ARGV: n, has quota, then each rate's emission interval in µs.
/// Gives one consumed event back.
const REFUND: &str = r"
local n = tonumber(ARGV[1])
for i = 1, n do
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat then
    redis.call('SET', KEYS[i], string.format('%.0f', tat - tonumber(ARGV[2 + i])), 'KEEPTTL')
  end
end
if ARGV[2] == '1' then
  local used = tonumber(redis.call('GET', KEYS[n + 1]))
  if used and used > 0 then redis.call('DECR', KEYS[n + 1]) end
end
return 1
";

/// A check that takes longer than this counts as Redis being unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

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

    pub async fn check(&self, bundle: &Bundle<'_>, consume: bool) -> redis::RedisResult<Verdict> {
        let mut invocation = self.check.prepare_invoke();
        self.keys(bundle, &mut invocation);
        let quota = bundle.quota.as_ref();
        invocation
            .arg(bundle.rates.len())
            .arg(if quota.is_some() { "1" } else { "0" })
            .arg(if consume { "1" } else { "0" })
            .arg(quota.and_then(|quota| quota.limit).unwrap_or(-1))
            .arg(quota.map_or(0, |quota| quota.seed))
            .arg(quota.map_or(1, |quota| quota.ttl.as_secs().max(1)));
        for rate in bundle.rates {
            invocation.arg(rate.interval_us()).arg(rate.tolerance_us());
        }
        let (failed, remaining, retry_us): (usize, i64, i64) = invocation
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
        Ok(Verdict {
            exceeded,
            remaining: u32::try_from(remaining).unwrap_or(0),
        })
    }

    pub async fn refund(&self, bundle: &Bundle<'_>) -> redis::RedisResult<()> {
        let mut invocation = self.refund.prepare_invoke();
        self.keys(bundle, &mut invocation);
        invocation
            .arg(bundle.rates.len())
            .arg(if bundle.quota.is_some() { "1" } else { "0" });
        for rate in bundle.rates {
            invocation.arg(rate.interval_us());
        }
        invocation
            .invoke_async::<i64>(&mut self.connection.clone())
            .await
            .map(drop)
    }
}
