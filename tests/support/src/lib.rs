//! What Mycel's tests share, in one place: a test CA ([`ca`]), a TLS client
//! verifier that accepts any server ([`tls`]), the proxy's flags built from
//! what a test says about a sidecar ([`proxy_args`]), an HTTP/1.1 client for
//! loopback assertions ([`http`]), a JWT issuer ([`jwt`]), socket observations ([`net`]), loopback ports below the ephemeral range ([`ports`]), a real redis-server ([`redis`]), skipping a test loudly when this machine
//! lacks what it needs (never under `MYCEL_REQUIRE_ALL=1`: [`skip`]) and a tracing subscriber that shows the
//! log of in-process code when a test fails ([`init_tracing`]).
//!
//! Test code only: it is a dev-dependency of the crates whose tests use it
//! (and a dependency of the end-to-end harness and the bench, which are
//! tools, not the product). Nothing here must ever be used to decide what
//! the product trusts.

pub mod ca;
pub mod http;
pub mod jwt;
pub mod net;
pub mod ports;
pub mod proxy_args;
pub mod redis;
pub mod skip;
pub mod tls;
mod trace;

pub use ca::{Leaf, TestCa};
pub use proxy_args::ProxyArgs;
pub use trace::init_tracing;
