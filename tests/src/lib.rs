//! Harness for Mycel's end-to-end suites: real `mycel-controller`,
//! `mycel-proxy` and `mycel-demo` processes talking over loopback sockets.
//!
//! The binaries must be built first (`cargo build --workspace --bins`;
//! `tests/run.sh` does it). Every process is killed when its handle drops,
//! so a failing test leaves nothing behind.

pub mod certs;
pub mod grpc;
pub mod http;
pub mod k8s;
pub mod mesh;
pub mod mtls;
pub mod netns;
pub mod probe;
pub mod process;
pub mod shop;
pub mod skip;

pub use mesh::{Mesh, Sidecar, SidecarSpec};
pub use process::{bin, Proc};
