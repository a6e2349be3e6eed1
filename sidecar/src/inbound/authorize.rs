//! Inbound authorization: the workload's policy (from discovery) applied
//! to each request and tunnel on the verified peer identity, never on a
//! header the caller could write.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mycel_api::authz::{
    decide, decide_plaintext, Attributes, DecidedBy, Decision, InboundPolicy, MtlsMode,
};

use crate::core::directory::{Discovery, Snapshot};
use crate::metrics::ProxyMetrics;

/// Denial log lines per second; a caller hammering a denied path must not
/// flood the log (the metric still counts every denial).
const LOG_PER_SECOND: u64 = 20;

pub(super) struct Authorizer {
    discovery: Discovery,
    metrics: ProxyMetrics,
    log: LogBudget,
}

/// Why a request was refused, for the caller and the log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("forbidden: {by}")]
pub(super) struct Denied {
    pub by: String,
}

impl Authorizer {
    pub fn new(discovery: Discovery, metrics: ProxyMetrics) -> Self {
        Self {
            discovery,
            metrics,
            log: LogBudget::default(),
        }
    }

    /// Decides, counts and logs one request (HTTP) or tunnel (TCP) of a
    /// mesh caller.
    pub fn check(&self, attrs: &Attributes<'_>) -> Result<(), Denied> {
        let snapshot = self.discovery.snapshot();
        let policy = policy_of(&snapshot);
        self.judge(policy, attrs, decide(policy, attrs))
    }

    /// Admits (or not) one plaintext connection the capture listener
    /// accepted: first the peer-authentication mode of its port (STRICT
    /// refuses), then authorization with the caller unauthenticated.
    /// `fallback` is the sidecar's own mode, for when no policy sets one.
    pub fn admit_plaintext(
        &self,
        source_ip: IpAddr,
        port: u16,
        fallback: MtlsMode,
    ) -> Result<(), PlaintextRefused> {
        let snapshot = self.discovery.snapshot();
        let policy = policy_of(&snapshot);
        let mode = policy.peer_authentication.mode_for(port, fallback);
        if !mode.mode.admits_plaintext() {
            if self.log.take() {
                tracing::info!(source = %source_ip, port, mode = %mode, "inbound capture: plaintext connection refused");
            }
            return Err(PlaintextRefused::Strict(mode.to_string()));
        }
        let attrs = Attributes {
            peer: None,
            source_ip: Some(source_ip),
            port,
            http: None,
        };
        self.judge(policy, &attrs, decide_plaintext(policy, &attrs))
            .map_err(PlaintextRefused::Forbidden)
    }

    /// Whether a refusal may be logged now (shared budget: a flood of
    /// refused connections must not flood the log; metrics count them all).
    pub fn may_log(&self) -> bool {
        self.log.take()
    }

    fn judge(
        &self,
        policy: &InboundPolicy,
        attrs: &Attributes<'_>,
        d: Decision<'_>,
    ) -> Result<(), Denied> {
        let protocol = if attrs.http.is_some() { "http" } else { "tcp" };
        // Only for log lines: the allow path allocates nothing for it.
        let peer = || {
            attrs
                .peer
                .map_or_else(|| "unauthenticated".to_string(), ToString::to_string)
        };
        if let Some((name, rule)) = d.audit {
            self.metrics.authz("audit", name.to_string(), protocol);
            if self.log.take() {
                tracing::warn!(peer = %peer(), source = ?attrs.source_ip, port = attrs.port, policy = name, rule, path = attrs.http.map(|h| h.path), "inbound: AUDIT policy matched (would deny; let through)");
            }
        }
        if d.allowed {
            // Allows by a named policy are counted; default allows are the
            // bulk of traffic and already counted as requests.
            if let DecidedBy::Policy { name, .. } = d.by {
                self.metrics.authz("allow", name.to_string(), protocol);
            }
            return Ok(());
        }
        let label = match d.by {
            DecidedBy::Policy { name, .. } => name.to_string(),
            DecidedBy::NoAllowMatched => "no-allow-match".to_string(),
            DecidedBy::Default(mode) => format!("default:{}", mode.as_str()),
            // Never a denial; named for completeness.
            DecidedBy::PlaintextAdmitted => "plaintext-admitted".to_string(),
        };
        self.metrics.authz("deny", label, protocol);
        if self.log.take() {
            tracing::warn!(peer = %peer(), source = ?attrs.source_ip, port = attrs.port, decided_by = %d.by, path = attrs.http.map(|h| h.path), method = attrs.http.map(|h| h.method), "inbound: request denied");
        }
        Err(Denied {
            by: reason(policy, &d.by),
        })
    }
}

/// Until the controller sends the workload's policy, the mesh default
/// applies (and the sidecar's own mTLS mode).
fn policy_of(snapshot: &Snapshot) -> &InboundPolicy {
    static FALLBACK: std::sync::OnceLock<InboundPolicy> = std::sync::OnceLock::new();
    snapshot
        .inbound
        .as_deref()
        .unwrap_or_else(|| FALLBACK.get_or_init(InboundPolicy::default))
}

/// Why a plaintext connection was not passed to the app.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum PlaintextRefused {
    #[error("peer authentication {0} refuses plaintext")]
    Strict(String),
    #[error(transparent)]
    Forbidden(Denied),
}

/// The reason a caller reads. For "no ALLOW policy matched" it names the
/// ALLOW policies (at most three), so the caller knows what to ask for.
fn reason(policy: &InboundPolicy, by: &DecidedBy<'_>) -> String {
    if *by != DecidedBy::NoAllowMatched {
        return by.to_string();
    }
    let allows: Vec<&str> = policy
        .policies
        .iter()
        .filter(|p| p.action == mycel_api::authz::Action::Allow)
        .map(|p| p.name.as_str())
        .collect();
    let mut names = allows
        .iter()
        .take(3)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if allows.len() > 3 {
        names.push_str(&format!(" and {} more", allows.len() - 3));
    }
    format!("{by} ({names})")
}

/// At most [`LOG_PER_SECOND`] lines per wall-clock second, lock-free.
#[derive(Default)]
struct LogBudget {
    /// Second (high 32 bits) and lines logged in it (low 32 bits).
    state: AtomicU64,
}

impl LogBudget {
    fn take(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() & 0xffff_ffff);
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (sec, used) = (cur >> 32, cur & 0xffff_ffff);
            let next = if sec == now {
                if used >= LOG_PER_SECOND {
                    return false;
                }
                cur + 1
            } else {
                (now << 32) | 1
            };
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_denials_logs_a_bounded_number_of_lines() {
        let budget = LogBudget::default();
        let logged = (0..10_000).filter(|_| budget.take()).count() as u64;
        // One second boundary may fall inside the loop.
        assert!(
            (LOG_PER_SECOND..=2 * LOG_PER_SECOND).contains(&logged),
            "{logged}"
        );
    }
}
