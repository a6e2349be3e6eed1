//! gRPC clients: the demo reviews service, dialled through a sidecar's
//! outbound listener the way an app in the mesh does, and the controller,
//! dialled the way a proxy does.

use std::net::SocketAddr;

use mycel_demo::proto::reviews::reviews_client::ReviewsClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Uri};

use crate::mesh::Mesh;

/// A channel to the mesh's controller over TLS, trusting its CA root (the
/// name its certificate carries is `localhost`) and presenting `client`
/// when given.
pub async fn controller(mesh: &Mesh, client: Option<Identity>) -> Channel {
    let root = std::fs::read(mesh.ca_root()).expect("root.pem");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root))
        .domain_name("localhost");
    if let Some(identity) = client {
        tls = tls.identity(identity);
    }
    Channel::from_shared(format!("https://{}", mesh.grpc))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect to controller")
}

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
