//! The `Discovery.Stream` client: says who this proxy is, forwards the
//! services the data path subscribes to, applies each response whole (or
//! NACKs it and keeps the last good snapshot), reports app readiness (not
//! ready once the proxy withdraws to stop), and
//! reconnects with jittered backoff when the controller goes away, resyncing
//! from what it already holds. The data path keeps serving meanwhile.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mycel_api::v1 as pb;
use pb::discovery_request::Kind as Req;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rustls_pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::cache::Cache;
use super::readiness::Withdrawal;
use super::status::{DiscoveryMetrics, DiscoveryStatus};
use crate::core::backoff::Backoff;
use crate::core::channel::{ChannelError, ControllerTls};
use crate::core::credentials::{IdentityState, TrustBundle};
use crate::core::directory::handle::{Change, Subscriptions};
use crate::core::directory::model::Snapshot;

pub const RECONNECT_BACKOFF: Backoff = Backoff {
    min: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

/// How a stream reaches the controller; a trait so tests can use plaintext.
pub trait Connect: Send + Sync + 'static {
    fn connect(&self) -> impl Future<Output = Result<Channel, ChannelError>> + Send;
}

impl Connect for ControllerTls {
    async fn connect(&self) -> Result<Channel, ChannelError> {
        ControllerTls::connect(self).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Connect(#[from] ChannelError),
    #[error("discovery stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("the controller closed the discovery stream")]
    Closed,
}

/// What `Hello` says apart from the live parts (subscriptions, versions,
/// readiness). Built from the configuration by `app`.
#[derive(Clone, Debug)]
pub struct HelloParams {
    /// Stable for the life of the process, across reconnects.
    pub proxy_id: String,
    pub workload: pb::Workload,
    pub register: bool,
    pub mode: String,
    /// `<name>.<namespace>` of the Gateway whose routes to receive; "" for
    /// none.
    pub gateway: String,
}

pub struct DiscoveryClient<C> {
    connect: C,
    hello: HelloParams,
    cache: Cache,
    snapshot: watch::Sender<Arc<Snapshot>>,
    subscriptions: Subscriptions,
    identity: Arc<IdentityState>,
    ready: watch::Receiver<bool>,
    withdrawal: Withdrawal,
    status: Arc<DiscoveryStatus>,
    metrics: DiscoveryMetrics,
    admin: Option<pb::AdminAddress>,
}

impl<C: Connect> DiscoveryClient<C> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        connect: C,
        hello: HelloParams,
        snapshot: watch::Sender<Arc<Snapshot>>,
        subscriptions: Subscriptions,
        identity: Arc<IdentityState>,
        ready: watch::Receiver<bool>,
        status: Arc<DiscoveryStatus>,
        metrics: DiscoveryMetrics,
    ) -> Self {
        Self {
            connect,
            hello,
            cache: Cache::default(),
            snapshot,
            subscriptions,
            identity,
            ready,
            withdrawal: Withdrawal::default(),
            status,
            metrics,
            admin: None,
        }
    }

    /// Reports not ready once `withdrawal` is asked for, and tells it when
    /// that report is on the stream.
    pub fn with_withdrawal(mut self, withdrawal: Withdrawal) -> Self {
        self.withdrawal = withdrawal;
        self
    }

    /// The admin server's bound address, told to the controller so it can
    /// scrape this proxy's metrics.
    pub fn with_admin(mut self, admin: Option<std::net::SocketAddr>) -> Self {
        self.admin = admin.map(|a| pb::AdminAddress {
            host: a.ip().to_string(),
            port: u32::from(a.port()),
        });
        self
    }

    /// What to report: the app's readiness, unless the proxy is leaving.
    fn ready_now(&self) -> bool {
        *self.ready.borrow() && !self.withdrawal.is_asked()
    }

    /// Runs for the life of the proxy.
    pub async fn run(mut self) {
        let mut rng = StdRng::from_entropy();
        let mut failures: u32 = 0;
        loop {
            let mut got_response = false;
            let err = self.session(&mut got_response).await;
            self.status.disconnected(err.to_string());
            self.metrics.set_connected(false);
            if got_response {
                failures = 0;
            } else if failures >= 1 {
                // Twice in a row without a single answer: the controller
                // may refuse our certificate (its root was rotated out
                // while we were cut off). A renewal by join token fixes
                // that; the identity manager limits how often it tries.
                self.identity.ask_renewal();
            }
            let delay = RECONNECT_BACKOFF.delay(failures, &mut rng);
            failures = failures.saturating_add(1);
            tracing::warn!(error = %err, retry_in = ?delay, "discovery stream lost; serving the last snapshot");
            tokio::time::sleep(delay).await;
        }
    }

    fn hello(&self) -> pb::DiscoveryRequest {
        let mut workload = self.hello.workload.clone();
        workload.ready = self.ready_now();
        request(Req::Hello(pb::Hello {
            proxy_id: self.hello.proxy_id.clone(),
            workload: Some(workload),
            register: self.hello.register,
            subscriptions: self.subscriptions.all(),
            known: self.cache.known(),
            mode: self.hello.mode.clone(),
            gateway: self.hello.gateway.clone(),
            admin: self.admin.clone(),
        }))
    }

    /// One stream, until it fails. Sets `got_response` once anything
    /// arrived, so the caller resets its backoff after a useful session.
    async fn session(&mut self, got_response: &mut bool) -> StreamError {
        // Attach before reading the set for Hello: a key added in between
        // is then sent twice, never lost.
        let mut added = self.subscriptions.attach();
        let channel = match self.connect.connect().await {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        let (tx, rx) = mpsc::channel(64);
        self.ready.borrow_and_update();
        let mut withdrawing = self.withdrawal.asked();
        withdrawing.borrow_and_update();
        let mut last_ready = self.ready_now();
        if tx.send(self.hello()).await.is_err() {
            return StreamError::Closed;
        }
        let mut client = pb::discovery_client::DiscoveryClient::new(channel);
        let mut responses = match client.stream(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) => return s.into(),
        };
        self.status.connected();
        self.metrics.set_connected(true);
        tracing::info!(proxy_id = %self.hello.proxy_id, "discovery stream connected");
        if !last_ready && self.withdrawal.is_asked() {
            // This stream's Hello already said not ready.
            self.withdrawal.told(false);
        }
        let mut added_open = true;
        let mut ready_open = true;
        let mut withdrawing_open = true;
        let mut sweep = tokio::time::interval(self.subscriptions.sweep_interval());
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                msg = responses.message() => msg,
                change = added.recv(), if added_open => {
                    match change {
                        Some(change) => {
                            let mut changes = vec![change];
                            while let Ok(more) = added.try_recv() {
                                changes.push(more);
                            }
                            if tx.send(subscribe(changes)).await.is_err() {
                                return StreamError::Closed;
                            }
                        }
                        None => added_open = false,
                    }
                    continue;
                }
                _ = sweep.tick() => {
                    let gone = self.subscriptions.expire();
                    if gone.is_empty() {
                        continue;
                    }
                    tracing::debug!(services = gone.len(), "unused subscriptions dropped");
                    for key in &gone {
                        self.cache.forget(key);
                    }
                    let snap = self.cache.snapshot(&self.subscriptions.all());
                    self.snapshot.send_replace(Arc::new(snap));
                    let changes = gone.into_iter().map(Change::Remove).collect();
                    if tx.send(subscribe(changes)).await.is_err() {
                        return StreamError::Closed;
                    }
                    continue;
                }
                changed = self.ready.changed(), if ready_open => {
                    if changed.is_err() {
                        ready_open = false;
                        continue;
                    }
                    self.ready.borrow_and_update();
                    if let Err(e) = self.report_ready(&tx, &mut last_ready).await {
                        return e;
                    }
                    continue;
                }
                changed = withdrawing.changed(), if withdrawing_open => {
                    if changed.is_err() {
                        withdrawing_open = false;
                        continue;
                    }
                    withdrawing.borrow_and_update();
                    if let Err(e) = self.report_ready(&tx, &mut last_ready).await {
                        return e;
                    }
                    continue;
                }
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => return StreamError::Closed,
                Err(s) => return s.into(),
            };
            *got_response = true;
            let reply = self.handle(&resp);
            if tx.send(reply).await.is_err() {
                return StreamError::Closed;
            }
        }
    }

    /// Sends a `WorkloadStatus` if what to report changed since
    /// `last_ready`; tells a pending withdrawal once it is sent.
    async fn report_ready(
        &self,
        tx: &mpsc::Sender<pb::DiscoveryRequest>,
        last_ready: &mut bool,
    ) -> Result<(), StreamError> {
        let ready = self.ready_now();
        let was_ready = *last_ready;
        if ready != was_ready {
            *last_ready = ready;
            let status = pb::WorkloadStatus { ready };
            if tx.send(request(Req::Status(status))).await.is_err() {
                return Err(StreamError::Closed);
            }
        }
        if self.withdrawal.is_asked() {
            self.withdrawal.told(was_ready);
        }
        Ok(())
    }

    /// Applies one response and returns the ACK or NACK to send.
    fn handle(&mut self, resp: &pb::DiscoveryResponse) -> pb::DiscoveryRequest {
        match self.cache.apply(resp) {
            Ok(applied) => {
                if let Some(roots) = applied.bundle {
                    self.install_bundle(roots);
                }
                let snap = self.cache.snapshot(&self.subscriptions.all());
                self.snapshot.send_replace(Arc::new(snap));
                self.status.acked(&resp.nonce);
                self.metrics.ack();
                tracing::debug!(nonce = %resp.nonce, resources = resp.resources.len(), "discovery response applied");
                request(Req::Ack(pb::Ack {
                    nonce: resp.nonce.clone(),
                }))
            }
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(nonce = %resp.nonce, %error, "discovery response rejected; keeping the last good snapshot");
                self.status.nacked(&resp.nonce, &error);
                self.metrics.nack();
                request(Req::Nack(pb::Nack {
                    nonce: resp.nonce.clone(),
                    error,
                }))
            }
        }
    }

    fn install_bundle(&self, roots: Vec<CertificateDer<'static>>) {
        if self.identity.bundle().roots != roots {
            tracing::info!(roots = roots.len(), "trust bundle updated");
            self.identity.set_bundle(TrustBundle::new(roots));
        }
    }
}

/// One `Subscribe` for a batch of changes, in order: a key removed and
/// added again in the same batch ends subscribed.
fn subscribe(changes: Vec<Change>) -> pb::DiscoveryRequest {
    let mut sub = pb::Subscribe {
        add: vec![],
        remove: vec![],
    };
    for change in changes {
        match change {
            Change::Add(k) => {
                sub.remove.retain(|r| r != &k);
                sub.add.push(k);
            }
            Change::Remove(k) => {
                sub.add.retain(|a| a != &k);
                sub.remove.push(k);
            }
        }
    }
    request(Req::Subscribe(sub))
}

fn request(kind: Req) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest { kind: Some(kind) }
}
