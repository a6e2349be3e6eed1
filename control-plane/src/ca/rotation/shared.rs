//! A trust-anchor rotation shared by several controller replicas, whose CA
//! lives in a Kubernetes Secret (`--ca-secret`). The replicas agree through
//! that Secret: it holds the [`Record`] of the phase (written only with the
//! resourceVersion read, so two replicas cannot both move it), the CAs the
//! rotation moves between, and one [`Report`] per live replica. A replica
//! moves the phase on only when every live replica reported its part of
//! the current phase done, and no sooner than [`min_phase`] after the phase
//! began, which lets every running replica read the phase and report; so no
//! replica switches signing to the new root before every replica pushed,
//! and published, the bundle holding both. [`decide`] is that rule, pure.
//!
//! A replica that cannot reach the API server for a whole phase stops
//! reporting and is no longer waited for, like a proxy disconnected from
//! the controller.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Phase;

/// The rotation every replica follows, as the CA Secret records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub phase: Phase,
    pub phase_since_unix: i64,
    #[serde(default)]
    pub started_unix: i64,
    pub overlap_secs: u64,
    /// Stable: the root in force. During a rotation: the root being
    /// retired. PEM; kept so that a Secret changed while no controller ran
    /// is still rotated to with both roots trusted for the overlap.
    pub root_pem: String,
    /// During a rotation: the fingerprint of the root rotated to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// One replica's word on the phase under way, rewritten at each poll while
/// a rotation runs: it is alive, and whether its part is done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub done: bool,
    pub at_unix: i64,
    /// What it waits for, when not done.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiting: String,
}

/// What the CA Secret holds, by root fingerprints.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    pub record: Option<&'a Record>,
    /// The fingerprint of the record's `root_pem`.
    pub record_root: Option<&'a str>,
    /// The root of the Secret's own CA, when that CA is usable.
    pub desired: Option<&'a str>,
    /// The root of the CA kept for the rotation to move to.
    pub next: Option<&'a str>,
    /// Whether the CA being retired is kept (needed to sign while
    /// distributing).
    pub previous: bool,
    /// The other replicas' reports.
    pub reports: &'a [(String, Report)],
}

/// This replica: the root it signs under, and whether its part of the
/// recorded phase is done (its proxies, and what it publishes).
#[derive(Clone, Copy, Debug)]
pub struct Me<'a> {
    pub active: &'a str,
    pub done: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now_unix: i64,
    /// How often every replica reads the Secret.
    pub poll: Duration,
    /// `--rotation-overlap`.
    pub overlap: Duration,
}

/// What to write to the Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Stay,
    /// Record the root in force (none recorded yet), or drop a kept CA the
    /// Secret holds again.
    Init,
    /// Stable → Distributing to the Secret's CA; the CA in force is kept as
    /// the one being retired.
    Start,
    /// Distributing again, to a CA the Secret got meanwhile (nothing was
    /// signed by the one it replaces).
    Retarget,
    /// Distributing → Stable on the root in force: the Secret holds it
    /// again.
    Abort,
    Advance(Phase),
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The shortest a shared phase lasts, in seconds: every replica has read it
/// and reported by then.
pub fn min_phase(poll: Duration) -> i64 {
    secs(poll).saturating_mul(2).saturating_add(2)
}

/// A report older than this (seconds) is a replica gone (allows for clocks
/// a little apart).
pub fn live_for(poll: Duration) -> i64 {
    secs(poll).saturating_mul(3).saturating_add(5)
}

/// Whether a report was written within [`live_for`].
pub fn is_live(report: &Report, clock: &Clock) -> bool {
    clock.now_unix.saturating_sub(report.at_unix) <= live_for(clock.poll)
}

/// The root new leaves chain to as recorded (`None`: the Secret's own,
/// nothing recorded yet).
pub fn recorded_active<'a>(seen: &Seen<'a>) -> Option<&'a str> {
    let record = seen.record?;
    match record.phase {
        Phase::Distributing => seen.record_root,
        Phase::Overlap | Phase::Finishing => seen.next,
        Phase::Stable => seen.next.or(seen.record_root),
    }
}

/// Whether every live replica (and this one) reported the recorded phase
/// done, since it began.
fn all_done(record: &Record, seen: &Seen<'_>, me: &Me<'_>, clock: &Clock) -> bool {
    me.done
        && seen
            .reports
            .iter()
            .map(|(_, r)| r)
            .filter(|r| is_live(r, clock))
            .all(|r| {
                r.phase == record.phase
                    && r.to == record.to
                    && r.done
                    && r.at_unix >= record.phase_since_unix
            })
}

/// What this replica writes after reading the Secret.
pub fn decide(seen: &Seen<'_>, me: &Me<'_>, clock: &Clock) -> Step {
    let Some(record) = seen.record else {
        return match seen.desired {
            Some(d) if d == me.active => Step::Init,
            Some(_) => Step::Start,
            None => Step::Stay,
        };
    };
    let elapsed = clock.now_unix.saturating_sub(record.phase_since_unix);
    let min = min_phase(clock.poll);
    match record.phase {
        Phase::Stable => {
            let active = recorded_active(seen);
            // A replica not on the recorded root follows before it writes.
            if active != Some(me.active) {
                return Step::Stay;
            }
            match seen.desired {
                Some(d) if Some(d) != active => Step::Start,
                Some(d) if seen.next == Some(d) => Step::Init,
                _ => Step::Stay,
            }
        }
        Phase::Distributing => {
            if !seen.previous || seen.next.is_none() {
                return Step::Stay;
            }
            match seen.desired {
                Some(d) if Some(d) == seen.record_root => return Step::Abort,
                Some(d) if Some(d) != seen.next => return Step::Retarget,
                _ => {}
            }
            if elapsed >= min && all_done(record, seen, me, clock) {
                Step::Advance(Phase::Overlap)
            } else {
                Step::Stay
            }
        }
        Phase::Overlap => {
            let overlap = i64::try_from(record.overlap_secs).unwrap_or(i64::MAX);
            if elapsed >= overlap.max(min) && all_done(record, seen, me, clock) {
                Step::Advance(Phase::Finishing)
            } else {
                Step::Stay
            }
        }
        Phase::Finishing => {
            if elapsed >= min && all_done(record, seen, me, clock) {
                Step::Advance(Phase::Stable)
            } else {
                Step::Stay
            }
        }
    }
}

/// The record after `step` (`None`: nothing to write). `active_pem` is the
/// root in force (what `Start` retires and `Init` records), `desired` the
/// root fingerprint of the Secret's own CA, `next_root_pem` the root of the
/// CA rotated to (what `Advance(Stable)` puts in force).
pub fn next_record(
    record: Option<&Record>,
    step: Step,
    active_pem: &str,
    desired: Option<&str>,
    next_root_pem: Option<&str>,
    clock: &Clock,
) -> Option<Record> {
    let now = clock.now_unix;
    let overlap_secs = clock.overlap.as_secs();
    let moved = |phase: Phase| {
        record.map(|r| Record {
            phase,
            phase_since_unix: now,
            ..r.clone()
        })
    };
    match step {
        Step::Stay => None,
        Step::Init => Some(Record {
            phase: Phase::Stable,
            phase_since_unix: now,
            started_unix: record.map_or(0, |r| r.started_unix),
            overlap_secs: record.map_or(overlap_secs, |r| r.overlap_secs),
            root_pem: active_pem.to_string(),
            to: None,
        }),
        Step::Start => Some(Record {
            phase: Phase::Distributing,
            phase_since_unix: now,
            started_unix: now,
            overlap_secs,
            root_pem: active_pem.to_string(),
            to: desired.map(str::to_string),
        }),
        Step::Retarget => record.map(|r| Record {
            phase_since_unix: now,
            to: desired.map(str::to_string),
            ..r.clone()
        }),
        Step::Abort => record.map(|r| Record {
            phase: Phase::Stable,
            phase_since_unix: now,
            to: None,
            ..r.clone()
        }),
        Step::Advance(Phase::Stable) => record.and_then(|r| {
            Some(Record {
                phase: Phase::Stable,
                phase_since_unix: now,
                root_pem: next_root_pem?.to_string(),
                to: None,
                ..r.clone()
            })
        }),
        Step::Advance(phase) => moved(phase),
    }
}

#[cfg(test)]
mod tests;
