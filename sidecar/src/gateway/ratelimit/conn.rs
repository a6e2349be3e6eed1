//! One pipelined connection to Redis, kept by a background task.
//!
//! Callers hand a command to the task through a bounded channel and wait
//! for its reply on a oneshot; the task writes commands as they come
//! (batched when several are waiting) and matches replies to callers in
//! order, which Redis guarantees on one connection. So a decision is one
//! round trip, concurrent decisions share the connection, and no lock is
//! ever held across an await.
//!
//! While there is no connection (connecting, or waiting to retry after a
//! failure) the task answers every command at once with
//! [`RedisError::NotConnected`]: callers fall back to their failure mode
//! without waiting out their timeout while Redis is down.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::redis::RedisError;
use super::resp::{self, Reply};
use crate::core::backoff::Backoff;

/// Waits between connection attempts: short, so limiting resumes soon
/// after Redis is back, jittered so replicas do not reconnect in step.
const RECONNECT: Backoff = Backoff {
    min: Duration::from_millis(50),
    max: Duration::from_secs(1),
};
/// A connection whose oldest command has had no reply for this long is
/// dropped and made anew (Redis hung, or a half-open TCP connection).
const STALL: Duration = Duration::from_secs(1);
/// Most commands written to the task in one batch.
const BATCH: usize = 64;
/// Commands waiting to be written: beyond it, callers fail at once.
const QUEUE: usize = 1024;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub(crate) struct ConnSettings {
    pub addr: String,
    pub connect_timeout: Duration,
    /// Commands written and not yet answered: beyond it, callers fail at
    /// once rather than queue behind a slow Redis.
    pub max_in_flight: usize,
}

struct Command {
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<Reply, RedisError>>,
}

struct Pending {
    reply: oneshot::Sender<Result<Reply, RedisError>>,
    sent: Instant,
}

/// The caller's side; dropping the last clone ends the task.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    tx: mpsc::Sender<Command>,
    /// SHA-1 of the script, as `SCRIPT LOAD` answered on the first
    /// connection (it is a function of the script's text).
    script_sha: Arc<OnceLock<String>>,
}

impl Conn {
    /// Starts the task; needs a Tokio runtime. `script` is loaded on every
    /// new connection, so `EVALSHA` rarely misses.
    pub(crate) fn spawn(settings: ConnSettings, script: &'static str) -> Conn {
        let (tx, rx) = mpsc::channel(QUEUE);
        let script_sha = Arc::new(OnceLock::new());
        tokio::spawn(drive(settings, script, script_sha.clone(), rx));
        Conn { tx, script_sha }
    }

    pub(crate) fn script_sha(&self) -> Option<&str> {
        self.script_sha.get().map(String::as_str)
    }

    /// Sends one command and waits for its reply. No timeout here: the
    /// caller bounds the whole decision.
    pub(crate) async fn call(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let mut bytes = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        resp::encode(args, &mut bytes);
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Command { bytes, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => RedisError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => RedisError::NotConnected,
            })?;
        rx.await
            .map_err(|_| RedisError::ConnectionLost("the connection task ended".into()))?
    }
}

/// The task: connect, serve until the connection fails, wait, again; until
/// every [`Conn`] is dropped.
async fn drive(
    settings: ConnSettings,
    script: &'static str,
    script_sha: Arc<OnceLock<String>>,
    mut rx: mpsc::Receiver<Command>,
) {
    let mut attempt = 0u32;
    // Log changes of state, not every failed attempt.
    let mut up = true;
    loop {
        let connected = {
            let connect = connect(&settings, script, &script_sha);
            tokio::pin!(connect);
            loop {
                tokio::select! {
                    r = &mut connect => break r,
                    cmd = rx.recv() => match cmd {
                        Some(cmd) => refuse(cmd),
                        None => return,
                    },
                }
            }
        };
        let failure = match connected {
            Ok((stream, leftover)) => {
                attempt = 0;
                if !up {
                    tracing::info!(addr = %settings.addr, "rate limit: Redis connection restored");
                }
                up = true;
                match serve(stream, leftover, &mut rx, settings.max_in_flight).await {
                    Ended::Closed => return,
                    Ended::Failed(e) => e,
                }
            }
            Err(e) => e,
        };
        if up {
            tracing::warn!(addr = %settings.addr, error = %failure,
                "rate limit: no Redis connection; limits fall back to their failure mode until it is back");
        }
        up = false;
        let wait = RECONNECT.delay(attempt, &mut rand::thread_rng());
        attempt = attempt.saturating_add(1);
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => refuse(cmd),
                    None => return,
                },
            }
        }
    }
}

fn refuse(cmd: Command) {
    // The caller may have given up already.
    let _ = cmd.reply.send(Err(RedisError::NotConnected));
}

/// Connects and loads the script, within the connect timeout. Returns the
/// stream and any bytes read past the `SCRIPT LOAD` reply.
async fn connect(
    settings: &ConnSettings,
    script: &'static str,
    script_sha: &OnceLock<String>,
) -> Result<(TcpStream, Vec<u8>), RedisError> {
    let attempt = async {
        let mut stream = TcpStream::connect(&settings.addr)
            .await
            .map_err(|e| RedisError::ConnectionLost(format!("connect: {e}")))?;
        // One small command per decision: do not let Nagle delay it.
        stream
            .set_nodelay(true)
            .map_err(|e| RedisError::ConnectionLost(format!("TCP_NODELAY: {e}")))?;
        let mut out = Vec::new();
        resp::encode(&[b"SCRIPT", b"LOAD", script.as_bytes()], &mut out);
        stream
            .write_all(&out)
            .await
            .map_err(|e| RedisError::ConnectionLost(format!("write: {e}")))?;
        let mut buf = Vec::with_capacity(256);
        let reply = loop {
            if let Some((reply, used)) =
                resp::parse(&buf).map_err(|e| RedisError::Protocol(e.to_string()))?
            {
                buf.drain(..used);
                break reply;
            }
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| RedisError::ConnectionLost(format!("read: {e}")))?;
            if n == 0 {
                return Err(RedisError::ConnectionLost("closed by Redis".into()));
            }
        };
        match reply {
            Reply::Bulk(Some(sha)) if sha.len() == 40 && sha.iter().all(u8::is_ascii_hexdigit) => {
                let sha = String::from_utf8_lossy(&sha).to_ascii_lowercase();
                let _ = script_sha.set(sha);
                Ok((stream, buf))
            }
            // NOAUTH when Redis wants a password, for instance.
            Reply::Error(e) => Err(RedisError::Server(format!("SCRIPT LOAD: {e}"))),
            other => Err(RedisError::Protocol(format!(
                "SCRIPT LOAD answered {other}"
            ))),
        }
    };
    tokio::time::timeout(settings.connect_timeout, attempt)
        .await
        .map_err(|_| {
            RedisError::ConnectionLost(format!(
                "no connection within {:?}",
                settings.connect_timeout
            ))
        })?
}

enum Ended {
    /// Every `Conn` was dropped.
    Closed,
    Failed(RedisError),
}

/// Serves commands on one connection until it fails or every `Conn` is
/// dropped. Commands still waiting for a reply then fail.
async fn serve(
    stream: TcpStream,
    leftover: Vec<u8>,
    rx: &mut mpsc::Receiver<Command>,
    max_in_flight: usize,
) -> Ended {
    let (rd, wr) = stream.into_split();
    // Shared by the writer and the reader, two futures of this one task;
    // locked only between awaits.
    let pending = Mutex::new(VecDeque::<Pending>::new());
    let ended = tokio::select! {
        e = write(wr, rx, &pending, max_in_flight) => e,
        e = read(rd, leftover, &pending) => Ended::Failed(e),
    };
    let lost = match &ended {
        Ended::Closed => "the limiter was dropped".to_string(),
        Ended::Failed(e) => e.to_string(),
    };
    for p in lock(&pending).drain(..) {
        let _ = p.reply.send(Err(RedisError::ConnectionLost(lost.clone())));
    }
    ended
}

async fn write(
    mut wr: OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Command>,
    pending: &Mutex<VecDeque<Pending>>,
    max_in_flight: usize,
) -> Ended {
    let mut batch = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            return Ended::Closed;
        };
        batch.clear();
        let mut next = Some(first);
        let mut taken = 0;
        {
            let mut pending = lock(pending);
            while let Some(cmd) = next.take() {
                if pending.len() >= max_in_flight {
                    let _ = cmd.reply.send(Err(RedisError::Overloaded));
                } else {
                    // Queued before it is written, so its reply always
                    // finds it.
                    batch.extend_from_slice(&cmd.bytes);
                    pending.push_back(Pending {
                        reply: cmd.reply,
                        sent: Instant::now(),
                    });
                }
                taken += 1;
                if taken < BATCH {
                    next = rx.try_recv().ok();
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = wr.write_all(&batch).await {
            return Ended::Failed(RedisError::ConnectionLost(format!("write: {e}")));
        }
    }
}

/// Reads replies and hands each to the oldest pending command. Returns
/// only on failure.
async fn read(
    mut rd: OwnedReadHalf,
    mut buf: Vec<u8>,
    pending: &Mutex<VecDeque<Pending>>,
) -> RedisError {
    loop {
        let mut used = 0;
        loop {
            match resp::parse(&buf[used..]) {
                Ok(Some((reply, n))) => {
                    used += n;
                    let Some(p) = lock(pending).pop_front() else {
                        return RedisError::Protocol(format!("reply to no command: {reply}"));
                    };
                    let _ = p.reply.send(Ok(reply));
                }
                Ok(None) => break,
                Err(e) => return RedisError::Protocol(e.to_string()),
            }
        }
        buf.drain(..used);
        match tokio::time::timeout(STALL, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return RedisError::ConnectionLost("closed by Redis".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return RedisError::ConnectionLost(format!("read: {e}")),
            Err(_) => {
                let oldest = lock(pending).front().map(|p| p.sent.elapsed());
                if oldest.is_some_and(|age| age >= STALL) {
                    return RedisError::ConnectionLost(format!("no reply for {STALL:?}"));
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
