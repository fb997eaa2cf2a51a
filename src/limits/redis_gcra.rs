//! GCRA shared through Redis: one Lua script per check, atomic, clocked by Redis's `TIME`.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Decision, Rate};

/// KEYS[1]: the key. ARGV[1]: emission interval in µs. ARGV[2]: burst tolerance in µs.
/// Returns {allowed, remaining, retry_after_µs}. A refused call writes nothing.
const GCRA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
if tat - now > tolerance then
  return {0, 0, tat - now - tolerance}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((tolerance - (new_tat - now)) / interval) + 1
if remaining < 0 then remaining = 0 end
return {1, remaining, 0}
";

/// A check that takes longer than this counts as Redis being unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

pub struct RedisLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
}

impl RedisLimiter {
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<RedisLimiter> {
        let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .context("cannot connect to REDIS_URL")?;
        Ok(RedisLimiter {
            connection,
            script: redis::Script::new(GCRA),
            prefix: prefix.to_owned(),
        })
    }

    pub async fn check(&self, class: &str, key: &str, rate: Rate) -> redis::RedisResult<Decision> {
        let interval = rate.emission_interval().as_micros();
        let tolerance = rate.period.as_micros().saturating_sub(interval);
        let (allowed, remaining, retry_us): (i64, i64, i64) = self
            .script
            .key(format!("{}:rl:{class}:{key}", self.prefix))
            .arg(interval.to_string())
            .arg(tolerance.to_string())
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(Decision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            retry_after: Duration::from_micros(u64::try_from(retry_us).unwrap_or(0)),
        })
    }
}
