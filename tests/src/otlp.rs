//! The OTLP receiver of `mycel-telemetry` on a loopback port of the test's.

use std::net::SocketAddr;

pub use mycel_telemetry::receiver::{Received, ReceivedSpan};
use tokio::net::TcpListener;

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind OTLP");
    let addr = listener.local_addr().expect("OTLP addr");
    (listener, addr)
}

/// OTLP over gRPC.
pub async fn grpc_receiver() -> (SocketAddr, Received) {
    let (listener, addr) = bind().await;
    (addr, mycel_telemetry::receiver::grpc_receiver(listener))
}

/// OTLP over HTTP/protobuf.
pub async fn http_receiver() -> (SocketAddr, Received) {
    let (listener, addr) = bind().await;
    (addr, mycel_telemetry::receiver::http_receiver(listener))
}
