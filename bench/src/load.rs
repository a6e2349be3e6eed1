//! The load generator: open loop at a fixed rate (latency from the intended
//! send time) and closed loop (back-to-back requests on N connections).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Mutex};

use crate::client::{CallError, Conn, Proto, Target};
use crate::schedule::Schedule;
use crate::stats::{self, histogram};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("could not open connections: {0}")]
    Connect(#[from] CallError),
    #[error("run did not finish within {0:?}")]
    Overrun(Duration),
}

/// What one run measured.
pub struct RunResult {
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Errors by kind (`status 429`, `timeout`, ...; [`CallError::kind`]),
    /// so a refusal is told apart from a transport failure.
    pub error_kinds: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl RunResult {
    pub fn achieved_rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds `other`'s counts and histogram (the rounds of one point).
    pub fn absorb(&mut self, other: RunResult) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        for (kind, n) in other.error_kinds {
            *self.error_kinds.entry(kind).or_default() += n;
        }
    }
}

/// How many connections a run opens and how many requests may be in flight.
/// HTTP/1.1 needs a connection per in-flight request; HTTP/2 and gRPC
/// multiplex `workers` streams over `conns` connections.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub workers: usize,
    pub conns: usize,
    /// Each request on a connection of its own (HTTP/1.1, `Connection:
    /// close`), opened in the request's time.
    pub new_conn_per_request: bool,
}

impl Shape {
    pub fn for_proto(proto: Proto, concurrency: usize, multiplexed_conns: usize) -> Shape {
        let concurrency = concurrency.max(1);
        match proto {
            Proto::Http1 => Shape {
                workers: concurrency,
                conns: concurrency,
                new_conn_per_request: false,
            },
            Proto::H2 | Proto::Grpc => Shape {
                workers: concurrency,
                conns: multiplexed_conns.clamp(1, concurrency),
                new_conn_per_request: false,
            },
        }
    }

    /// `concurrency` HTTP/1.1 workers, each opening a new connection for
    /// every request and asking the server to close it.
    pub fn new_conn_per_request(concurrency: usize) -> Shape {
        Shape {
            workers: concurrency.max(1),
            conns: 0,
            new_conn_per_request: true,
        }
    }
}

async fn open_conns(proto: Proto, target: &Target, n: usize) -> Result<Vec<Conn>, CallError> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Conn::connect(proto, target).await?);
    }
    Ok(conns)
}

/// Per worker state: its connection (re-opened when it closes) and its own
/// histogram, merged at the end so workers never share a lock per request.
struct Worker {
    proto: Proto,
    target: Target,
    /// None between requests when each request has its own connection.
    conn: Option<Conn>,
    new_conn_per_request: bool,
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    error_kinds: BTreeMap<String, u64>,
}

impl Worker {
    /// Sends one request; `since` is when its latency starts.
    async fn one(&mut self, since: Instant) {
        let mut conn = match self.conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => match Conn::connect(self.proto, &self.target).await {
                Ok(c) => c,
                Err(e) => return self.fail(e),
            },
        };
        let r = conn.call(&self.target).await;
        if !self.new_conn_per_request {
            self.conn = Some(conn);
        }
        match r {
            Ok(()) => {
                stats::record(&mut self.hist, since.elapsed());
                self.ok += 1;
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: CallError) {
        self.errors += 1;
        *self.error_kinds.entry(e.kind()).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

fn merge(workers: Vec<Worker>, elapsed: Duration) -> RunResult {
    let mut out = RunResult {
        hist: histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        error_kinds: BTreeMap::new(),
        elapsed,
    };
    for w in workers {
        out.absorb(RunResult {
            hist: w.hist,
            ok: w.ok,
            errors: w.errors,
            first_error: w.first_error,
            error_kinds: w.error_kinds,
            elapsed: Duration::ZERO,
        });
    }
    out
}

async fn workers(proto: Proto, target: &Target, shape: Shape) -> Result<Vec<Worker>, LoadError> {
    let mut target = target.clone();
    let mut conns = if shape.new_conn_per_request {
        target.headers.push((
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        ));
        Vec::new()
    } else {
        open_conns(proto, &target, shape.conns.max(1)).await?
    };
    let mut out = Vec::with_capacity(shape.workers);
    for i in 0..shape.workers {
        // HTTP/1.1 workers own their connection; multiplexed ones share.
        let shared = conns.get(i % conns.len().max(1)).and_then(Conn::share);
        let conn = match shared {
            Some(c) => Some(c),
            None if !conns.is_empty() => Some(conns.swap_remove(0)),
            None if shape.new_conn_per_request => None,
            None => Some(Conn::connect(proto, &target).await?),
        };
        out.push(Worker {
            proto,
            target: target.clone(),
            conn,
            new_conn_per_request: shape.new_conn_per_request,
            hist: histogram(),
            ok: 0,
            errors: 0,
            first_error: None,
            error_kinds: BTreeMap::new(),
        });
    }
    Ok(out)
}

/// Sends `schedule` open loop. A thread of its own releases each request at
/// its intended time; idle workers take them in turn; a request that waits
/// for a free worker has that wait in its latency.
pub async fn open_loop(
    proto: Proto,
    target: &Target,
    schedule: Schedule,
    shape: Shape,
) -> Result<RunResult, LoadError> {
    let ws = workers(proto, target, shape).await?;
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let start = Instant::now() + Duration::from_millis(5);
    let pacer = std::thread::spawn(move || {
        for i in 0..schedule.count {
            let due = start + schedule.offset(i);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                return;
            }
        }
    });
    let mut handles = Vec::with_capacity(ws.len());
    for mut w in ws {
        let rx = rx.clone();
        handles.push(tokio::spawn(async move {
            loop {
                let due = rx.lock().await.recv().await;
                match due {
                    Some(due) => w.one(due).await,
                    None => return w,
                }
            }
        }));
    }
    let limit = schedule.span() + Duration::from_secs(30);
    let joined = tokio::time::timeout(limit, futures::future::join_all(handles)).await;
    let _ = pacer.join();
    let done: Vec<Worker> = joined
        .map_err(|_| LoadError::Overrun(limit))?
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    Ok(merge(done, start.elapsed()))
}

/// Back-to-back requests on every worker for `duration` (at most
/// `max_requests` in all); latency from each send.
pub async fn closed_loop(
    proto: Proto,
    target: &Target,
    shape: Shape,
    duration: Duration,
    max_requests: u64,
) -> Result<RunResult, LoadError> {
    let ws = workers(proto, target, shape).await?;
    let per_worker = (max_requests / ws.len().max(1) as u64).max(1);
    let start = Instant::now();
    let end = start + duration;
    let mut handles = Vec::with_capacity(ws.len());
    for mut w in ws {
        handles.push(tokio::spawn(async move {
            let mut n = 0;
            while n < per_worker && Instant::now() < end {
                w.one(Instant::now()).await;
                n += 1;
            }
            w
        }));
    }
    let limit = duration + Duration::from_secs(30);
    let done: Vec<Worker> = tokio::time::timeout(limit, futures::future::join_all(handles))
        .await
        .map_err(|_| LoadError::Overrun(limit))?
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    Ok(merge(done, start.elapsed()))
}
