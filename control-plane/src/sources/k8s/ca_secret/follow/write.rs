//! What the follower writes: the shared rotation's steps (guarded by the
//! resourceVersion read), this replica's report, and Events on the Secret.

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use time::OffsetDateTime;

use super::{root_fp, Follower, Own, STALE_FACTOR};
use crate::ca::rotation::shared::{self, is_live, next_record, Record, Report, Step};
use crate::ca::rotation::Phase;
use crate::rotation::ReplicaInfo;
use crate::sources::k8s::ca_secret::record::{self, Change, Held, Write};
use crate::sources::k8s::ca_secret::API_TIMEOUT;

impl Follower {
    fn object(&self, uid: Option<String>) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some(self.config.name.clone()),
            namespace: Some(self.config.namespace.clone()),
            uid,
            ..ObjectReference::default()
        }
    }

    /// An Event on the Secret. Each is its own (no series): the
    /// follower sends one per change, and kube-runtime's recorder would
    /// fold events that differ only by their note into the first one.
    pub(super) async fn event(&self, uid: Option<String>, type_: &str, reason: &str, note: String) {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{nanos:x}", self.config.name)),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_nanosecond(nanos).unwrap_or_default(),
            )),
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            action: Some("FollowCASecret".into()),
            // An Event's note is at most 1 kB.
            note: Some(note.chars().take(1000).collect()),
            regarding: Some(self.object(uid)),
            reporting_controller: Some("mycel.io/controller".into()),
            reporting_instance: Some(self.replica.clone()),
            ..Event::default()
        };
        if let Err(e) = self.events.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %e, secret = %self.secret, "cannot record an Event on the CA Secret");
        }
    }

    async fn write(&self, write: &Write<'_>) -> Result<Secret, kube::Error> {
        let patch = record::patch(write);
        match tokio::time::timeout(
            API_TIMEOUT,
            self.api.patch(
                &self.config.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(kube::Error::Service(
                format!("no answer within {API_TIMEOUT:?}").into(),
            )),
        }
    }

    /// Writes `step`; the Secret as written, or `None` when another
    /// replica wrote first (read again at the next poll) or the write
    /// failed.
    pub(super) async fn take(&self, step: Step, held: &Held, own: Option<&Own>) -> Option<Secret> {
        let clock = self.clock();
        let active = self.driver.authority().material();
        let next_pem = held.next.as_ref().map(|n| n.root_pem.as_str());
        let record = next_record(
            held.record.as_ref(),
            step,
            &active.root_pem,
            own.map(|o| o.root.as_str()),
            next_pem,
            &clock,
        )?;
        let own_is_next = match (own, &held.next) {
            (Some(o), Some(n)) => root_fp(&n.root_pem).as_deref() == Some(o.root.as_str()),
            _ => false,
        };
        // The retired root stays in the record itself; its CA is kept only
        // while it signs, the CA rotated to until the Secret's own keys
        // are it.
        let (previous, next) = match step {
            Step::Stay => return None,
            Step::Init if own_is_next => (Change::Remove, Change::Remove),
            Step::Init => (Change::Keep, Change::Keep),
            Step::Start => (Change::Set(&active), Change::Set(&own?.material)),
            Step::Retarget => (Change::Keep, Change::Set(&own?.material)),
            Step::Abort => (Change::Remove, Change::Remove),
            Step::Advance(Phase::Overlap) => (Change::Remove, Change::Keep),
            Step::Advance(Phase::Stable) if own_is_next => (Change::Remove, Change::Remove),
            Step::Advance(Phase::Stable) => (Change::Remove, Change::Keep),
            Step::Advance(_) => (Change::Keep, Change::Keep),
        };
        let reports = match record.phase {
            Phase::Stable => held
                .reports
                .iter()
                .map(|(id, _)| (id.clone(), None))
                .collect(),
            _ => Vec::new(),
        };
        let write = Write {
            resource_version: held.resource_version.as_deref(),
            record: Some(&record),
            previous,
            next,
            reports,
        };
        match self.write(&write).await {
            Ok(s) => Some(s),
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                tracing::debug!(secret = %self.secret, "another replica wrote the CA Secret first; reading it again");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, secret = %self.secret, "cannot record the rotation in the CA Secret; retrying");
                None
            }
        }
    }

    /// Writes this replica's report while a rotation runs (and removes it,
    /// and reports long gone, otherwise); shows the others'.
    pub(super) async fn report(&mut self, held: &Held) {
        let clock = self.clock();
        let stale = shared::live_for(clock.poll).saturating_mul(STALE_FACTOR);
        let mut changes: Vec<(String, Option<Report>)> = held
            .reports
            .iter()
            .filter(|(id, r)| *id != self.replica && clock.now_unix - r.at_unix > stale)
            .map(|(id, _)| (id.clone(), None))
            .collect();
        let rotating = held.record.as_ref().filter(|r| r.phase != Phase::Stable);
        let (done, waiting) = self.part();
        self.status.waiting = waiting.clone();
        match rotating {
            Some(r) => changes.push((
                self.replica.clone(),
                Some(Report {
                    phase: r.phase,
                    to: r.to.clone(),
                    done,
                    at_unix: clock.now_unix,
                    waiting,
                }),
            )),
            None if held.reports.iter().any(|(id, _)| *id == self.replica) => {
                changes.push((self.replica.clone(), None))
            }
            None => {}
        }
        self.status.replicas = held
            .reports
            .iter()
            .filter(|(id, r)| *id != self.replica && is_live(r, &clock))
            .map(|(id, r)| ReplicaInfo {
                id: id.clone(),
                phase: r.phase,
                done: r.done,
                reported: crate::rotation::status::at(r.at_unix),
                waiting: r.waiting.clone(),
            })
            .collect();
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.write(&Write::reports_only(changes)).await {
            tracing::warn!(error = %e, secret = %self.secret, "cannot write this replica's rotation report; retrying");
        }
    }
}

/// What a written step means, for the log and the Event.
pub(super) fn describe(step: Step, record: &Record) -> String {
    let to = record.to.as_deref().map(short).unwrap_or_default();
    match step {
        Step::Init => "recorded the root in force".to_string(),
        Step::Start => format!(
            "trust-anchor rotation started to root {to}: distributing it (signing switches once every replica's proxies trust it)"
        ),
        Step::Retarget => format!(
            "the CA Secret changed while distributing: now rotating to root {to}"
        ),
        Step::Abort => {
            "the CA Secret holds the root in force again: rotation abandoned".to_string()
        }
        Step::Advance(Phase::Overlap) => format!(
            "rotation: every replica's proxies trust root {to}; signing with it (overlap {}s)",
            record.overlap_secs
        ),
        Step::Advance(Phase::Finishing) => {
            "rotation: every proxy holds a new-root certificate and the overlap passed; the old root is removed".to_string()
        }
        Step::Advance(Phase::Stable) => "trust-anchor rotation finished: one root".to_string(),
        Step::Advance(Phase::Distributing) | Step::Stay => String::new(),
    }
}

fn short(fp: &str) -> &str {
    fp.get(..16).unwrap_or(fp)
}
