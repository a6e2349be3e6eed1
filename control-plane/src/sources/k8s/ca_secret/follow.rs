//! Follows the CA Secret while the controller runs: read every `poll`
//! (with the `get` the controller already has; RBAC grants no watch on
//! it), the rotation it records applied to this replica's CA and bundle,
//! the shared decision (`crate::ca::rotation::shared::decide`) taken and
//! written, and this replica's report written while a rotation runs.
//!
//! A Secret whose own CA is unusable (bad PEM, a key not matching its
//! certificate, an issuer not chaining to the root, expired) changes
//! nothing: the CA in use keeps signing, and the reason is logged, sent as
//! a Warning Event on the Secret (reason [`INVALID_REASON`]) and shown by
//! `/ca/status` (`mycelctl ca status` exits 1 on it).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client};
use time::OffsetDateTime;
use tokio::sync::watch;

use super::record::{self, Held, Kept};
use super::{CaSecretError, API_TIMEOUT};
use crate::ca::authority::{check_material, fingerprint, first_cert_der, Labels};
use crate::ca::rotation::shared::{decide, Clock, Me, Report, Seen, Step};
use crate::ca::rotation::Phase;
use crate::ca::CaMaterial;
use crate::registry::rfc3339;
use crate::rotation::follow::Target;
use crate::rotation::{RotationDriver, SecretStatus};

mod write;

use write::describe;

/// How often the Secret is read by default (`--ca-secret-poll`).
pub const DEFAULT_POLL: Duration = Duration::from_secs(10);
/// The Event reason of a Secret whose CA is refused.
pub const INVALID_REASON: &str = "InvalidCA";
/// The Event reason of a phase this replica moved the rotation to.
pub const ROTATION_REASON: &str = "TrustAnchorRotation";
/// Reports this many times older than a live one are removed.
const STALE_FACTOR: i64 = 10;

/// What the follower publishes confirm: the roots each publisher last put
/// everywhere (`None` until it has). Absent ones are not waited for.
#[derive(Default)]
pub struct Published {
    pub configmaps: Option<watch::Receiver<Option<String>>>,
    pub webhook: Option<watch::Receiver<Option<String>>>,
}

impl Published {
    /// Whether every publisher holds `bundle`, or what one waits for.
    fn holds(&self, bundle: &str) -> Result<(), &'static str> {
        let ok = |r: &Option<watch::Receiver<Option<String>>>| {
            r.as_ref()
                .is_none_or(|r| r.borrow().as_deref() == Some(bundle))
        };
        if !ok(&self.configmaps) {
            return Err("the trust-bundle ConfigMaps are not all written yet");
        }
        if !ok(&self.webhook) {
            return Err("the webhook caBundle is not written yet");
        }
        Ok(())
    }
}

/// Where the Secret is and how the rotation runs.
#[derive(Clone, Debug)]
pub struct FollowConfig {
    pub namespace: String,
    pub name: String,
    pub poll: Duration,
    /// `--rotation-overlap`, for rotations this replica starts.
    pub overlap: Duration,
}

/// The Secret's own CA, checked.
struct Own {
    material: CaMaterial,
    labels: Labels<'static>,
    root: String,
    issuer: String,
}

struct Follower {
    api: Api<Secret>,
    config: FollowConfig,
    secret: String,
    replica: String,
    driver: Arc<RotationDriver>,
    published: Published,
    events: Api<Event>,
    /// The last refusal reported, so one is sent once, not every poll.
    reported: Option<String>,
    /// The issuer the Secret held when last read.
    seen_issuer: Option<String>,
    status: SecretStatus,
}

/// Follows the CA Secret until `shutdown`; never returns an error (each
/// failure is logged, shown and retried at the next poll).
pub async fn follow_ca_secret(
    client: Client,
    config: FollowConfig,
    driver: Arc<RotationDriver>,
    published: Published,
    mut shutdown: watch::Receiver<bool>,
) {
    let replica = format!("{:08x}", rand::random::<u32>());
    let secret = format!("{}/{}", config.namespace, config.name);
    let events = Api::namespaced(client.clone(), &config.namespace);
    let mut f = Follower {
        api: Api::namespaced(client, &config.namespace),
        status: SecretStatus {
            name: secret.clone(),
            replica: replica.clone(),
            ..SecretStatus::default()
        },
        config,
        secret,
        replica,
        driver,
        published,
        events,
        reported: None,
        seen_issuer: None,
    };
    tracing::info!(secret = %f.secret, replica = %f.replica, poll = %humantime::format_duration(f.config.poll), "following the CA Secret");
    loop {
        f.poll().await;
        f.driver.set_source(f.status.clone());
        tokio::select! {
            () = tokio::time::sleep(f.config.poll) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn root_fp(pem: &str) -> Option<String> {
    first_cert_der(std::path::Path::new("root"), pem)
        .ok()
        .map(|d| fingerprint(&d))
}

/// The CA the recorded phase signs with, the roots it trusts besides, and
/// how its PEMs are named; `None`: keep the CA in use (a rotation to the
/// Secret's CA is about to be recorded, or the Secret's CA is unusable).
fn target_of<'a>(held: &'a Held, own: Option<&'a Own>) -> Option<Target<'a>> {
    let der = |pem: &str| first_cert_der(std::path::Path::new("root"), pem).ok();
    let (phase, since, started, overlap) = match &held.record {
        Some(r) => (r.phase, r.phase_since_unix, r.started_unix, r.overlap_secs),
        None => (Phase::Stable, 0, 0, 0),
    };
    let next_labels = Kept::Next.labels();
    let previous_labels = Kept::Previous.labels();
    let (active, labels, also) = match (phase, &held.record) {
        (Phase::Distributing, _) => {
            let next = held.next.as_ref()?;
            (
                held.previous.as_ref()?,
                previous_labels,
                vec![der(&next.root_pem)?],
            )
        }
        (Phase::Overlap, Some(r)) => (held.next.as_ref()?, next_labels, vec![der(&r.root_pem)?]),
        (Phase::Finishing, _) => (held.next.as_ref()?, next_labels, Vec::new()),
        (Phase::Stable, record) => match (&held.next, record, own) {
            (Some(next), _, _) => (next, next_labels, Vec::new()),
            (None, None, Some(own)) => (&own.material, own.labels, Vec::new()),
            (None, Some(r), Some(own)) if root_fp(&r.root_pem).as_deref() == Some(&own.root) => {
                (&own.material, own.labels, Vec::new())
            }
            _ => return None,
        },
        (Phase::Overlap, None) => return None,
    };
    Some(Target {
        phase,
        phase_since_unix: since,
        started_unix: started,
        overlap_secs: overlap,
        active,
        labels,
        also,
    })
}

impl Follower {
    /// The Secret's own CA checked, or why it is refused. The CA in force
    /// is not checked again: its issuer in the Secret may have expired
    /// long ago while each replica rotates its own (a Mycel CA), and it
    /// was checked when it came into force.
    fn own(&self, held: &Held) -> Result<Own, String> {
        let ca = held.own.as_ref().map_err(|e| e.to_string())?;
        let labels = record::own_labels(ca);
        let material = record::material(ca);
        let issuer = first_cert_der(labels.issuer, &material.issuer_pem)
            .map(|d| fingerprint(&d))
            .unwrap_or_default();
        let in_force = self.driver.authority().root_fingerprint();
        if root_fp(&material.root_pem).as_deref() == Some(in_force.as_str()) {
            return Ok(Own {
                root: in_force,
                material,
                labels,
                issuer,
            });
        }
        // Only checked here: a root key in it would write rotated issuers
        // to this directory, and a CA only checked is never rotated.
        let dir = std::env::temp_dir();
        let checked = check_material(&material, &labels, &dir).map_err(|source| {
            CaSecretError::Invalid {
                secret: self.secret.clone(),
                source,
            }
            .to_string()
        })?;
        Ok(Own {
            root: checked.root_fingerprint().to_string(),
            material,
            labels,
            issuer,
        })
    }

    async fn get(&self) -> Result<Option<Secret>, String> {
        match tokio::time::timeout(API_TIMEOUT, self.api.get_opt(&self.config.name)).await {
            Err(_) => Err(format!(
                "cannot read CA Secret {}: no answer within {API_TIMEOUT:?}",
                self.secret
            )),
            Ok(Err(e)) => Err(format!("cannot read CA Secret {}: {e}", self.secret)),
            Ok(Ok(found)) => Ok(found),
        }
    }

    /// One read of the Secret and everything that follows from it.
    async fn poll(&mut self) {
        let found = match self.get().await {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.status.error = Some(format!(
                    "CA Secret {} not found; the CA in use is kept",
                    self.secret
                ));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the CA in use is kept");
                self.status.error = Some(e);
                return;
            }
        };
        self.status.read = Some(rfc3339(OffsetDateTime::now_utc()));
        let uid = found.metadata.uid.clone();
        let held = record::read(&self.secret, &found);
        let mut problem = None;
        let own = match self.own(&held) {
            Ok(own) => Some(own),
            Err(why) => {
                problem = Some(why);
                None
            }
        };
        if let Some(e) = &held.record_error {
            tracing::warn!(secret = %self.secret, error = %e, "the rotation record is ignored");
        }
        if let Err(why) = self.apply(&held, own.as_ref()) {
            problem.get_or_insert(why);
        }
        let step = self.decide(&held, own.as_ref());
        let held = match step {
            Step::Stay => held,
            step => match self.take(step, &held, own.as_ref()).await {
                Some(written) => {
                    let held = record::read(&self.secret, &written);
                    if let Err(why) = self.apply(&held, own.as_ref()) {
                        problem.get_or_insert(why);
                    }
                    match (&held.record, step) {
                        (Some(_), Step::Init) => {
                            tracing::debug!(secret = %self.secret, "recorded the root in force in the CA Secret")
                        }
                        (Some(r), _) => {
                            let note = describe(step, r);
                            tracing::info!(secret = %self.secret, "{note}");
                            self.event(uid.clone(), "Normal", ROTATION_REASON, note)
                                .await;
                        }
                        (None, _) => {}
                    }
                    held
                }
                None => held,
            },
        };
        self.report(&held).await;
        self.problem(uid, problem).await;
    }

    /// Shows `problem` (what is refused in the Secret), logged and sent as
    /// an Event once each time it appears or changes.
    async fn problem(&mut self, uid: Option<String>, problem: Option<String>) {
        let Some(why) = problem else {
            if self.reported.take().is_some() {
                tracing::info!(secret = %self.secret, "the CA Secret is followed again");
            }
            self.status.error = None;
            return;
        };
        let keeping = format!(
            "{why}; the CA in use (root {}) keeps signing",
            self.driver.authority().root_fingerprint()
        );
        self.status.error = Some(keeping.clone());
        if self.reported.as_deref() == Some(why.as_str()) {
            return;
        }
        tracing::error!(secret = %self.secret, "{keeping}");
        self.event(uid, "Warning", INVALID_REASON, keeping).await;
        self.reported = Some(why);
    }

    /// Makes this replica follow what `held` records; why it cannot.
    fn apply(&mut self, held: &Held, own: Option<&Own>) -> Result<(), String> {
        let Some(target) = target_of(held, own) else {
            return Ok(());
        };
        self.driver.follow(&target).map_err(|e| {
            format!(
                "the rotation recorded in CA Secret {} cannot be followed: {e}",
                self.secret
            )
        })?;
        // An issuer renewed in the Secret under the same root is used at
        // once (cert-manager renews tls.crt before it expires).
        let Some(own) = own else { return Ok(()) };
        let stable_on_own = target.phase == Phase::Stable
            && held.next.is_none()
            && own.root == self.driver.authority().root_fingerprint();
        if !stable_on_own {
            return Ok(());
        }
        let seen = self.seen_issuer.replace(own.issuer.clone());
        if seen.is_none() || seen.as_deref() == Some(own.issuer.as_str()) {
            return Ok(());
        }
        self.driver
            .renew_issuer(&own.material, &own.labels)
            .map_err(|e| {
                // Tried again at the next read.
                self.seen_issuer = seen;
                format!(
                    "the new issuer in CA Secret {} is refused: {e}; the issuer in use keeps signing",
                    self.secret
                )
            })
    }

    /// Whether this replica's part of the recorded phase is done, and what
    /// it waits for.
    fn part(&self) -> (bool, String) {
        let part = self.driver.part();
        if !part.done {
            return (false, part.waiting);
        }
        if part.phase == Phase::Stable || part.phase == Phase::Overlap {
            return (true, String::new());
        }
        match self.published.holds(&self.driver.bundle_pem()) {
            Ok(()) => (true, String::new()),
            Err(why) => (false, why.to_string()),
        }
    }

    fn clock(&self) -> Clock {
        Clock {
            now_unix: now_unix(),
            poll: self.config.poll,
            overlap: self.config.overlap,
        }
    }

    fn decide(&mut self, held: &Held, own: Option<&Own>) -> Step {
        let record_root = held.record.as_ref().and_then(|r| root_fp(&r.root_pem));
        let next = held.next.as_ref().and_then(|n| root_fp(&n.root_pem));
        let others: Vec<(String, Report)> = held
            .reports
            .iter()
            .filter(|(id, _)| *id != self.replica)
            .cloned()
            .collect();
        let previous = held
            .previous
            .as_ref()
            .is_some_and(|p| !p.issuer_key_pem.is_empty());
        let active = self.driver.authority().root_fingerprint();
        let (done, waiting) = self.part();
        self.status.waiting = waiting;
        let seen = Seen {
            record: held.record.as_ref(),
            record_root: record_root.as_deref(),
            desired: own.map(|o| o.root.as_str()),
            next: next.as_deref(),
            previous,
            reports: &others,
        };
        decide(
            &seen,
            &Me {
                active: &active,
                done,
            },
            &self.clock(),
        )
    }
}
