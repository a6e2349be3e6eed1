//! Trust-anchor rotation: the phases a change of root goes through and the
//! pure decision of when to move on. The controller's driver
//! (`crate::rotation`) observes the proxies, asks [`next_phase`], and does
//! what a phase means; [`store`] keeps the phase in the data dir so a
//! restart continues it; [`leaves`] knows which root each proxy's current
//! leaf chains to; [`shared`] is the rule when the controller replicas of a
//! cluster share a rotation through the CA Secret.
//!
//! ```text
//! Stable ──start──▶ Distributing ──every proxy ACKed old+new──▶ Overlap
//!   ▲               (bundle old,new; leaves from the old issuer)   │ (bundle new,old; leaves from
//!   │                                                              │  the new issuer; proxies renew)
//!   └──every proxy ACKed new── Finishing ◀──every proxy on the new root and overlap passed──┘
//!                              (bundle new)
//! ```
//!
//! Distributing exists so that no proxy meets a new-root leaf before it
//! trusts the new root: signing switches only once every connected proxy
//! acknowledged the bundle holding both.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod leaves;
pub mod shared;
pub mod store;

#[cfg(test)]
mod tests;

/// Default time both roots stay trusted after the switch of issuer
/// (`--rotation-overlap`).
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(60);
/// How long a phase may wait on proxies past its due time before the
/// rotation is reported stuck.
pub const STUCK_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// One root; nothing under way.
    Stable,
    /// Bundle = current root + next root; leaves still from the current
    /// issuer, until every connected proxy ACKed that bundle.
    Distributing,
    /// The next root is current: bundle = new + previous root, new leaves
    /// from the new issuer; proxies renew early.
    Overlap,
    /// Bundle = new root only, until every connected proxy ACKed it.
    Finishing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stable => "stable",
            Phase::Distributing => "distributing",
            Phase::Overlap => "overlap",
            Phase::Finishing => "finishing",
        }
    }
}

/// What the controller observes at one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub now_unix: i64,
    /// When the current phase began.
    pub phase_since_unix: i64,
    pub overlap: Duration,
    /// Connected proxies that have not ACKed the bundle this phase pushes.
    pub not_acked: usize,
    /// Connected proxies whose current leaf does not chain to the current
    /// root.
    pub on_old_root: usize,
}

impl Progress {
    fn since(&self) -> i64 {
        self.now_unix.saturating_sub(self.phase_since_unix)
    }

    fn secs(d: Duration) -> i64 {
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
    }

    /// When the overlap phase may end, as unix seconds.
    pub fn overlap_ends_unix(&self) -> i64 {
        self.phase_since_unix
            .saturating_add(Self::secs(self.overlap))
    }
}

/// The phase to move to, or `None` to stay.
pub fn next_phase(phase: Phase, p: &Progress) -> Option<Phase> {
    match phase {
        Phase::Stable => None,
        Phase::Distributing if p.not_acked == 0 => Some(Phase::Overlap),
        Phase::Overlap if p.on_old_root == 0 && p.now_unix >= p.overlap_ends_unix() => {
            Some(Phase::Finishing)
        }
        Phase::Finishing if p.not_acked == 0 => Some(Phase::Stable),
        _ => None,
    }
}

/// Why the rotation is stuck, if it is: proxies still waited on
/// [`STUCK_GRACE`] after the phase could have ended.
pub fn stuck(phase: Phase, p: &Progress) -> Option<String> {
    let grace = Progress::secs(STUCK_GRACE);
    match phase {
        Phase::Stable => None,
        Phase::Distributing | Phase::Finishing if p.not_acked > 0 && p.since() >= grace => {
            Some(format!(
                "{} proxies have not acknowledged the {} trust bundle for {}s",
                p.not_acked,
                phase.as_str(),
                p.since()
            ))
        }
        Phase::Overlap
            if p.on_old_root > 0 && p.now_unix >= p.overlap_ends_unix().saturating_add(grace) =>
        {
            Some(format!(
                "{} proxies still hold leaves of the old root {}s after the overlap ended",
                p.on_old_root,
                p.now_unix - p.overlap_ends_unix()
            ))
        }
        _ => None,
    }
}
