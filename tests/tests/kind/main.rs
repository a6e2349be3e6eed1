//! Mycel in a real cluster: the chart installed by helm, the demo shop
//! deployed and injected, used the way its users use it.
//!
//! Run by `tests/kind/run.sh test` (and `all`) against the cluster in
//! KUBECONFIG, with the shop of `demo-services/k8s/` deployed. A plain
//! `cargo test` has no cluster, so every test here is `#[ignore]`d there.
//! The tests share the cluster and change it (they scale, restart and
//! delete things), so they run one at a time (`--test-threads=1`), and
//! each leaves the shop as it found it.
//! `lifecycle` uninstalls the chart: run.sh runs it on its own, last.

mod cluster;
mod load;

mod authz;
mod browser;
mod certs;
mod controller;
mod injection;
mod lifecycle;
mod proxy_config;
mod rotation;
mod scaling;
mod shop;
mod strict;
