//! The end-to-end suites, one test binary with a module per suite (one link
//! of tonic, hyper and rustls instead of one per file). Real controller,
//! proxies and demo apps on loopback, started by the harness in
//! `mycel-tests`; the `netns_*` suites run in network-namespace pods and
//! skip, saying why, where the machine cannot make them.
//!
//! Run one suite: `cargo test -p mycel-tests --test e2e shop::`.
//! The attacks the mesh withstands are their own binary, `robustness`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod authz;
mod authz_cli;
mod cert_inspect;
mod churn;
mod controller_restart;
mod dashboard;
mod demo_issuer;
mod demo_smoke;
mod demo_stores;
mod discovery_scope;
mod examples;
mod gateway_aggregate;
mod gateway_api;
mod gateway_clients;
mod gateway_https_listeners;
mod gateway_policy;
mod gateway_tls;
mod grpc_streams;
mod identity;
mod images;
mod k8s;
mod k8s_authz;
mod k8s_ca;
mod k8s_cert;
mod k8s_check;
mod k8s_demo;
mod k8s_discovery_scope;
mod k8s_gateway;
mod k8s_observability;
mod k8s_owner;
mod k8s_policy;
mod k8s_proxy_config;
mod k8s_rotation;
mod k8s_routes;
mod logs;
mod mtls;
mod netns_demo_stores;
mod netns_init;
mod netns_mesh;
mod netns_peer_auth;
mod prometheus;
mod rotation;
mod routing;
mod shop;
mod stat;
mod tcp_tunnel;
mod traces;
mod traffic;
