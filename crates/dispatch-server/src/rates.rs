//! `--rate-limit-store redis://…`: model rate buckets (`RATE_LIMIT`) in
//! Redis instead of the database. The same sliding-window log as the
//! database keeps (see [`dispatch_store::LimitStore`]): per bucket a sorted
//! set of grants by time and a hash of their tokens, plus the time a
//! provider's 429 blocks it until. Each admission is one Lua script, which
//! Redis runs atomically: concurrent workers never admit more than the limit.
//! Keys live under `dispatch:rate:` on a single Redis (not a Redis Cluster:
//! a grant is settled by id, across keys).

use dispatch_core::Ts;
use dispatch_store::{BucketLimits, RateGrant, StoreError, StoreResult};
use redis::aio::MultiplexedConnection;

/// Admits one call, or says until when to wait (see the module).
/// KEYS: grants (zset), tokens (hash), blocked-until, grant sequence,
/// grant → bucket (hash), the tokens of every grant kept (a counter). ARGV: now, estimated tokens, request limit and
/// window, token limit and window (-1: none), horizon.
const ACQUIRE: &str = r#"
local now = tonumber(ARGV[1])
local est = tonumber(ARGV[2])
local rl, rw = tonumber(ARGV[3]), tonumber(ARGV[4])
local tl, tw = tonumber(ARGV[5]), tonumber(ARGV[6])
local horizon = tonumber(ARGV[7])
local blocked = tonumber(redis.call('GET', KEYS[3]) or '0')
if blocked > now then return {0, blocked} end
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - horizon)
for _, id in ipairs(old) do
  local t = tonumber(redis.call('HGET', KEYS[2], id) or '0')
  redis.call('DECRBY', KEYS[6], t)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[5], id)
end
local wait = now
if rl > 0 then
  local n = redis.call('ZCOUNT', KEYS[1], '(' .. (now - rw), '+inf')
  if n >= rl then
    local found = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - rw), '+inf', 'WITHSCORES', 'LIMIT', n - rl, 1)
    local at = tonumber(found[2])
    if at + rw > wait then wait = at + rw end
  end
end
local want = math.min(est, tl)
-- Every grant kept is inside a token window as long as the horizon: the
-- running total answers without reading them.
local fits = tl > 0 and tw >= horizon and tonumber(redis.call('GET', KEYS[6]) or '0') + want <= tl
if tl > 0 and not fits then
  local inside = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - tw), '+inf', 'WITHSCORES')
  local used, list = 0, {}
  for i = 1, #inside, 2 do
    local t = tonumber(redis.call('HGET', KEYS[2], inside[i]) or '0')
    used = used + t
    list[#list + 1] = {tonumber(inside[i + 1]), t}
  end
  for _, g in ipairs(list) do
    if used + want <= tl then break end
    used = used - g[2]
    if g[1] + tw > wait then wait = g[1] + tw end
  end
end
if wait > now then return {0, wait} end
local id = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[1], now, id)
redis.call('HSET', KEYS[2], id, est)
redis.call('INCRBY', KEYS[6], est)
redis.call('HSET', KEYS[5], id, KEYS[1])
for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], horizon + 60000) end
redis.call('PEXPIRE', KEYS[6], horizon + 60000)
return {1, id}
"#;

/// Settles grant ARGV[1] to ARGV[2] tokens. KEYS: grant → bucket (hash).
const SETTLE: &str = r#"
local bucket = redis.call('HGET', KEYS[1], ARGV[1])
if not bucket then return 0 end
local was = redis.call('HGET', bucket .. ':tokens', ARGV[1])
if was then
  redis.call('HSET', bucket .. ':tokens', ARGV[1], ARGV[2])
  redis.call('INCRBY', bucket .. ':used', tonumber(ARGV[2]) - tonumber(was))
end
return 0
"#;

/// Blocks a bucket until ARGV[1] unless it is blocked longer. KEYS: blocked-until.
const BLOCK: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local untl = tonumber(ARGV[1])
if untl > cur then
  local t = redis.call('TIME')
  local ttl = math.max(untl - (t[1] * 1000 + math.floor(t[2] / 1000)), 0) + 60000
  redis.call('SET', KEYS[1], untl, 'PX', ttl)
end
return 0
"#;

/// Where the keys live unless told otherwise.
const PREFIX: &str = "dispatch:rate:";

/// Rate buckets in one Redis.
#[derive(Clone)]
pub struct RedisRates {
    conn: MultiplexedConnection,
    url: String,
    /// Every key starts with this.
    prefix: String,
}

impl std::fmt::Debug for RedisRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRates")
            .field("url", &self.url)
            .finish()
    }
}

impl RedisRates {
    /// Connects and pings: `Err` is one line saying what is wrong.
    pub async fn connect(url: &str) -> Result<RedisRates, String> {
        let client = redis::Client::open(url).map_err(|e| {
            format!(
                "--rate-limit-store `{url}` is not a Redis URL: {e} (hint: redis://127.0.0.1:6379)"
            )
        })?;
        let cannot = |e: redis::RedisError| {
            format!(
                "--rate-limit-store: cannot reach Redis at {url}: {e} (hint: start Redis there, or leave the flag out to keep rate buckets in the database)"
            )
        };
        let connect = client.get_multiplexed_async_connection();
        let mut conn = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
            .await
            .map_err(|_| {
                format!(
                    "--rate-limit-store: Redis at {url} did not answer within 5 s (hint: start Redis there, or leave the flag out to keep rate buckets in the database)"
                )
            })?
            .map_err(cannot)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(cannot)?;
        Ok(RedisRates {
            conn,
            url: url.to_string(),
            prefix: PREFIX.to_string(),
        })
    }

    /// Keys under `prefix` instead of `dispatch:rate:` (tests keep apart).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    fn failed(&self, e: redis::RedisError) -> StoreError {
        StoreError::Unavailable {
            path: self.url.clone(),
            message: e.to_string(),
        }
    }

    /// As [`dispatch_store::LimitStore::rate_acquire`].
    pub async fn acquire(
        &self,
        bucket: &str,
        limits: &BucketLimits,
        est_tokens: u64,
        now: Ts,
    ) -> StoreResult<RateGrant> {
        let key = format!("{}{bucket}", self.prefix);
        let rate = |r: Option<dispatch_core::concurrency::Rate>| {
            r.map_or((-1i64, 0i64), |r| {
                (
                    i64::try_from(r.limit).unwrap_or(i64::MAX),
                    i64::try_from(r.window_ms).unwrap_or(i64::MAX),
                )
            })
        };
        let (rl, rw) = rate(limits.requests);
        let (tl, tw) = rate(limits.tokens);
        let (granted, value): (i64, i64) = redis::cmd("EVAL")
            .arg(ACQUIRE)
            .arg(6)
            .arg(&key)
            .arg(format!("{key}:tokens"))
            .arg(format!("{key}:blocked"))
            .arg(format!("{}seq", self.prefix))
            .arg(format!("{}grants", self.prefix))
            .arg(format!("{key}:used"))
            .arg(now)
            .arg(i64::try_from(est_tokens).unwrap_or(i64::MAX))
            .arg(rl)
            .arg(rw)
            .arg(tl)
            .arg(tw)
            .arg(limits.horizon_ms())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(match granted {
            1 => RateGrant::Granted { grant: value },
            _ => RateGrant::WaitUntil(value),
        })
    }

    /// As [`dispatch_store::LimitStore::rate_settle`].
    pub async fn settle(&self, grant: i64, tokens: u64) -> StoreResult<()> {
        let _: i64 = redis::cmd("EVAL")
            .arg(SETTLE)
            .arg(1)
            .arg(format!("{}grants", self.prefix))
            .arg(grant)
            .arg(i64::try_from(tokens).unwrap_or(i64::MAX))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// As [`dispatch_store::LimitStore::rate_block`].
    pub async fn block(&self, bucket: &str, until: Ts) -> StoreResult<()> {
        let _: i64 = redis::cmd("EVAL")
            .arg(BLOCK)
            .arg(1)
            .arg(format!("{}{bucket}:blocked", self.prefix))
            .arg(until)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }
}
