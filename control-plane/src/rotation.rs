//! Drives a trust-anchor rotation (phases in [`crate::ca::rotation`]):
//! starts one on request, observes the connected proxies (which bundle
//! they ACKed, which root their current leaf chains to), and carries out
//! each phase change: state file first, then the CA, the trust bundle the
//! index pushes, the roots the gRPC port accepts clients from, the
//! controller's own serving certificate, and the roots published to
//! Kubernetes (ConfigMaps, webhook caBundle). A change whose state cannot be
//! written is not made (retried at the next tick).
//!
//! With a CA kept in a Kubernetes Secret the phases are the replicas'
//! shared decision (`crate::ca::rotation::shared`, driven by
//! `sources::k8s::ca_secret::follow`): the driver then only follows
//! ([`follow`]) and tells how far its own proxies are.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::ca::authority::{chain_root, fingerprint, generate_material, LoadError};
use crate::ca::rotation::leaves::LeafTracker;
use crate::ca::rotation::store::{self, Persisted, StoreError};
use crate::ca::rotation::{next_phase, Phase, Progress};
use crate::ca::{Authority, CaMaterial};
use crate::index::SharedIndex;
use crate::metrics::Metrics;
use crate::registry::{ProxyRecord, ProxyRegistry};
use crate::serving::{ClientRoots, ServingCerts};

pub mod follow;
pub(crate) mod status;

pub use follow::{Part, Target};
pub use status::{ProxyRoot, ReplicaInfo, RootInfo, RotationStatus, SecretStatus};

/// How often the driver looks at the proxies.
pub const TICK: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("a rotation is already under way (phase {0}); wait for it to finish")]
    Busy(&'static str),
    #[error("the new CA is refused: {0}")]
    Refused(#[from] LoadError),
    #[error(
        "give the new root certificate, issuer certificate and issuer key together (missing {0})"
    )]
    Partial(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the CA follows Kubernetes Secret {0} (--ca-secret): put the new root and issuer in it (root.pem, issuer.pem, issuer.key and optionally root.key; or cert-manager's ca.crt, tls.crt, tls.key) and every controller replica rotates to it; `mycelctl ca status` shows the progress")]
    Shared(String),
}

/// A request to start a rotation: a generated CA when no PEM is given.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    #[serde(default)]
    pub root_cert_pem: Option<String>,
    #[serde(default)]
    pub root_key_pem: Option<String>,
    #[serde(default)]
    pub issuer_cert_pem: Option<String>,
    #[serde(default)]
    pub issuer_key_pem: Option<String>,
    /// Overrides `--rotation-overlap` for this rotation.
    #[serde(default)]
    pub overlap_secs: Option<u64>,
}

impl StartRequest {
    fn material(self) -> Result<Option<CaMaterial>, RotationError> {
        let Self {
            root_cert_pem,
            root_key_pem,
            issuer_cert_pem,
            issuer_key_pem,
            ..
        } = self;
        match (root_cert_pem, issuer_cert_pem, issuer_key_pem) {
            (None, None, None) if root_key_pem.is_none() => Ok(None),
            (Some(root_pem), Some(issuer_pem), Some(issuer_key_pem)) => Ok(Some(CaMaterial {
                root_pem,
                root_key_pem,
                issuer_pem,
                issuer_key_pem,
            })),
            (None, _, _) => Err(RotationError::Partial("the root certificate")),
            (_, None, _) => Err(RotationError::Partial("the issuer certificate")),
            (_, _, None) => Err(RotationError::Partial("the issuer key")),
        }
    }
}

/// What the driver works on.
pub struct DriverParts {
    pub data_dir: PathBuf,
    pub issuer_ttl: Duration,
    pub serving_ttl: Duration,
    pub overlap: Duration,
    pub authority: Arc<Authority>,
    pub index: SharedIndex,
    pub registry: Arc<ProxyRegistry>,
    pub leaves: Arc<LeafTracker>,
    pub certs: Arc<ServingCerts>,
    pub client_roots: Arc<ClientRoots>,
    pub metrics: Arc<Metrics>,
    /// The trust bundle as PEM, for what publishes it to Kubernetes.
    pub roots: watch::Sender<String>,
    /// `Some(secret)`: the CA is kept in that Kubernetes Secret and the
    /// phases are shared by the replicas ([`follow`]); nothing is kept in
    /// the data dir's rotation state.
    pub shared: Option<String>,
}

pub struct RotationDriver {
    parts: DriverParts,
    state: Mutex<Persisted>,
    follow: follow::FollowState,
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Roots as concatenated PEM, as files and ConfigMaps hold them.
pub fn bundle_pem(roots: &[Vec<u8>]) -> String {
    roots
        .iter()
        .map(|der| crate::ca::authority::cert_pem(der))
        .collect()
}

impl RotationDriver {
    /// `state` = what the data dir held at start (`None`: never rotated).
    pub fn new(parts: DriverParts, state: Option<Persisted>) -> Arc<Self> {
        let state = state.unwrap_or_else(|| Persisted::stable(now_unix(), parts.overlap));
        Arc::new(Self {
            parts,
            state: Mutex::new(state),
            follow: follow::FollowState::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Persisted> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// Starts a rotation to the CA `req` gives (or a generated one). The
    /// new CA is checked and the state written before anything changes, so
    /// a refusal leaves the mesh as it was.
    pub fn start(&self, req: StartRequest) -> Result<RotationStatus, RotationError> {
        if let Some(secret) = &self.parts.shared {
            return Err(RotationError::Shared(secret.clone()));
        }
        let overlap = req
            .overlap_secs
            .map(Duration::from_secs)
            .unwrap_or(self.parts.overlap);
        {
            let mut state = self.lock();
            if state.phase != Phase::Stable {
                return Err(RotationError::Busy(state.phase.as_str()));
            }
            let material = match req.material()? {
                Some(m) => m,
                None => {
                    generate_material(self.parts.authority.trust_domain(), self.parts.issuer_ttl)?
                }
            };
            let checked = self
                .parts
                .authority
                .check_new_ca(&material, &self.parts.data_dir.join("ca"))?;
            let now = now_unix();
            let next = Persisted {
                phase: Phase::Distributing,
                phase_since_unix: now,
                started_unix: now,
                overlap_secs: overlap.as_secs(),
                next: Some(material),
                previous_roots_pem: Vec::new(),
                install: None,
                retired: state.retired.clone(),
            };
            store::save(&self.parts.data_dir, &next)?;
            tracing::info!(
                new_root = %checked.root_fingerprint(),
                overlap = %humantime::format_duration(overlap),
                "trust-anchor rotation started: distributing the new root"
            );
            self.parts
                .authority
                .set_also_trusted(vec![checked.root_der().to_vec()]);
            *state = next;
        }
        self.apply_bundle();
        Ok(self.status())
    }

    /// Pushes the authority's bundle to proxies, the gRPC port and what
    /// publishes it to Kubernetes.
    fn apply_bundle(&self) {
        let roots = self.parts.authority.trust_bundle_der();
        if let Err(e) = self.parts.client_roots.set(&roots) {
            tracing::error!(error = %e, "cannot update the roots the gRPC port accepts");
        }
        let pem = bundle_pem(&roots);
        self.parts.roots.send_if_modified(|current| {
            let changed = *current != pem;
            *current = pem;
            changed
        });
        self.parts.index.lock().set_trust_bundle(roots);
    }

    /// The root `record`'s current leaf chains to, when known.
    fn proxy_root(&self, record: &ProxyRecord, bundle: &[Vec<u8>]) -> Option<String> {
        self.parts
            .leaves
            .current_root(&record.leaf_serial)
            .or_else(|| chain_root(&record.leaf_chain, bundle).map(fingerprint))
    }

    fn observe(&self, state: &Persisted, now: i64) -> (Progress, Vec<ProxyRoot>) {
        let bundle = self.parts.authority.trust_bundle_der();
        let version = crate::index::version_of(
            &crate::model::ResourceKey::trust_bundle(),
            &crate::model::ResourceBody::TrustBundle {
                roots_der: bundle.clone(),
            },
        );
        let key = crate::model::ResourceKey::trust_bundle().to_string();
        let current = self.parts.authority.root_fingerprint();
        let proxies: Vec<ProxyRoot> = self
            .parts
            .registry
            .snapshot()
            .iter()
            .map(|r| {
                let root = self.proxy_root(r, &bundle);
                ProxyRoot {
                    proxy_id: r.proxy_id.clone(),
                    workload: r.workload.clone(),
                    namespace: r.namespace.clone(),
                    spiffe_id: r.spiffe_id.clone(),
                    on_current_root: root.as_deref() == Some(current.as_str()),
                    root,
                    bundle_acked: r.acked.get(&key) == Some(&version),
                }
            })
            .collect();
        let progress = Progress {
            now_unix: now,
            phase_since_unix: state.phase_since_unix,
            overlap: Duration::from_secs(state.overlap_secs),
            not_acked: proxies.iter().filter(|p| !p.bundle_acked).count(),
            on_old_root: proxies.iter().filter(|p| !p.on_current_root).count(),
        };
        (progress, proxies)
    }

    /// One look at the proxies; moves to the next phase when it is due.
    pub fn tick(&self) {
        let mut state = self.lock();
        if state.phase == Phase::Stable || self.parts.shared.is_some() {
            return;
        }
        let now = now_unix();
        let (progress, _) = self.observe(&state, now);
        let Some(next) = next_phase(state.phase, &progress) else {
            return;
        };
        let result = match next {
            Phase::Overlap => self.enter_overlap(&mut state, now),
            Phase::Finishing => self.enter_finishing(&mut state, now),
            Phase::Stable => self.enter_stable(&mut state, now),
            Phase::Distributing => Ok(()),
        };
        drop(state);
        match result {
            Ok(()) => self.apply_bundle(),
            Err(e) => {
                tracing::error!(error = %e, phase = next.as_str(), "cannot enter the next rotation phase; retrying")
            }
        }
    }

    fn enter_overlap(&self, state: &mut Persisted, now: i64) -> Result<(), RotationError> {
        let authority = &self.parts.authority;
        let Some(material) = state.next.clone() else {
            return self.abandon(state, now, "the state file holds no new CA");
        };
        // Checked again: time has passed (it may have expired) or the state
        // file was read back after a restart.
        let checked = match authority.check_new_ca(&material, &self.parts.data_dir.join("ca")) {
            Ok(c) => c,
            Err(e) => return self.abandon(state, now, &e.to_string()),
        };
        let previous_pem = authority.root_pem();
        let mut next = state.clone();
        next.phase = Phase::Overlap;
        next.phase_since_unix = now;
        next.next = None;
        next.previous_roots_pem = vec![previous_pem];
        next.install = Some(material.clone());
        store::save(&self.parts.data_dir, &next)?;
        // Committed: a crash from here is finished at the next start.
        match store::install_files(&self.parts.data_dir, &material) {
            Ok(()) => {
                next.install = None;
                if let Err(e) = store::save(&self.parts.data_dir, &next) {
                    tracing::warn!(error = %e, "cannot clear the install mark; the next start rewrites the same CA files");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the new CA files; the next start retries from the state file")
            }
        }
        let previous = self.switch_ca(checked);
        authority.set_also_trusted(vec![previous]);
        *state = next;
        Ok(())
    }

    /// Makes `checked` the CA new leaves are signed by, with a serving
    /// certificate from it and its expiries exported; returns the previous
    /// root.
    fn switch_ca(&self, checked: crate::ca::NewCa) -> Vec<u8> {
        let authority = &self.parts.authority;
        let new_fp = checked.root_fingerprint().to_string();
        let previous = authority.install(checked);
        match authority.serving_cert_for(self.parts.serving_ttl) {
            Ok(serving) => {
                if let Err(e) = self.parts.certs.set(&serving) {
                    tracing::error!(error = %e, "cannot install the new serving certificate");
                }
                self.parts
                    .metrics
                    .set_serving_expiry(serving.not_after.unix_timestamp());
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot issue a serving certificate from the new root")
            }
        }
        self.parts
            .metrics
            .set_root_expiry(authority.root_not_after().unix_timestamp());
        self.parts
            .metrics
            .set_issuer_expiry(authority.issuer_not_after().unix_timestamp());
        tracing::info!(root = %new_fp, "rotation: signing with the new root; proxies renew");
        previous
    }

    fn enter_finishing(&self, state: &mut Persisted, now: i64) -> Result<(), RotationError> {
        let mut next = state.clone();
        let retired = self
            .parts
            .authority
            .trust_bundle_der()
            .iter()
            .skip(1)
            .map(|der| fingerprint(der))
            .collect::<Vec<_>>();
        next.phase = Phase::Finishing;
        next.phase_since_unix = now;
        next.previous_roots_pem.clear();
        next.retired.extend(retired);
        next.retired.dedup();
        store::save(&self.parts.data_dir, &next)?;
        self.parts.authority.set_also_trusted(Vec::new());
        *state = next;
        tracing::info!("rotation: every proxy holds a new-root leaf; the old root is removed");
        Ok(())
    }

    fn enter_stable(&self, state: &mut Persisted, now: i64) -> Result<(), RotationError> {
        let mut next = state.clone();
        next.phase = Phase::Stable;
        next.phase_since_unix = now;
        store::save(&self.parts.data_dir, &next)?;
        *state = next;
        tracing::info!("rotation finished: one root");
        Ok(())
    }

    /// Gives up a rotation still in Distributing (the new CA became
    /// unusable): back to the current root alone.
    fn abandon(&self, state: &mut Persisted, now: i64, why: &str) -> Result<(), RotationError> {
        let mut next = state.clone();
        next.phase = Phase::Stable;
        next.phase_since_unix = now;
        next.next = None;
        store::save(&self.parts.data_dir, &next)?;
        self.parts.authority.set_also_trusted(Vec::new());
        *state = next;
        tracing::error!(reason = %why, "rotation abandoned before switching; keeping the current root");
        Ok(())
    }

    pub fn status(&self) -> RotationStatus {
        let state = self.lock().clone();
        let now = now_unix();
        let (progress, proxies) = self.observe(&state, now);
        let mut status = status::build(&self.parts.authority, &state, &progress, proxies);
        status.secret = self.follow.source();
        status
    }

    /// Ticks until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.tick(),
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
