//! The status a policy should carry, decided without I/O: its `Accepted`
//! condition from the [`Verdict`], and whether that differs from what the
//! object already says. Only a difference is written, so the controller's
//! own write, seen again through the watch, ends there (no write loop).
//!
//! There is no leader election (see the CA Secret): every replica writes.
//! They agree because the status is a function of the objects alone, and
//! `lastTransitionTime` is taken from the object whenever the condition's
//! `status` is unchanged: a replica that reads another's write finds
//! nothing to change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use mycel_crds::TrafficPolicyStatus;

use super::{Target, Verdict};

/// The condition type the controller owns.
pub const ACCEPTED: &str = "Accepted";

/// Reasons of the `Accepted` condition.
pub mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const INVALID: &str = "Invalid";
    pub const CONFLICTED: &str = "Conflicted";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
}

/// `status`, `reason` and `message` of the `Accepted` condition.
pub fn accepted(verdict: &Verdict) -> (&'static str, &'static str, String) {
    match verdict {
        Verdict::Accepted { target } => (
            "True",
            reason::ACCEPTED,
            format!("applied to {}", describe(target)),
        ),
        Verdict::Invalid { error, kept } => {
            let mut message = format!("invalid: {error}");
            if let Some(generation) = kept {
                message.push_str(&format!(
                    "; the previous version (generation {generation}) stays applied"
                ));
            }
            ("False", reason::INVALID, message)
        }
        Verdict::Conflicted { target, winner } => (
            "False",
            reason::CONFLICTED,
            format!(
                "{winner} is older and has the same target ({}); it is applied instead",
                describe(target)
            ),
        ),
        Verdict::TargetNotFound {
            target,
            port_missing,
        } => (
            "False",
            reason::TARGET_NOT_FOUND,
            if *port_missing {
                format!(
                    "Service {} has no port {}",
                    target.service.name(),
                    target.port.unwrap_or_default()
                )
            } else {
                format!(
                    "Service {} does not exist in namespace {}; the policy applies once it does",
                    target.service.name(),
                    target.service.namespace()
                )
            },
        ),
    }
}

fn describe(target: &Target) -> String {
    match target.port {
        Some(port) => format!("port {port} of Service {}", target.service.name()),
        None => format!("Service {}", target.service.name()),
    }
}

/// The status to write for `verdict` on `generation`, or `None` when
/// `current` already says it.
pub fn desired(
    verdict: &Verdict,
    generation: i64,
    current: Option<&TrafficPolicyStatus>,
    now: &Time,
) -> Option<TrafficPolicyStatus> {
    let conditions = accepted_conditions(
        accepted(verdict),
        generation,
        current.map(|s| (s.conditions.as_slice(), s.observed_generation)),
        now,
    )?;
    Some(TrafficPolicyStatus {
        observed_generation: Some(generation),
        conditions,
    })
}

/// The conditions to write so that `Accepted` says `(status, reason,
/// message)` for `generation`, or `None` when `current` (its conditions
/// and observed generation) already does. Conditions of other types are
/// kept (a merge patch replaces the whole list). Shared by every policy
/// kind the controller writes.
pub fn accepted_conditions(
    (status, reason, message): (&str, &str, String),
    generation: i64,
    current: Option<(&[Condition], Option<i64>)>,
    now: &Time,
) -> Option<Vec<Condition>> {
    let (conditions_now, observed) = current.unwrap_or((&[], None));
    let old = conditions_now.iter().find(|c| c.type_ == ACCEPTED);
    let up_to_date = observed == Some(generation)
        && old.is_some_and(|c| {
            c.status == status
                && c.reason == reason
                && c.message == message
                && c.observed_generation == Some(generation)
        });
    if up_to_date {
        return None;
    }
    let last_transition_time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    let mut conditions: Vec<Condition> = conditions_now
        .iter()
        .filter(|c| c.type_ != ACCEPTED)
        .cloned()
        .collect();
    conditions.push(Condition {
        type_: ACCEPTED.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: Some(generation),
        last_transition_time,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    Some(conditions)
}
