//! Mycel's benchmark harness: a 1 KB backend, an open- and closed-loop load
//! generator, and the configurations compared (direct, the Mycel sidecar
//! pair, an nginx pair, a HAProxy pair), all on loopback; a control-plane
//! scale mode; and the pod scenario, the same comparison between network
//! namespaces with the sidecars on the transparent path. `mycel-bench
//! --help` lists the scenarios.

pub mod backend;
pub mod certs;
pub mod child;
pub mod client;
pub mod cpscale;
pub mod load;
pub mod pods;
pub mod probe;
pub mod procstat;
pub mod report;
pub mod run;
pub mod schedule;
pub mod setup;
pub mod stats;

/// Extra flags for every `mycel-proxy` the harness starts (whitespace
/// separated), e.g. `--worker-threads 2`: how a proxy setting is measured
/// against the default with one build. Each report names them.
pub const PROXY_ARGS_ENV: &str = "MYCEL_BENCH_PROXY_ARGS";

/// The flags of [`PROXY_ARGS_ENV`], none when it is unset.
pub fn extra_proxy_args() -> Vec<String> {
    std::env::var(PROXY_ARGS_ENV)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}
