//! `Discovery.Stream`: one bidirectional stream per proxy. The proxy proves
//! who it is with its client certificate, says hello (and, in local mode,
//! registers its workload for the life of the stream, if the
//! [`RegistrationPolicy`] admits it), subscribes to the services it calls,
//! and is pushed the resources that changed whenever its view in the index
//! changes. A bad or over-the-limit subscription is refused on its own (in
//! the `refused` field of a response); it never ends the stream.

pub(crate) mod session;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mycel_api::spiffe::{SpiffeId, SpiffeIdError};
use mycel_api::v1::discovery_request::Kind;
use mycel_api::v1::discovery_server::Discovery;
use mycel_api::v1::{DiscoveryRequest, DiscoveryResponse, Hello, RefusedSubscription};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

pub use session::{Delta, Session};

use super::convert;
use crate::ca::tokens::token_id_from_cert_der;
use crate::index::{ConnId, Namespaces, ProxyOrigin, SharedIndex, DISCOVERY_NAMESPACES_KEY};
use crate::metrics::{Metrics, PushAnswer};
use crate::model::{ProxyView, ResourceKey, ServiceKey, Workload};
use crate::registry::{admin_scrape_addr, now_rfc3339, NackRecord, ProxyRecord, ProxyRegistry};
use crate::sources::admission::{Peer, RegistrationPolicy};

pub use crate::index::DEFAULT_MAX_SUBSCRIPTIONS;

/// How long a new stream may take to send its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses buffered for a slow proxy before the stream task waits.
const OUTBOUND_BUFFER: usize = 16;

pub struct DiscoveryService {
    index: SharedIndex,
    registry: Arc<ProxyRegistry>,
    metrics: Arc<Metrics>,
    trust_domain: String,
    policy: Arc<dyn RegistrationPolicy>,
    shutdown: Option<watch::Receiver<bool>>,
}

impl DiscoveryService {
    pub fn new(
        index: SharedIndex,
        registry: Arc<ProxyRegistry>,
        metrics: Arc<Metrics>,
        trust_domain: &str,
        policy: Arc<dyn RegistrationPolicy>,
    ) -> Self {
        Self {
            index,
            registry,
            metrics,
            trust_domain: trust_domain.to_string(),
            policy,
            shutdown: None,
        }
    }

    /// Ends every stream when `shutdown` turns true, so a graceful server
    /// shutdown is not held up by streams that would otherwise live forever.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }
}

/// Why a stream was refused before it started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcceptError {
    #[error(
        "a client certificate issued by the mesh CA is required (call Identity.Certify first)"
    )]
    NoClientCert,
    #[error("client certificate: {0}")]
    BadClientCert(#[source] SpiffeIdError),
    #[error("client identity {id} is not in trust domain {trust_domain}")]
    ForeignTrustDomain { id: SpiffeId, trust_domain: String },
    #[error("hello.proxy_id is empty")]
    EmptyProxyId,
    #[error(
        "hello.workload is namespace {namespace:?} service account {service_account:?}, \
         but the client certificate is {peer}"
    )]
    NotTheCaller {
        namespace: String,
        service_account: String,
        peer: SpiffeId,
    },
    #[error("hello.mode {0:?} is not sidecar or gateway")]
    UnknownMode(String),
    #[error("hello.gateway is set but hello.mode is not gateway (only a gateway proxy follows a Gateway)")]
    GatewayNotGatewayMode,
    #[error("hello.gateway {key:?} is not <name>.<namespace> of a Gateway: {reason}")]
    BadGateway { key: String, reason: String },
    #[error(
        "hello.gateway names Gateway {gateway}, but the client certificate is {peer}: \
         a gateway proxy may only follow a Gateway of its own namespace"
    )]
    ForeignGateway { gateway: ServiceKey, peer: SpiffeId },
    /// The workload in Hello is missing or not valid.
    #[error(transparent)]
    Workload(#[from] convert::ConvertError),
}

impl AcceptError {
    pub fn code(&self) -> tonic::Code {
        match self {
            AcceptError::NoClientCert | AcceptError::BadClientCert(_) => {
                tonic::Code::Unauthenticated
            }
            AcceptError::ForeignTrustDomain { .. }
            | AcceptError::NotTheCaller { .. }
            | AcceptError::ForeignGateway { .. } => tonic::Code::PermissionDenied,
            AcceptError::EmptyProxyId
            | AcceptError::UnknownMode(_)
            | AcceptError::GatewayNotGatewayMode
            | AcceptError::BadGateway { .. }
            | AcceptError::Workload(_) => tonic::Code::InvalidArgument,
        }
    }
}

impl From<AcceptError> for Status {
    fn from(e: AcceptError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// A message on an established stream that ends it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("Hello may only be the first message")]
    SecondHello,
    #[error("empty DiscoveryRequest")]
    Empty,
}

/// The SPIFFE ID of the client certificate the TLS layer verified.
pub fn peer_identity(
    certs: Option<&[impl AsRef<[u8]>]>,
    trust_domain: &str,
) -> Result<SpiffeId, AcceptError> {
    let leaf = certs
        .and_then(|c| c.first())
        .ok_or(AcceptError::NoClientCert)?;
    let id = SpiffeId::from_cert_der(leaf.as_ref()).map_err(AcceptError::BadClientCert)?;
    if id.trust_domain() != trust_domain {
        return Err(AcceptError::ForeignTrustDomain {
            id,
            trust_domain: trust_domain.to_string(),
        });
    }
    Ok(id)
}

/// What a valid Hello asks for.
#[derive(Debug)]
pub struct Start {
    pub proxy_id: String,
    pub workload_name: String,
    pub mode: String,
    pub registration: Option<Workload>,
    pub subscriptions: Vec<ServiceKey>,
    /// Subscriptions refused on their own: (key as sent, reason).
    pub refused: Vec<(String, String)>,
    pub known: Vec<(ResourceKey, String)>,
    /// The Gateway a gateway proxy follows.
    pub gateway: Option<ServiceKey>,
    /// A sidecar's workload, for its inbound policy.
    pub inbound: Option<crate::index::ProxyWorkload>,
    /// Who the proxy is, for its discovery scope.
    pub origin: ProxyOrigin,
}

/// Splits subscription keys into valid ones and refusals.
fn parse_keys(keys: &[String]) -> (Vec<ServiceKey>, Vec<(String, String)>) {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for k in keys {
        match convert::service_key_from_proto(k) {
            Ok(key) => ok.push(key),
            Err(e) => refused.push((truncate(k), e.to_string())),
        }
    }
    (ok, refused)
}

/// Keys echoed back in refusals are cut, so a huge key is not sent back
/// whole.
fn truncate(k: &str) -> String {
    match k.char_indices().nth(256) {
        Some((i, _)) => format!("{}...", &k[..i]),
        None => k.to_string(),
    }
}

/// Validates a Hello against the caller's certificate identity.
pub fn check_hello(peer: &SpiffeId, hello: Hello) -> Result<Start, AcceptError> {
    if hello.proxy_id.is_empty() {
        return Err(AcceptError::EmptyProxyId);
    }
    let w = hello
        .workload
        .ok_or(convert::ConvertError::MissingWorkload)?;
    if w.namespace != peer.namespace() || w.service_account != peer.service_account() {
        return Err(AcceptError::NotTheCaller {
            namespace: w.namespace,
            service_account: w.service_account,
            peer: peer.clone(),
        });
    }
    let mode = match hello.mode.as_str() {
        "" | "sidecar" => "sidecar",
        "gateway" => "gateway",
        other => return Err(AcceptError::UnknownMode(other.to_string())),
    };
    let gateway = match hello.gateway.as_str() {
        "" => None,
        _ if mode != "gateway" => return Err(AcceptError::GatewayNotGatewayMode),
        raw => Some(gateway_key(peer, raw)?),
    };
    let registration = if hello.register {
        Some(convert::workload_from_proto(
            &hello.proxy_id,
            &w,
            peer.clone(),
        )?)
    } else {
        None
    };
    let (subscriptions, refused) = parse_keys(&hello.subscriptions);
    let known = hello
        .known
        .iter()
        .filter_map(|rv| {
            Some((
                convert::key_from_proto(rv.key.as_ref()?)?,
                rv.version.clone(),
            ))
        })
        .collect();
    let labels: BTreeMap<String, String> = w
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The namespace is the certificate's (checked above). Its scope label
    // can only narrow what the mesh setting lets that namespace see, so
    // the proxy's word is enough for it.
    let origin = ProxyOrigin::new(&w.namespace, &w.name, &labels);
    // Labels are the proxy's word, and only choose the policies that guard
    // its own workload: claiming others can only weaken its own protection.
    let inbound = (mode == "sidecar").then(|| crate::index::ProxyWorkload {
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        labels,
    });
    Ok(Start {
        proxy_id: hello.proxy_id,
        inbound,
        origin,
        workload_name: w.name,
        mode: mode.to_string(),
        registration,
        subscriptions,
        refused,
        known,
        gateway,
    })
}

/// The Gateway a Hello names, which must be of the caller's own namespace:
/// the certificate proves the namespace, so a gateway proxy cannot read
/// the routes (and backends) of another team's Gateway.
fn gateway_key(peer: &SpiffeId, raw: &str) -> Result<ServiceKey, AcceptError> {
    let gateway = convert::service_key_from_proto(raw).map_err(|e| AcceptError::BadGateway {
        key: truncate(raw),
        reason: e.to_string(),
    })?;
    if gateway.namespace() != peer.namespace() {
        return Err(AcceptError::ForeignGateway {
            gateway,
            peer: peer.clone(),
        });
    }
    Ok(gateway)
}

/// Removes everything a stream put in the index and registry, however the
/// stream ends (also if its task panics).
struct Guard {
    conn: ConnId,
    index: SharedIndex,
    registry: Arc<ProxyRegistry>,
    metrics: Arc<Metrics>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        {
            let mut ix = self.index.lock();
            ix.unregister_workload(self.conn);
            ix.disconnect_proxy(self.conn);
        }
        self.registry.remove(self.conn.0);
        self.metrics.connected_proxies.dec();
    }
}

/// One message for a proxy, boxed: the channel's buffer is allocated a
/// block of 32 slots at a time, the first when the stream opens, so an
/// idle stream holds 32 pointers instead of 32 responses (about 3 KB
/// less per stream; docs/benchmarks.md, "controller memory per stream").
type Outgoing = Box<Result<DiscoveryResponse, Status>>;
type Outbound = mpsc::Sender<Outgoing>;
/// The receiving end handed to tonic, unboxing each message.
type Responses = tokio_stream::adapters::Map<
    ReceiverStream<Outgoing>,
    fn(Outgoing) -> Result<DiscoveryResponse, Status>,
>;

struct StreamTask {
    guard: Guard,
    session: Session,
    view: watch::Receiver<Arc<ProxyView>>,
    tx: Outbound,
    registered: bool,
    proxy_id: String,
    shutdown: Option<watch::Receiver<bool>>,
    /// Refusals not sent yet.
    refused: Vec<(String, String)>,
}

fn fresh_nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn subscription_names(index: &SharedIndex, conn: ConnId) -> Vec<String> {
    index
        .lock()
        .subscriptions(conn)
        .map(|s| s.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

impl StreamTask {
    async fn run(mut self, mut inbound: Streaming<DiscoveryRequest>) {
        if self.push().await.is_err() || self.send_refused().await.is_err() {
            return;
        }
        let shutdown = self.shutdown.take();
        let stop = async move {
            match shutdown {
                // A dropped sender means the controller is going away too.
                Some(mut rx) => drop(rx.wait_for(|stop| *stop).await),
                None => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        if let Err(e) = self.handle(m) {
                            tracing::warn!(proxy_id = %self.proxy_id, error = %e, "closing discovery stream");
                            let _ = self.tx.send(Box::new(Err(Status::invalid_argument(e.to_string())))).await;
                            return;
                        }
                        // The view change (if any) is pushed by the watch
                        // branch; refusals go out right away.
                        if self.send_refused().await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(proxy_id = %self.proxy_id, error = %status, "discovery stream error");
                        break;
                    }
                },
                changed = self.view.changed() => {
                    if changed.is_err() || self.push().await.is_err() {
                        break;
                    }
                }
                _ = self.tx.closed() => break,
                _ = &mut stop => break,
            }
        }
        tracing::info!(proxy_id = %self.proxy_id, "proxy disconnected");
    }

    /// Tells the proxy which subscriptions were refused, in a response of
    /// their own (no resources, so the proxy's state is unchanged).
    async fn send_refused(&mut self) -> Result<(), ()> {
        if self.refused.is_empty() {
            return Ok(());
        }
        let refused = std::mem::take(&mut self.refused);
        tracing::debug!(proxy_id = %self.proxy_id, count = refused.len(), "subscriptions refused");
        let resp = DiscoveryResponse {
            nonce: fresh_nonce(),
            resources: Vec::new(),
            removed: Vec::new(),
            refused: refused
                .into_iter()
                .map(|(service, reason)| RefusedSubscription { service, reason })
                .collect(),
        };
        self.tx.send(Box::new(Ok(resp))).await.map_err(|_| ())
    }

    /// Sends what changed in the proxy's view, if anything.
    async fn push(&mut self) -> Result<(), ()> {
        let view = self.view.borrow_and_update().clone();
        let Some(delta) = self.session.delta(&view, fresh_nonce) else {
            return Ok(());
        };
        let span = tracing::info_span!(
            "push",
            nonce = %delta.nonce,
            resources = delta.resources.len(),
            removed = delta.removed.len(),
        );
        let resp = DiscoveryResponse {
            nonce: delta.nonce,
            resources: delta
                .resources
                .iter()
                .map(|r| convert::resource_to_proto(r))
                .collect(),
            removed: delta.removed.iter().map(convert::key_to_proto).collect(),
            refused: Vec::new(),
        };
        tracing::Instrument::instrument(self.tx.send(Box::new(Ok(resp))), span)
            .await
            .map_err(|_| ())?;
        self.guard.metrics.discovery_pushes.inc();
        Ok(())
    }

    fn handle(&mut self, msg: DiscoveryRequest) -> Result<(), RequestError> {
        let conn = self.guard.conn;
        match msg.kind {
            Some(Kind::Hello(_)) => Err(RequestError::SecondHello),
            Some(Kind::Subscribe(s)) => {
                let (add, refused_add) = parse_keys(&s.add);
                // Removing a key that cannot exist is a no-op, not an error.
                let (remove, _) = parse_keys(&s.remove);
                self.refused.extend(refused_add);
                let (over, max) = {
                    let mut ix = self.guard.index.lock();
                    (ix.subscribe(conn, &add, &remove), ix.max_subscriptions())
                };
                self.refused
                    .extend(over.into_iter().map(|k| (k.to_string(), over_limit(max))));
                let subs = subscription_names(&self.guard.index, conn);
                self.guard
                    .registry
                    .update(conn.0, |r| r.subscriptions = subs);
                Ok(())
            }
            Some(Kind::Ack(a)) => {
                if let Some(answered) = self.session.ack(&a.nonce) {
                    self.guard.metrics.push_answered(
                        PushAnswer::Ack,
                        answered.kind,
                        answered.elapsed,
                    );
                    let acked = acked_map(self.session.acked());
                    self.guard.registry.update(conn.0, |r| r.acked = acked);
                }
                Ok(())
            }
            Some(Kind::Nack(n)) => {
                if let Some(answered) = self.session.nack(&n.nonce) {
                    self.guard.metrics.push_answered(
                        PushAnswer::Nack,
                        answered.kind,
                        answered.elapsed,
                    );
                }
                self.guard.metrics.discovery_nacks.inc();
                tracing::warn!(proxy_id = %self.proxy_id, nonce = %n.nonce, error = %n.error, "proxy rejected config");
                let rec = NackRecord {
                    nonce: n.nonce,
                    error: n.error,
                    at: now_rfc3339(),
                };
                self.guard
                    .registry
                    .update(conn.0, |r| r.last_nack = Some(rec));
                Ok(())
            }
            Some(Kind::Status(st)) => {
                if self.registered {
                    self.guard.index.lock().set_ready(conn, st.ready);
                    self.guard.registry.update(conn.0, |r| {
                        if r.registered {
                            r.ready = Some(st.ready);
                        }
                    });
                }
                Ok(())
            }
            None => Err(RequestError::Empty),
        }
    }
}

fn over_limit(max: usize) -> String {
    format!("this proxy already holds the maximum of {max} subscriptions (unsubscribe first)")
}

fn acked_map(acked: &BTreeMap<ResourceKey, String>) -> BTreeMap<String, String> {
    acked
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type StreamStream = Responses;

    async fn stream(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let certs = request.peer_certs();
        let peer = peer_identity(certs.as_deref().map(|v| v.as_slice()), &self.trust_domain)
            .map_err(Status::from)?;
        let leaf = certs.as_deref().and_then(|c| c.first()).map(|c| c.to_vec());
        let leaf_chain: Vec<Vec<u8>> = certs
            .as_deref()
            .map(|c| c.iter().map(|c| c.to_vec()).collect())
            .unwrap_or_default();
        let remote = request.remote_addr();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello received within 10s"))??
            .ok_or_else(|| Status::invalid_argument("stream closed before Hello"))?;
        let mut hello = match first.kind {
            Some(Kind::Hello(h)) => h,
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        // A bad admin address costs the proxy its metrics, not its stream.
        let admin_addr = hello.admin.take().and_then(|a| {
            admin_scrape_addr(&a.host, a.port, remote.map(|r| r.ip()))
                .map_err(|e| {
                    tracing::warn!(spiffe_id = %peer, error = %e, "proxy admin address ignored");
                })
                .ok()
        });
        let mut start = check_hello(&peer, hello).map_err(|e| {
            tracing::warn!(spiffe_id = %peer, error = %e, "discovery stream refused");
            Status::from(e)
        })?;
        if let Some(w) = &start.registration {
            let who = Peer {
                identity: peer.clone(),
                token_id: leaf.as_deref().and_then(token_id_from_cert_der),
                remote_ip: remote.map(|a| a.ip()),
            };
            if let Err(e) = self.policy.admit(&who, w).await {
                tracing::warn!(spiffe_id = %peer, error = %e, "registration refused");
                return Err(Status::permission_denied(format!(
                    "registration refused: {e}"
                )));
            }
        }

        if let Some(Err(e)) = start
            .origin
            .requested
            .as_deref()
            .map(|r| Namespaces::parse([r]))
        {
            tracing::warn!(spiffe_id = %peer, label = DISCOVERY_NAMESPACES_KEY, error = %e, "discovery scope narrowed to the proxy's own namespace");
        }
        let registered = start.registration.is_some();
        let ready = start.registration.as_ref().map(|w| w.ready);
        let (conn, view) = {
            let mut ix = self.index.lock();
            let max = ix.max_subscriptions();
            start.subscriptions.sort();
            start.subscriptions.dedup();
            if start.subscriptions.len() > max {
                let over = start.subscriptions.split_off(max);
                start
                    .refused
                    .extend(over.into_iter().map(|k| (k.to_string(), over_limit(max))));
            }
            let conn = ix.allocate_conn();
            let view = ix.connect_proxy(conn, start.subscriptions.iter().cloned());
            // Before the stream task first reads the view, so it never
            // sends anything out of scope.
            ix.set_proxy_origin(conn, start.origin.clone());
            if let Some(gw) = start.gateway.clone() {
                ix.follow_gateway(conn, gw, peer.service_account());
            }
            if let Some(workload) = start.inbound.take() {
                ix.set_proxy_workload(conn, workload);
            }
            if let Some(w) = start.registration {
                ix.register_workload(conn, w);
            }
            (conn, view)
        };
        self.metrics.connected_proxies.inc();
        let guard = Guard {
            conn,
            index: self.index.clone(),
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
        };
        let session = Session::new(start.known.iter().cloned());
        self.registry.insert(
            conn.0,
            ProxyRecord {
                proxy_id: start.proxy_id.clone(),
                workload: start.workload_name,
                namespace: peer.namespace().to_string(),
                spiffe_id: peer.to_string(),
                mode: start.mode,
                registered,
                ready,
                connected_since: now_rfc3339(),
                subscriptions: subscription_names(&self.index, conn),
                acked: acked_map(session.acked()),
                last_nack: None,
                leaf_serial: leaf
                    .as_deref()
                    .and_then(crate::ca::rotation::leaves::serial_hex)
                    .unwrap_or_default(),
                leaf_chain,
                admin_addr,
            },
        );
        let gateway = start
            .gateway
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::info!(proxy_id = %start.proxy_id, spiffe_id = %peer, registered, gateway, "proxy connected");

        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let task = StreamTask {
            guard,
            session,
            view,
            tx,
            registered,
            proxy_id: start.proxy_id,
            shutdown: self.shutdown.clone(),
            refused: start.refused,
        };
        // One span per stream, the parent of its pushes: what a trace of
        // the controller shows for one proxy.
        let span = tracing::info_span!(
            "discovery_stream",
            proxy_id = %task.proxy_id,
            spiffe_id = %peer,
        );
        tokio::spawn(tracing::Instrument::instrument(task.run(inbound), span));
        let unbox: fn(Outgoing) -> Result<DiscoveryResponse, Status> = |m| *m;
        Ok(Response::new(ReceiverStream::new(rx).map(unbox)))
    }
}

#[cfg(test)]
mod tests;
