//! Redis for the shop's services, with the same manners as [`crate::pg`]:
//! connected lazily and again after a failure, every connect and command
//! bounded in time, and a failed connect answered from memory for a moment
//! instead of being retried by every waiting request.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::upstream::Target;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
pub const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Why Redis could not be used; the text follows "<service>'s Redis is
/// unavailable: ".
#[derive(Clone, Debug, thiserror::Error)]
pub enum KvError {
    #[error("{target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("{0}")]
    Command(String),
    #[error("no answer within {COMMAND_TIMEOUT:?}")]
    Timeout,
}

impl From<redis::RedisError> for KvError {
    fn from(e: redis::RedisError) -> Self {
        KvError::Command(e.to_string())
    }
}

pub struct Redis {
    client: redis::Client,
    target: String,
    service: &'static str,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    conn: Option<MultiplexedConnection>,
    failed: Option<(Instant, KvError)>,
}

impl Redis {
    pub fn new(target: &Target, service: &'static str) -> Result<Arc<Self>, KvError> {
        let target = target.to_string();
        let client =
            redis::Client::open(format!("redis://{target}/")).map_err(|e| KvError::Connect {
                target: target.clone(),
                reason: e.to_string(),
            })?;
        Ok(Arc::new(Redis {
            client,
            target,
            service,
            state: tokio::sync::Mutex::new(State::default()),
        }))
    }

    /// A connection, and whether it was made just now (so its user may
    /// seed what it needs once per connection).
    pub async fn connection(&self) -> Result<(MultiplexedConnection, bool), KvError> {
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            return Ok((conn.clone(), false));
        }
        if let Some((at, e)) = &state.failed {
            if at.elapsed() < RETRY_AFTER {
                return Err(e.clone());
            }
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT);
        let made = tokio::time::timeout(
            CONNECT_TIMEOUT + Duration::from_millis(500),
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let error = |reason: String| KvError::Connect {
            target: self.target.clone(),
            reason,
        };
        match made {
            Ok(Ok(conn)) => {
                if state.failed.take().is_some() {
                    tracing::info!(service = self.service, "Redis reachable again");
                }
                state.conn = Some(conn.clone());
                Ok((conn, true))
            }
            Ok(Err(e)) => Err(self.failed(&mut state, error(e.to_string()))),
            Err(_) => Err(self.failed(
                &mut state,
                error(format!("no connection within {CONNECT_TIMEOUT:?}")),
            )),
        }
    }

    fn failed(&self, state: &mut State, e: KvError) -> KvError {
        if state.failed.is_none() {
            tracing::warn!(service = self.service, error = %e, "Redis unavailable");
        }
        state.failed = Some((Instant::now(), e.clone()));
        e
    }

    /// Runs `work` within [`COMMAND_TIMEOUT`]; after a connection failure
    /// the connection is dropped, so the next use makes a new one.
    pub async fn run<T, F>(
        &self,
        work: impl FnOnce(MultiplexedConnection, bool) -> F,
    ) -> Result<T, KvError>
    where
        F: Future<Output = Result<T, redis::RedisError>>,
    {
        let (conn, fresh) = self.connection().await?;
        let result = match tokio::time::timeout(COMMAND_TIMEOUT, work(conn, fresh)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if !(e.is_connection_dropped() || e.is_timeout() || e.is_io_error()) => {
                return Err(e.into())
            }
            Ok(Err(e)) => KvError::from(e),
            Err(_) => KvError::Timeout,
        };
        self.state.lock().await.conn = None;
        Err(result)
    }
}
