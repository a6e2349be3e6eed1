//! The stream client against a tiny fake controller on loopback
//! (plaintext: the transport is injected).

use std::time::Duration;

use mycel_api::v1::discovery_server::{Discovery as DiscoveryService, DiscoveryServer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::core::directory::model::ServiceState;
use crate::discovery::convert::tests::{eps_resource, svc_resource};

type Outbox = mpsc::Sender<Result<pb::DiscoveryResponse, Status>>;

/// Each accepted stream hands the test its requests and a sender for
/// responses; dropping that sender ends the stream.
struct FakeController {
    streams: mpsc::UnboundedSender<(mpsc::UnboundedReceiver<pb::DiscoveryRequest>, Outbox)>,
}

#[tonic::async_trait]
impl DiscoveryService for FakeController {
    type StreamStream = ReceiverStream<Result<pb::DiscoveryResponse, Status>>;

    async fn stream(
        &self,
        req: Request<Streaming<pb::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut incoming = req.into_inner();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(m)) = incoming.message().await {
                if in_tx.send(m).is_err() {
                    return;
                }
            }
        });
        let (out_tx, out_rx) = mpsc::channel(8);
        let _ = self.streams.send((in_rx, out_tx));
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

struct Plain(String);

impl Connect for Plain {
    async fn connect(&self) -> Result<Channel, ChannelError> {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.0))
            .map_err(|source| ChannelError::Address {
                address: self.0.clone(),
                source,
            })?
            .connect()
            .await
            .map_err(|source| ChannelError::Connect {
                address: self.0.clone(),
                source,
            })
    }
}

/// What `app` builds from `--workload=catalog --namespace=shop
/// --service-account=catalog --inbound=127.0.0.1:15006 --app-port=http:8080
/// --label=app=catalog` (that mapping is tested in `app`).
fn hello_params() -> HelloParams {
    HelloParams {
        proxy_id: "catalog-0000abcd".into(),
        workload: pb::Workload {
            name: "catalog".into(),
            namespace: "shop".into(),
            service_account: "catalog".into(),
            labels: [("app".to_string(), "catalog".to_string())].into(),
            address: "127.0.0.1".into(),
            mesh_port: 15006,
            ports: vec![pb::WorkloadPort {
                name: "http".into(),
                port: 8080,
                protocol: pb::Protocol::Http as i32,
            }],
            ready: false,
            zone: String::new(),
        },
        register: true,
        mode: "sidecar".into(),
        gateway: String::new(),
    }
}

const WAIT: Duration = Duration::from_secs(10);

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out")
        .expect("channel closed")
}

fn kind(r: pb::DiscoveryRequest) -> Req {
    r.kind.expect("request kind")
}

#[tokio::test]
async fn hello_subscribe_ack_nack_status_and_resync() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (streams_tx, mut streams) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DiscoveryServer::new(FakeController {
                streams: streams_tx,
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let hello = hello_params();
    let (snap_tx, mut snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let subs = Subscriptions::default();
    subs.pin("catalog.shop");
    let (ready_tx, ready_rx) = watch::channel(false);
    let status = Arc::new(DiscoveryStatus::default());
    let identity = IdentityState::new();
    let client = DiscoveryClient::new(
        Plain(addr.to_string()),
        hello.clone(),
        snap_tx,
        subs.clone(),
        identity,
        ready_rx,
        status.clone(),
        DiscoveryMetrics::default(),
    )
    .with_admin(Some("0.0.0.0:15020".parse().unwrap()));
    let task = tokio::spawn(client.run());

    // Hello names the workload, registers it and carries subscriptions.
    let (mut reqs, out) = next(&mut streams).await;
    let Req::Hello(h) = kind(next(&mut reqs).await) else {
        panic!("first message must be Hello")
    };
    assert_eq!(h.proxy_id, hello.proxy_id);
    assert!(h.proxy_id.starts_with("catalog-"));
    assert!(h.register);
    assert_eq!(h.mode, "sidecar");
    assert_eq!(h.subscriptions, vec!["catalog.shop".to_string()]);
    assert!(h.known.is_empty());
    // Where its metrics are, as bound: the controller pairs an unspecified
    // host with the stream's source address.
    assert_eq!(
        h.admin,
        Some(pb::AdminAddress {
            host: "0.0.0.0".into(),
            port: 15020
        })
    );
    let w = h.workload.unwrap();
    assert_eq!(
        (
            w.name.as_str(),
            w.namespace.as_str(),
            w.service_account.as_str()
        ),
        ("catalog", "shop", "catalog")
    );
    assert_eq!(w.mesh_port, 15006);
    assert_eq!(w.address, "127.0.0.1");
    assert_eq!(w.labels.get("app").map(String::as_str), Some("catalog"));
    assert_eq!(w.ports[0].port, 8080);
    assert!(!w.ready);

    // A valid response is applied and ACKed.
    out.send(Ok(pb::DiscoveryResponse {
        nonce: "n1".into(),
        resources: vec![
            svc_resource("catalog", "shop"),
            eps_resource("catalog.shop"),
        ],
        removed: vec![],
        refused: vec![],
    }))
    .await
    .unwrap();
    assert_eq!(
        kind(next(&mut reqs).await),
        Req::Ack(pb::Ack { nonce: "n1".into() })
    );
    let snap = snap_rx
        .wait_for(|s| !s.services.is_empty())
        .await
        .unwrap()
        .clone();
    assert!(matches!(
        snap.service("catalog.shop"),
        Some(ServiceState::Known { .. })
    ));
    assert!(status.is_synced());

    // New subscriptions go out as Subscribe.
    subs.pin("reviews.shop");
    assert_eq!(
        kind(next(&mut reqs).await),
        Req::Subscribe(pb::Subscribe {
            add: vec!["reviews.shop".into()],
            remove: vec![]
        })
    );

    // An invalid resource NACKs the whole response; the snapshot stays.
    let mut bad = eps_resource("reviews.shop");
    if let Some(pb::resource::Body::Endpoints(e)) = &mut bad.body {
        e.endpoints[0].spiffe_id = "not-spiffe".into();
    }
    out.send(Ok(pb::DiscoveryResponse {
        nonce: "n2".into(),
        resources: vec![svc_resource("reviews", "shop"), bad],
        removed: vec![],
        refused: vec![],
    }))
    .await
    .unwrap();
    let Req::Nack(nack) = kind(next(&mut reqs).await) else {
        panic!("NACK expected")
    };
    assert_eq!(nack.nonce, "n2");
    assert!(
        nack.error.contains("endpoints/reviews.shop") && nack.error.contains("spiffe_id"),
        "{}",
        nack.error
    );
    assert!(snap_rx.borrow().service("reviews.shop").is_none());
    let st = status.state();
    assert_eq!(st.last_ack.unwrap().nonce, "n1");
    assert_eq!(st.last_nack.unwrap().nonce, "n2");
    assert!(st.connected);

    // Readiness changes are reported.
    ready_tx.send(true).unwrap();
    assert_eq!(
        kind(next(&mut reqs).await),
        Req::Status(pb::WorkloadStatus { ready: true })
    );

    // Controller lost: the snapshot stays; the client reconnects and resyncs.
    drop(out);
    let (mut reqs2, _out2) = next(&mut streams).await;
    let Req::Hello(h2) = kind(next(&mut reqs2).await) else {
        panic!("Hello expected after reconnect")
    };
    assert_eq!(h2.proxy_id, hello.proxy_id, "proxy id is stable");
    assert_eq!(
        h2.subscriptions,
        vec!["catalog.shop".to_string(), "reviews.shop".to_string()]
    );
    assert_eq!(h2.known.len(), 2);
    assert!(h2.workload.unwrap().ready);
    assert!(matches!(
        snap_rx.borrow().service("catalog.shop"),
        Some(ServiceState::Known { .. })
    ));
    for _ in 0..1000 {
        if status.state().connects >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status.state().connects, 2);
    task.abort();
}

#[tokio::test]
async fn withdrawal_reports_not_ready_before_the_drain() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (streams_tx, mut streams) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DiscoveryServer::new(FakeController {
                streams: streams_tx,
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let (snap_tx, _snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (ready_tx, ready_rx) = watch::channel(true);
    let withdrawal = Withdrawal::default();
    let client = DiscoveryClient::new(
        Plain(addr.to_string()),
        hello_params(),
        snap_tx,
        Subscriptions::default(),
        IdentityState::new(),
        ready_rx,
        Arc::new(DiscoveryStatus::default()),
        DiscoveryMetrics::default(),
    )
    .with_withdrawal(withdrawal.clone());
    let task = tokio::spawn(client.run());

    let (mut reqs, out) = next(&mut streams).await;
    let Req::Hello(h) = kind(next(&mut reqs).await) else {
        panic!("first message must be Hello")
    };
    assert!(h.workload.unwrap().ready);

    // Stopping: not ready goes out although the app is still up, and the
    // proxy learns it was sent while it was listed as ready.
    assert_eq!(withdrawal.withdraw(WAIT).await, Some(true));
    assert_eq!(
        kind(next(&mut reqs).await),
        Req::Status(pb::WorkloadStatus { ready: false })
    );
    // The app staying up changes nothing, and a new stream says not ready.
    ready_tx.send(true).unwrap();
    drop(out);
    let (mut reqs2, _out2) = next(&mut streams).await;
    let Req::Hello(h2) = kind(next(&mut reqs2).await) else {
        panic!("Hello expected after reconnect")
    };
    assert!(!h2.workload.unwrap().ready);
    task.abort();
}
