//! Harness for Mycel's end-to-end suites: real `mycel-controller`,
//! `mycel-proxy` and `mycel-demo` processes talking over loopback sockets.
//!
//! The binaries must be built first (`cargo build --workspace --bins`;
//! `tests/run.sh` does it). Every process is killed when its handle drops,
//! so a failing test leaves nothing behind, and a failing test prints the
//! tail of each child's log (see [`Proc`]). What the crates' own tests share
//! too (test CA, accept-any verifier, proxy flags, HTTP GET, tracing) is in
//! `mycel-test-support`.

pub mod demo;
pub mod echo;
pub mod gateway_yaml;
pub mod grpc;
pub mod k8s;
pub mod mesh;
pub mod mtls;
pub mod netns;
pub mod otlp;
pub use mycel_test_support::ports;
pub mod probe;
pub mod process;
pub mod shop;
pub mod skip;
pub mod stores;

pub use mesh::{Mesh, Sidecar, SidecarSpec};
/// The shared HTTP GET client, where the suites have always found it.
pub use mycel_test_support::http;
pub use process::{bin, Proc};
