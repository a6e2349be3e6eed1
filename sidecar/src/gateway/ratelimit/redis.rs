//! Limits shared by several gateway replicas through Redis.
//!
//! Each decision is one round trip: a Lua script, run atomically by Redis,
//! does the same GCRA step as the local limiter on one key, with Redis'
//! own clock (`TIME`), so the replicas' clocks never matter, and sets the
//! key to expire when its bucket is full again, so idle keys vanish. Keys
//! are `mycel:rl:<policy>:<client key>`, the client key digested when long
//! (`stored_key`); one key per call also keeps the script valid on Redis
//! Cluster. Needs Redis 5 or later: a script that reads `TIME` and then
//! writes must replicate its effects, not itself, which is the default
//! from 5 on (and the only way from 7 on).
//!
//! The client is this module's own RESP over a Tokio TCP stream
//! (`conn.rs`, `resp.rs`) rather than the `redis` crate: the limiter needs
//! three commands, and the crate would add a URL and IDNA stack and a
//! parser combinator library to the proxy for them; owning the connection
//! also keeps its behaviour when Redis is slow or down (fail at once,
//! bounded queues) in plain view.
//!
//! Every decision has a deadline ([`RedisConfig::timeout`]). When Redis
//! fails to answer in time, the policy's [`FailureMode`] decides, and the
//! failure is counted ([`GlobalLimiter::failures`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::conn::{Conn, ConnSettings};
use super::resp::Reply;
use super::{stored_key, Decision, Limit, Step};

/// The GCRA step of `gcra` (ratelimit.rs) in microseconds of Redis' clock.
/// KEYS[1]: the key. ARGV[1]: the interval, ARGV[2]: the capacity (burst ×
/// interval), both in µs. Returns {1, remaining, reset} or {0, retry_after,
/// reset}, times in µs. Numbers stay integral and below 2^53, so Lua's
/// doubles are exact; the TAT is written with `%.0f` so that it is stored
/// as an exact integer whatever number format Redis' Lua would use.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then tat = now end
local ahead = tat + interval - now
if ahead > capacity then
  return {0, ahead - capacity, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', now + ahead), 'PX', math.ceil(ahead / 1000))
return {1, math.floor((capacity - ahead) / interval), ahead}
"#;

/// Prefix of every key the limiter writes.
pub const KEY_PREFIX: &str = "mycel:rl:";
/// Longest policy name.
pub const MAX_POLICY_NAME: usize = 64;

/// What a limit does when Redis cannot be asked (down, slow, overloaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureMode {
    /// Let the request through, without `RateLimit-*` headers: an outage
    /// of the limiter is not an outage of the service. The failure is
    /// counted.
    Open,
    /// Refuse the request with 503 Service Unavailable and `Retry-After:
    /// 1`. Not 429: the client did nothing wrong and has no quota to be
    /// told about, a 429 would make well-behaved clients slow down on a
    /// false premise, and a 503 is counted and alerted on as the gateway's
    /// failure, which it is.
    Closed,
}

/// Where Redis is and how long to wait for it.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `host:port`.
    pub addr: String,
    /// Deadline of one decision, from the call to the answer.
    pub timeout: Duration,
    /// Deadline of a new connection (TCP and loading the script); commands
    /// meanwhile fail at once.
    pub connect_timeout: Duration,
    /// Decisions sent and not yet answered: beyond it, decisions fail at
    /// once (counted as overloaded) instead of queueing.
    pub max_in_flight: usize,
}

impl RedisConfig {
    pub fn new(addr: impl Into<String>) -> RedisConfig {
        RedisConfig {
            addr: addr.into(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            max_in_flight: 10_000,
        }
    }
}

/// Why a decision could not be had from Redis.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    #[error("no connection to Redis (reconnecting)")]
    NotConnected,
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("too many Redis commands waiting")]
    Overloaded,
    #[error("connection to Redis lost: {0}")]
    ConnectionLost(String),
    #[error("Redis answered an error: {0}")]
    Server(String),
    #[error("unexpected answer from Redis: {0}")]
    Protocol(String),
}

/// A named limit applied through Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalPolicy {
    name: String,
    limit: Limit,
    on_failure: FailureMode,
    interval_us: String,
    capacity_us: String,
}

/// Why a policy name is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyNameError {
    #[error("policy name is empty")]
    Empty,
    #[error("policy name is {0} bytes, more than {MAX_POLICY_NAME}")]
    TooLong(usize),
    #[error("policy name {0:?} has a character other than letters, digits, '.', '_', '-' and '/'")]
    Character(String),
}

impl GlobalPolicy {
    /// `name` becomes part of the Redis keys: every replica must give the
    /// same limit under the same name (a name shared by two different
    /// limits would mix their buckets).
    pub fn new(
        name: &str,
        limit: Limit,
        on_failure: FailureMode,
    ) -> Result<GlobalPolicy, PolicyNameError> {
        if name.is_empty() {
            return Err(PolicyNameError::Empty);
        }
        if name.len() > MAX_POLICY_NAME {
            return Err(PolicyNameError::TooLong(name.len()));
        }
        // No ':', which separates the policy from the client key.
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        {
            return Err(PolicyNameError::Character(name.to_string()));
        }
        // Whole microseconds: Limit guarantees an interval of at least 1 µs.
        let interval_us = micros_rounded(limit.interval()).max(1);
        let capacity_us = interval_us * u64::from(limit.burst());
        Ok(GlobalPolicy {
            name: name.to_string(),
            limit,
            on_failure,
            interval_us: interval_us.to_string(),
            capacity_us: capacity_us.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    pub fn on_failure(&self) -> FailureMode {
        self.on_failure
    }

    /// The Redis key of a client key under this policy.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{KEY_PREFIX}{}:{}", self.name, stored_key(key))
    }
}

fn micros_rounded(d: Duration) -> u64 {
    u64::try_from((d.as_nanos() + 500) / 1000).unwrap_or(u64::MAX)
}

/// The answer for one request under a global policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Redis decided.
    Decided(Decision),
    /// Redis could not be asked and the policy fails open: let it through
    /// (no `RateLimit-*` headers, nothing is known).
    FailedOpen,
    /// Redis could not be asked and the policy fails closed: 503.
    FailedClosed,
}

impl Outcome {
    pub fn is_allowed(&self) -> bool {
        match self {
            Outcome::Decided(d) => d.is_allowed(),
            Outcome::FailedOpen => true,
            Outcome::FailedClosed => false,
        }
    }

    /// The status to answer with instead of forwarding, if any.
    pub fn refusal(&self) -> Option<StatusCode> {
        match self {
            Outcome::Decided(Decision::Limited { .. }) => Some(StatusCode::TOO_MANY_REQUESTS),
            Outcome::FailedClosed => Some(StatusCode::SERVICE_UNAVAILABLE),
            Outcome::Decided(Decision::Allowed { .. }) | Outcome::FailedOpen => None,
        }
    }
}

/// Failures counted since the limiter started, for the metrics.
#[derive(Debug, Default)]
pub struct FailureCounters {
    not_connected: AtomicU64,
    timeout: AtomicU64,
    overloaded: AtomicU64,
    error: AtomicU64,
    allowed_open: AtomicU64,
    refused_closed: AtomicU64,
}

/// A snapshot of [`FailureCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureCounts {
    /// No connection (Redis down, or reconnecting).
    pub not_connected: u64,
    /// No answer within the timeout.
    pub timeout: u64,
    /// Too many decisions waiting on Redis.
    pub overloaded: u64,
    /// The connection broke mid-command, an error reply, or a reply that
    /// makes no sense.
    pub error: u64,
    /// Requests let through by [`FailureMode::Open`].
    pub allowed_open: u64,
    /// Requests refused by [`FailureMode::Closed`].
    pub refused_closed: u64,
}

impl FailureCounts {
    /// Failed decisions, whatever the cause.
    pub fn total(&self) -> u64 {
        self.not_connected + self.timeout + self.overloaded + self.error
    }
}

impl FailureCounters {
    pub fn snapshot(&self) -> FailureCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FailureCounts {
            not_connected: get(&self.not_connected),
            timeout: get(&self.timeout),
            overloaded: get(&self.overloaded),
            error: get(&self.error),
            allowed_open: get(&self.allowed_open),
            refused_closed: get(&self.refused_closed),
        }
    }

    fn count(&self, e: &RedisError, mode: FailureMode) {
        let cause = match e {
            RedisError::NotConnected => &self.not_connected,
            RedisError::Timeout(_) => &self.timeout,
            RedisError::Overloaded => &self.overloaded,
            RedisError::ConnectionLost(_) | RedisError::Server(_) | RedisError::Protocol(_) => {
                &self.error
            }
        };
        cause.fetch_add(1, Ordering::Relaxed);
        match mode {
            FailureMode::Open => &self.allowed_open,
            FailureMode::Closed => &self.refused_closed,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// One Redis connection shared by every global policy of a gateway.
/// Cheap to clone (the clones share the connection and the counters).
#[derive(Clone, Debug)]
pub struct GlobalLimiter {
    conn: Conn,
    timeout: Duration,
    failures: Arc<FailureCounters>,
}

impl GlobalLimiter {
    /// Starts connecting in the background (needs a Tokio runtime);
    /// decisions before the connection is up fail by their policy.
    pub fn new(config: RedisConfig) -> GlobalLimiter {
        let conn = Conn::spawn(
            ConnSettings {
                addr: config.addr,
                connect_timeout: config.connect_timeout,
                max_in_flight: config.max_in_flight.max(1),
            },
            SCRIPT,
        );
        GlobalLimiter {
            conn,
            timeout: config.timeout,
            failures: Arc::default(),
        }
    }

    /// Counts one request of `key` under `policy`; on failure the policy's
    /// [`FailureMode`] answers, and the failure is counted and logged at
    /// debug (the connection logs its state changes).
    pub async fn check(&self, policy: &GlobalPolicy, key: &str) -> Outcome {
        match self.try_check(policy, key).await {
            Ok(decision) => Outcome::Decided(decision),
            Err(e) => {
                self.failures.count(&e, policy.on_failure);
                tracing::debug!(policy = %policy.name, error = %e, "rate limit: Redis failed");
                match policy.on_failure {
                    FailureMode::Open => Outcome::FailedOpen,
                    FailureMode::Closed => Outcome::FailedClosed,
                }
            }
        }
    }

    /// [`check`](Self::check) without the failure mode and not counted.
    pub async fn try_check(
        &self,
        policy: &GlobalPolicy,
        key: &str,
    ) -> Result<Decision, RedisError> {
        let key = policy.redis_key(key);
        tokio::time::timeout(self.timeout, self.run_script(policy, &key))
            .await
            .map_err(|_| RedisError::Timeout(self.timeout))?
    }

    /// Failures so far; shared, so the metrics can keep it.
    pub fn failures(&self) -> Arc<FailureCounters> {
        self.failures.clone()
    }

    /// `EVALSHA`, and `EVAL` (which also caches the script) when Redis
    /// does not know the script: restarted, flushed, or failed over.
    async fn run_script(&self, policy: &GlobalPolicy, key: &str) -> Result<Decision, RedisError> {
        let args = [
            b"1".as_slice(),
            key.as_bytes(),
            policy.interval_us.as_bytes(),
            policy.capacity_us.as_bytes(),
        ];
        if let Some(sha) = self.conn.script_sha() {
            let reply = self
                .conn
                .call(&[&[b"EVALSHA".as_slice(), sha.as_bytes()], &args[..]].concat())
                .await?;
            match reply {
                Reply::Error(e) if e.starts_with("NOSCRIPT") => {}
                reply => return decision(reply),
            }
        }
        let reply = self
            .conn
            .call(&[&[b"EVAL".as_slice(), SCRIPT.as_bytes()], &args[..]].concat())
            .await?;
        decision(reply)
    }

    /// Sends any command (tests, and a readiness check later).
    #[cfg(test)]
    pub(crate) async fn raw(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        tokio::time::timeout(self.timeout, self.conn.call(args))
            .await
            .map_err(|_| RedisError::Timeout(self.timeout))?
    }
}

/// The script's reply as a decision.
fn decision(reply: Reply) -> Result<Decision, RedisError> {
    let items = match reply {
        Reply::Array(Some(items)) => items,
        Reply::Error(e) => return Err(RedisError::Server(e)),
        other => return Err(RedisError::Protocol(format!("script answered {other}"))),
    };
    let numbers: Vec<u64> = items
        .iter()
        .filter_map(|r| match r {
            Reply::Integer(n) => u64::try_from(*n).ok(),
            _ => None,
        })
        .collect();
    let step = match numbers[..] {
        [1, remaining, reset] if items.len() == 3 => Step::Allowed {
            remaining,
            reset,
            // Stored by the script; not needed here.
            new_tat: 0,
        },
        [0, retry_after, reset] if items.len() == 3 => Step::Limited { retry_after, reset },
        _ => {
            return Err(RedisError::Protocol(format!(
                "script answered {items:?}, not three non-negative integers"
            )))
        }
    };
    Ok(step.decision(Duration::from_micros))
}

#[cfg(test)]
mod tests;
