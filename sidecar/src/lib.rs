//! Mycel proxy: the sidecar beside every workload and, with
//! `--mode gateway`, the ingress gateway.
//!
//! Data flow: `identity` keeps a certificate; `discovery` keeps a snapshot
//! of the services this proxy calls; `inbound`, `outbound` and `gateway`
//! serve traffic reading both; `admin` shows them. `app` wires it together.

pub mod admin;
pub mod app;
pub mod config;
pub mod core;
pub mod discovery;
pub mod gateway;
pub mod identity;
pub mod inbound;
pub mod init;
pub mod metrics;
pub mod observe;
pub mod outbound;
