//! The driver's side of a rotation shared by controller replicas through a
//! Kubernetes Secret (`crate::ca::rotation::shared`): the replicas decide
//! the phase together; each one makes its own CA, trust bundle and serving
//! certificate match it ([`RotationDriver::follow`]) and says whether its
//! own proxies are done with it ([`RotationDriver::part`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{now_unix, RotationDriver};
use crate::ca::authority::{check_material, fingerprint, first_cert_der, Labels, LoadError};
use crate::ca::rotation::store;
use crate::ca::rotation::Phase;
use crate::ca::CaMaterial;
use crate::rotation::SecretStatus;

/// How long after the controller started its part of a phase is not done:
/// the proxies of a controller that restarted are reconnecting, and until
/// they have, "no proxy is waited for" would be a lie.
pub const SETTLE: Duration = Duration::from_secs(10);

/// Where the CA a rotation switched to is written (and an issuer rotated
/// from its root key), beside the CA the Secret had at start.
pub const ACTIVE_DIR: &str = "ca-active";

/// What the replicas agreed on, as this one must apply it.
pub struct Target<'a> {
    pub phase: Phase,
    pub phase_since_unix: i64,
    pub started_unix: i64,
    pub overlap_secs: u64,
    /// The CA new leaves are signed by in this phase.
    pub active: &'a CaMaterial,
    /// How the PEMs of `active` are named in errors.
    pub labels: Labels<'a>,
    /// Roots trusted besides the active one, in bundle order.
    pub also: Vec<Vec<u8>>,
}

/// This replica's part of the phase it follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub phase: Phase,
    pub done: bool,
    /// What it waits for, when not done.
    pub waiting: String,
}

pub(super) struct FollowState {
    created: Instant,
    source: Mutex<Option<SecretStatus>>,
}

impl Default for FollowState {
    fn default() -> Self {
        Self {
            created: Instant::now(),
            source: Mutex::new(None),
        }
    }
}

impl FollowState {
    pub(super) fn source(&self) -> Option<SecretStatus> {
        self.source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl RotationDriver {
    /// Makes this replica's CA, bundle and status match `target`; whether
    /// the bundle changed. A CA that fails its checks is refused and
    /// nothing changes.
    pub fn follow(&self, target: &Target<'_>) -> Result<bool, LoadError> {
        let authority = &self.parts.authority;
        let root_der = first_cert_der(target.labels.root, &target.active.root_pem)?;
        let before = authority.trust_bundle_der();
        let mut state = self.lock();
        if fingerprint(&root_der) != authority.root_fingerprint() {
            let dir = self.parts.data_dir.join(ACTIVE_DIR);
            let checked = check_material(target.active, &target.labels, &dir)?;
            if let Err(e) = store::write_ca_dir(&dir, target.active) {
                tracing::warn!(error = %e, "cannot keep a copy of the CA switched to in the data dir");
            }
            // Both roots trusted across the switch, so no answer in between
            // carries a bundle without the one a peer's leaf chains to.
            let mut across = target.also.clone();
            across.push(root_der.clone());
            authority.set_also_trusted(across);
            self.switch_ca(checked);
        }
        authority.set_also_trusted(target.also.clone());
        state.phase = target.phase;
        state.phase_since_unix = target.phase_since_unix;
        state.started_unix = target.started_unix;
        state.overlap_secs = target.overlap_secs;
        drop(state);
        let changed = authority.trust_bundle_der() != before;
        if changed {
            tracing::info!(
                phase = target.phase.as_str(),
                roots = authority.trust_bundle_der().len(),
                "trust-anchor rotation: following the phase the replicas agreed on"
            );
            self.apply_bundle();
        }
        Ok(changed)
    }

    /// Installs `material`'s issuer in place of the current one, when it
    /// is another intermediate of the current root (a renewed one).
    pub fn renew_issuer(
        &self,
        material: &CaMaterial,
        labels: &Labels<'_>,
    ) -> Result<(), LoadError> {
        let dir = self.parts.data_dir.join(ACTIVE_DIR);
        let checked = check_material(material, labels, &dir)?;
        self.parts.authority.replace_issuer(checked)?;
        self.parts
            .metrics
            .set_issuer_expiry(self.parts.authority.issuer_not_after().unix_timestamp());
        tracing::info!(
            issuer = %self.parts.authority.issuer_fingerprint(),
            "the CA Secret holds a new issuer of the same root; signing with it"
        );
        Ok(())
    }

    /// Whether this replica's proxies are done with the phase it follows.
    pub fn part(&self) -> Part {
        let state = self.lock().clone();
        let (progress, _) = self.observe(&state, now_unix());
        let (done, waiting) = match state.phase {
            Phase::Stable => (true, String::new()),
            Phase::Distributing | Phase::Finishing => (
                progress.not_acked == 0,
                format!(
                    "{} proxies have not acknowledged the trust bundle",
                    progress.not_acked
                ),
            ),
            Phase::Overlap => (
                progress.on_old_root == 0,
                format!(
                    "{} proxies hold leaves of the old root",
                    progress.on_old_root
                ),
            ),
        };
        let (done, waiting) = match (done, self.follow.created.elapsed() < SETTLE) {
            (_, true) if state.phase != Phase::Stable => (
                false,
                "proxies reconnecting to this controller, which just started".to_string(),
            ),
            (true, _) => (true, String::new()),
            (false, _) => (false, waiting),
        };
        Part {
            phase: state.phase,
            done,
            waiting,
        }
    }

    /// What `/ca/status` tells about the Secret.
    pub fn set_source(&self, source: SecretStatus) {
        *self.follow.source.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// The current trust bundle as PEM (what is published).
    pub fn bundle_pem(&self) -> String {
        super::bundle_pem(&self.parts.authority.trust_bundle_der())
    }

    pub fn authority(&self) -> &std::sync::Arc<crate::ca::Authority> {
        &self.parts.authority
    }
}
