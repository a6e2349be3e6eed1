//! App probes through the proxy: the contract between the injector, which
//! rewrites a pod's HTTP probes to the proxy's admin port, and the proxy,
//! which forwards them to the app.
//!
//! Under strict mTLS the kubelet's plaintext probe to an app port would be
//! refused by the inbound capture. The injector therefore points each HTTP
//! probe at `<admin>/app-health/<container>/<livez|readyz|startupz>` (the
//! admin port is never captured) and hands the proxy the original targets as
//! JSON in [`ENV_APP_PROBES`]; the proxy calls the app on loopback.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Environment variable holding the original probe targets, a JSON object
/// keyed by the rewritten path.
pub const ENV_APP_PROBES: &str = "MYCEL_APP_PROBES";

/// Every rewritten probe path starts with this.
pub const PATH_PREFIX: &str = "/app-health/";

/// Longest probe timeout the proxy accepts (and the injector clamps to).
pub const MAX_TIMEOUT_SECONDS: u32 = 60;

/// Most probes one pod may declare through the proxy (three per container
/// of a pod with many containers; anything larger is not a real pod).
pub const MAX_PROBES: usize = 256;

/// Longest header list one probe may carry to the app.
pub const MAX_HEADERS: usize = 32;

/// Which probe of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 3] = [Self::Liveness, Self::Readiness, Self::Startup];

    /// The last path segment, as Kubernetes names its own health endpoints.
    pub fn segment(self) -> &'static str {
        match self {
            Self::Liveness => "livez",
            Self::Readiness => "readyz",
            Self::Startup => "startupz",
        }
    }
}

/// The admin path a container's probe is rewritten to.
pub fn path(container: &str, kind: ProbeKind) -> String {
    format!("{PATH_PREFIX}{container}/{}", kind.segment())
}

/// Where the kubelet would have sent the probe: an HTTP GET on loopback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppProbe {
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ProbeHeader>,
    /// The probe's own `timeoutSeconds`, 1..=[`MAX_TIMEOUT_SECONDS`].
    #[serde(default = "one")]
    pub timeout_seconds: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeHeader {
    pub name: String,
    pub value: String,
}

/// Probe targets keyed by rewritten path (`/app-health/app/livez`).
pub type AppProbes = BTreeMap<String, AppProbe>;

/// A value of [`ENV_APP_PROBES`] the proxy cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{ENV_APP_PROBES}: {0}")]
pub struct ProbesError(String);

/// Parses and checks the environment value; an empty value is no probes.
pub fn parse(raw: &str) -> Result<AppProbes, ProbesError> {
    if raw.trim().is_empty() {
        return Ok(AppProbes::new());
    }
    let probes: AppProbes =
        serde_json::from_str(raw).map_err(|e| ProbesError(format!("not valid JSON: {e}")))?;
    check(&probes)?;
    Ok(probes)
}

/// The rules both ends keep: what the injector writes must parse here.
pub fn check(probes: &AppProbes) -> Result<(), ProbesError> {
    if probes.len() > MAX_PROBES {
        return Err(ProbesError(format!(
            "{} probes, at most {MAX_PROBES}",
            probes.len()
        )));
    }
    for (key, p) in probes {
        let tail = key.strip_prefix(PATH_PREFIX).unwrap_or_default();
        let well_formed = tail
            .split_once('/')
            .is_some_and(|(c, k)| !c.is_empty() && ProbeKind::ALL.iter().any(|x| x.segment() == k));
        if !well_formed {
            return Err(ProbesError(format!(
                "key {key:?} is not {PATH_PREFIX}<container>/<livez|readyz|startupz>"
            )));
        }
        if p.port == 0 {
            return Err(ProbesError(format!("{key}: port 0 is not a port")));
        }
        if !p.path.starts_with('/') || p.path.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(ProbesError(format!(
                "{key}: path {:?} must start with '/' and hold no spaces or control characters",
                p.path
            )));
        }
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&p.timeout_seconds) {
            return Err(ProbesError(format!(
                "{key}: timeoutSeconds {} is not in 1..={MAX_TIMEOUT_SECONDS}",
                p.timeout_seconds
            )));
        }
        if p.headers.len() > MAX_HEADERS {
            return Err(ProbesError(format!(
                "{key}: {} headers, at most {MAX_HEADERS}",
                p.headers.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let raw = r#"{"/app-health/web/livez":{"port":8080,"path":"/healthz"}}"#;
        let probes = parse(raw).unwrap();
        let p = &probes["/app-health/web/livez"];
        assert_eq!((p.port, p.timeout_seconds), (8080, 1));
        let again = parse(&serde_json::to_string(&probes).unwrap()).unwrap();
        assert_eq!(again, probes);
        assert!(parse("").unwrap().is_empty());
        assert_eq!(path("web", ProbeKind::Startup), "/app-health/web/startupz");
    }

    #[test]
    fn bad_values_name_the_variable_and_the_probe() {
        for (raw, needle) in [
            ("{", "not valid JSON"),
            (r#"{"/x":{"port":1,"path":"/"}}"#, "key \"/x\""),
            (r#"{"/app-health/a/livez":{"port":0,"path":"/"}}"#, "port 0"),
            (
                r#"{"/app-health/a/livez":{"port":1,"path":"x"}}"#,
                "must start",
            ),
            (
                r#"{"/app-health/a/livez":{"port":1,"path":"/","timeoutSeconds":61}}"#,
                "timeoutSeconds 61",
            ),
            (
                r#"{"/app-health/a/livez":{"port":1,"path":"/","host":"evil"}}"#,
                "unknown field",
            ),
        ] {
            let err = parse(raw).unwrap_err().to_string();
            assert!(err.starts_with(ENV_APP_PROBES), "{err}");
            assert!(err.contains(needle), "{raw}: {err}");
        }
    }
}
