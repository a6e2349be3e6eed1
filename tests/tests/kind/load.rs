//! Steady traffic through the gateway while a test disturbs the cluster,
//! counting every request that does not come back 200.
//!
//! Workers keep their connections alive, as a browser does; a request that
//! fails is counted and the worker goes on with a fresh connection. Bounded
//! in time (a load never outlives `MAX`) and in rate.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const WORKERS: u32 = 4;
const MAX: Duration = Duration::from_secs(600);
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, to say what went wrong.
    pub errors: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.errors.extend(
            other
                .errors
                .into_iter()
                .take(10usize.saturating_sub(self.errors.len())),
        );
    }
}

pub struct Load {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<Tally>>,
}

impl Load {
    /// `rps` GETs of `path` a second, spread over a few workers.
    pub fn start(addr: SocketAddr, path: &'static str, rps: u32) -> Load {
        let (stop, stopped) = watch::channel(false);
        let every = Duration::from_secs_f64(f64::from(WORKERS) / f64::from(rps.max(1)));
        let workers = (0..WORKERS)
            .map(|_| tokio::spawn(worker(addr, path, every, stopped.clone())))
            .collect();
        Load { stop, workers }
    }

    pub async fn stop(self) -> Tally {
        let _ = self.stop.send(true);
        let mut total = Tally::default();
        for w in self.workers {
            match w.await {
                Ok(t) => total.add(t),
                Err(e) => panic!("a load worker panicked: {e}"),
            }
        }
        total
    }
}

async fn worker(
    addr: SocketAddr,
    path: &'static str,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) -> Tally {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let uri: http::Uri = format!("http://{addr}{path}").parse().expect("a valid URI");
    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::Instant::now() + MAX;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => return tally,
            _ = tokio::time::sleep_until(deadline) => return tally,
        }
        let req = http::Request::get(uri.clone())
            .header("host", "shop.local")
            .body(Empty::new())
            .expect("a valid request");
        let outcome = tokio::time::timeout(TIMEOUT, async {
            let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), 1 << 20)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            if status == http::StatusCode::OK {
                Ok(())
            } else {
                Err(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ))
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {TIMEOUT:?}")));
        match outcome {
            Ok(()) => tally.ok += 1,
            Err(e) => {
                tally.failed += 1;
                if tally.errors.len() < 10 {
                    tally.errors.push(e);
                }
            }
        }
    }
}
