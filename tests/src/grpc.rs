//! A gRPC client for the demo reviews service, dialling through a sidecar's
//! outbound listener the way an app in the mesh does.

use std::net::SocketAddr;

use mycel_demo::proto::reviews::reviews_client::ReviewsClient;
use tonic::transport::{Channel, Uri};

/// `ReviewsClient` whose requests go to `proxy` with `:authority` `reviews:9090`.
pub async fn reviews_via(proxy: SocketAddr) -> ReviewsClient<Channel> {
    let origin: Uri = "http://reviews:9090".parse().expect("uri");
    let channel = Channel::from_shared(format!("http://{proxy}"))
        .expect("endpoint")
        .origin(origin)
        .connect()
        .await
        .expect("connect to outbound proxy");
    ReviewsClient::new(channel)
}
