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
