//! The load generator inside the client pod. The harness starts itself
//! there for each run (`ip netns exec <pod> mycel-bench --pod-load
//! <json>`), the child runs the harness's own load code
//! ([`crate::load`], [`crate::client`]) and prints what it measured as one
//! line of JSON, histogram included, which the parent reads back.
//!
//! A child process rather than a thread moved into the namespace with
//! `setns`: no unsafe code and no new feature of a shared dependency, and
//! the load generator's CPU stays out of the harness's (which samples the
//! sidecars meanwhile). Starting it costs a few milliseconds per run,
//! outside the measured time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{self, Download, Proto, Target};
use crate::load::{self, RunResult, Shape};
use crate::stats::histogram;

/// One run in the pod.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    pub addr: SocketAddr,
    pub authority: String,
    pub body_len: usize,
    pub work: Work,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Work {
    /// Back-to-back requests on `conns` kept-alive connections.
    Closed {
        conns: usize,
        millis: u64,
        max_requests: u64,
    },
    /// Back-to-back requests, `conns` at a time, each on a new connection.
    NewConnPerRequest {
        conns: usize,
        millis: u64,
        max_requests: u64,
    },
    /// One `GET path` on one connection, at least `bytes` long.
    Download { path: String, bytes: u64 },
}

/// What the child prints.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Output {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub error_kinds: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    /// The latency histogram as (value in ns, count) of its recorded
    /// buckets; recording them again gives the same histogram.
    pub hist: Vec<(u64, u64)>,
    pub download: Option<Download>,
}

impl Output {
    fn of(r: RunResult) -> Output {
        Output {
            ok: r.ok,
            errors: r.errors,
            first_error: r.first_error,
            error_kinds: r.error_kinds,
            elapsed_s: r.elapsed.as_secs_f64(),
            hist: r
                .hist
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            download: None,
        }
    }

    /// Back into a run result, for the harness's summaries and merging.
    pub fn into_run(self) -> RunResult {
        let mut hist = histogram();
        for (v, n) in self.hist {
            let _ = hist.record_n(v, n);
        }
        RunResult {
            hist,
            ok: self.ok,
            errors: self.errors,
            first_error: self.first_error,
            error_kinds: self.error_kinds,
            elapsed: Duration::from_secs_f64(self.elapsed_s.max(0.0)),
        }
    }
}

/// The child's side: runs `spec` and returns the JSON line to print.
pub async fn child(spec_json: &str) -> anyhow::Result<String> {
    let spec: Spec = serde_json::from_str(spec_json)?;
    let target = Target {
        body_len: spec.body_len,
        ..Target::plain(spec.addr, spec.authority.clone())
    };
    let out = match spec.work {
        Work::Closed {
            conns,
            millis,
            max_requests,
        } => Output::of(
            load::closed_loop(
                Proto::Http1,
                &target,
                Shape::for_proto(Proto::Http1, conns, 1),
                Duration::from_millis(millis),
                max_requests,
            )
            .await?,
        ),
        Work::NewConnPerRequest {
            conns,
            millis,
            max_requests,
        } => Output::of(
            load::closed_loop(
                Proto::Http1,
                &target,
                Shape::new_conn_per_request(conns),
                Duration::from_millis(millis),
                max_requests,
            )
            .await?,
        ),
        Work::Download { path, bytes } => {
            let target = Target { path, ..target };
            match client::download(&target, bytes, Duration::from_secs(120)).await {
                Ok(d) => Output {
                    ok: 1,
                    elapsed_s: d.seconds,
                    download: Some(d),
                    ..Output::default()
                },
                Err(e) => Output {
                    errors: 1,
                    error_kinds: BTreeMap::from([(e.kind(), 1)]),
                    first_error: Some(e.to_string()),
                    ..Output::default()
                },
            }
        }
    };
    Ok(serde_json::to_string(&out)?)
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("start the load generator in {ns}: {source}")]
    Spawn { ns: String, source: std::io::Error },
    #[error("the load generator in {ns} did not finish within {limit:?}")]
    Overrun { ns: String, limit: Duration },
    #[error("the load generator in {ns} failed ({status}): {stderr}")]
    Failed {
        ns: String,
        status: String,
        stderr: String,
    },
    #[error("the load generator in {ns} printed no result: {message}")]
    Output { ns: String, message: String },
}

/// The parent's side: runs `spec` in namespace `ns` with this executable,
/// killed if it takes longer than `limit`.
pub async fn run_in(ns: &str, spec: &Spec, limit: Duration) -> Result<Output, RemoteError> {
    let me = std::env::current_exe().map_err(|source| RemoteError::Spawn {
        ns: ns.into(),
        source,
    })?;
    let json = serde_json::to_string(spec).map_err(|e| RemoteError::Output {
        ns: ns.into(),
        message: e.to_string(),
    })?;
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(me)
        .args(["--pod-load", &json])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| RemoteError::Overrun {
            ns: ns.into(),
            limit,
        })?
        .map_err(|source| RemoteError::Spawn {
            ns: ns.into(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(RemoteError::Failed {
            ns: ns.into(),
            status: out.status.to_string(),
            stderr: stderr.trim().to_string(),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| RemoteError::Output {
        ns: ns.into(),
        message: format!("{e}: {line:?} {}", stderr.trim()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{record, summarize};

    #[test]
    fn a_histogram_survives_the_trip_through_json() {
        let mut h = histogram();
        for us in [80u64, 95, 120, 120, 400, 2_500, 31_000] {
            record(&mut h, Duration::from_micros(us));
        }
        let out = Output::of(RunResult {
            hist: h.clone(),
            ok: 7,
            errors: 0,
            first_error: None,
            error_kinds: BTreeMap::new(),
            elapsed: Duration::from_millis(1500),
        });
        let back: Output = serde_json::from_str(&serde_json::to_string(&out).unwrap()).unwrap();
        let run = back.into_run();
        assert_eq!(summarize(&run.hist), summarize(&h));
        assert_eq!(run.ok, 7);
        assert_eq!(run.elapsed, Duration::from_millis(1500));
    }
}
