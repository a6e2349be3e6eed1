//! The pod annotations users set, and their parsing. A value that does not
//! parse is an error naming the annotation and the value: a typo must not
//! silently mesh a pod differently from what its author wrote.

use std::collections::BTreeMap;

use crate::config::{AccessLog, MtlsMode, Ratio, SidecarMode};
use crate::InjectError;

/// `enabled` or `disabled`, on a pod or a namespace (label or annotation).
pub const INJECT: &str = "mycel.io/inject";
/// Set by the injector on a meshed pod (value: the sidecar mode); its
/// presence makes a second injection a no-op.
pub const INJECTED: &str = "mycel.io/injected";
/// Label on every meshed pod: the controller watches only Pods that carry
/// it (labels can be selected on, annotations cannot).
pub const MESHED_LABEL: &str = "mycel.io/meshed";
/// Inbound ports not captured (comma-separated).
pub const EXCLUDE_INBOUND_PORTS: &str = "mycel.io/exclude-inbound-ports";
/// Outbound destination ports not captured (comma-separated).
pub const EXCLUDE_OUTBOUND_PORTS: &str = "mycel.io/exclude-outbound-ports";
/// Outbound destination networks not captured (comma-separated IPv4 CIDRs).
pub const EXCLUDE_OUTBOUND_CIDRS: &str = "mycel.io/exclude-outbound-cidrs";
/// Destination ports carried as opaque TCP, without protocol detection.
pub const OPAQUE_PORTS: &str = "mycel.io/opaque-ports";
/// The proxy's log filter (`MYCEL_LOG`), e.g. `debug` or `mycel_sidecar=debug`.
pub const PROXY_LOG_LEVEL: &str = "mycel.io/proxy-log-level";
pub const PROXY_CPU_REQUEST: &str = "mycel.io/proxy-cpu-request";
pub const PROXY_CPU_LIMIT: &str = "mycel.io/proxy-cpu-limit";
pub const PROXY_MEMORY_REQUEST: &str = "mycel.io/proxy-memory-request";
pub const PROXY_MEMORY_LIMIT: &str = "mycel.io/proxy-memory-limit";
/// `native` or `classic`: overrides the configured sidecar mode.
pub const SIDECAR_MODE: &str = "mycel.io/sidecar-mode";
/// `strict` or `permissive`: overrides the configured mTLS mode of the
/// proxy's inbound capture.
pub const MTLS_MODE: &str = "mycel.io/mtls-mode";
/// A ratio from 0 to 1: overrides the configured `--trace-sampling`, the
/// share of requests without a caller's trace context that start a trace.
pub const TRACE_SAMPLING: &str = "mycel.io/trace-sampling";
/// `stdout` or `off`: overrides the configured `--access-log`.
pub const ACCESS_LOG: &str = "mycel.io/access-log";
/// kubectl's default container for `logs` and `exec`; set to the first app
/// container when the pod has none, so a classic sidecar is not picked.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// Every annotation a user may set to change the injection, for docs and
/// for `mycelctl`.
pub const OVERRIDES: &[&str] = &[
    EXCLUDE_INBOUND_PORTS,
    EXCLUDE_OUTBOUND_PORTS,
    EXCLUDE_OUTBOUND_CIDRS,
    OPAQUE_PORTS,
    PROXY_LOG_LEVEL,
    PROXY_CPU_REQUEST,
    PROXY_CPU_LIMIT,
    PROXY_MEMORY_REQUEST,
    PROXY_MEMORY_LIMIT,
    SIDECAR_MODE,
    MTLS_MODE,
    TRACE_SAMPLING,
    ACCESS_LOG,
];

/// What a pod's annotations ask for, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<String>,
    pub opaque_ports: Vec<u16>,
    pub log_level: Option<String>,
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
    pub sidecar_mode: Option<SidecarMode>,
    pub mtls_mode: Option<MtlsMode>,
    pub trace_sampling: Option<Ratio>,
    pub access_log: Option<AccessLog>,
}

impl Overrides {
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Self, InjectError> {
        let get = |key: &str| {
            annotations
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let ports = |key: &'static str| get(key).map_or(Ok(Vec::new()), |v| ports(key, v));
        let quantity = |key: &'static str| get(key).map(|v| quantity(key, v)).transpose();
        Ok(Self {
            exclude_inbound_ports: ports(EXCLUDE_INBOUND_PORTS)?,
            exclude_outbound_ports: ports(EXCLUDE_OUTBOUND_PORTS)?,
            exclude_outbound_cidrs: get(EXCLUDE_OUTBOUND_CIDRS)
                .map_or(Ok(Vec::new()), |v| cidrs(EXCLUDE_OUTBOUND_CIDRS, v))?,
            opaque_ports: ports(OPAQUE_PORTS)?,
            log_level: get(PROXY_LOG_LEVEL)
                .map(|v| log_filter(PROXY_LOG_LEVEL, v))
                .transpose()?,
            cpu_request: quantity(PROXY_CPU_REQUEST)?,
            cpu_limit: quantity(PROXY_CPU_LIMIT)?,
            memory_request: quantity(PROXY_MEMORY_REQUEST)?,
            memory_limit: quantity(PROXY_MEMORY_LIMIT)?,
            sidecar_mode: get(SIDECAR_MODE)
                .map(|v| {
                    SidecarMode::parse(v)
                        .ok_or_else(|| bad(SIDECAR_MODE, v, "expected native or classic"))
                })
                .transpose()?,
            mtls_mode: get(MTLS_MODE)
                .map(|v| {
                    MtlsMode::parse(v)
                        .ok_or_else(|| bad(MTLS_MODE, v, "expected strict or permissive"))
                })
                .transpose()?,
            trace_sampling: get(TRACE_SAMPLING)
                .map(|v| ratio(TRACE_SAMPLING, v))
                .transpose()?,
            access_log: get(ACCESS_LOG)
                .map(|v| AccessLog::parse(v).map_err(|why| bad(ACCESS_LOG, v, why)))
                .transpose()?,
        })
    }
}

fn bad(annotation: &'static str, value: &str, reason: impl Into<String>) -> InjectError {
    InjectError::Annotation {
        annotation,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `80, 8080,9090` → ports, sorted and without repeats.
fn ports(annotation: &'static str, raw: &str) -> Result<Vec<u16>, InjectError> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let port = item
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                bad(
                    annotation,
                    raw,
                    format!("{item:?} is not a port number (1-65535)"),
                )
            })?;
        out.push(port);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// IPv4 networks `a.b.c.d/n`, as `mycel-proxy init --exclude-outbound-cidrs`
/// takes them.
fn cidrs(annotation: &'static str, raw: &str) -> Result<Vec<String>, InjectError> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ok = item.split_once('/').is_some_and(|(ip, len)| {
            ip.parse::<std::net::Ipv4Addr>().is_ok()
                && len.parse::<u8>().is_ok_and(|l| l <= 32)
                && !len.starts_with('+')
        });
        if !ok {
            return Err(bad(
                annotation,
                raw,
                format!("{item:?} is not an IPv4 network a.b.c.d/n"),
            ));
        }
        out.push(item.to_string());
    }
    Ok(out)
}

/// `0.1`, `1`, `0`. The proxy is handed the number as Rust prints it, never
/// the annotation's text.
fn ratio(annotation: &'static str, raw: &str) -> Result<Ratio, InjectError> {
    raw.parse::<f64>()
        .ok()
        .and_then(Ratio::new)
        .ok_or_else(|| bad(annotation, raw, "expected a ratio from 0 to 1, such as 0.1"))
}

/// A tracing filter (`info`, `warn,mycel_sidecar=debug`): a closed alphabet,
/// so the value can never smuggle anything else into the pod spec.
fn log_filter(annotation: &'static str, raw: &str) -> Result<String, InjectError> {
    let ok = raw.len() <= 256
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '=' | ',' | '-' | '.'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(bad(
            annotation,
            raw,
            "expected a log filter such as `info` or `warn,mycel_sidecar=debug`",
        ))
    }
}

/// A Kubernetes resource quantity, non-negative: digits with an optional
/// fraction, then a binary (`Ki`..`Ei`) or decimal (`m`, `k`, `M`..`E`)
/// suffix or an exponent. The API server would refuse anything else, and
/// refusing it here names the annotation instead of a field it never saw.
pub fn quantity(annotation: &'static str, raw: &str) -> Result<String, InjectError> {
    if is_quantity(raw) {
        Ok(raw.to_string())
    } else {
        Err(bad(
            annotation,
            raw,
            "expected a Kubernetes quantity such as 100m, 0.5, 64Mi or 1G",
        ))
    }
}

pub(crate) fn is_quantity(raw: &str) -> bool {
    let s = raw.strip_prefix('+').unwrap_or(raw);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number_ok = match number.split_once('.') {
        None => !number.is_empty(),
        Some((int, frac)) => (!int.is_empty() || !frac.is_empty()) && !frac.contains('.'),
    };
    let suffix_ok = match suffix {
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        exp => exp
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|e| {
                !e.is_empty() && e.len() <= 3 && e.chars().all(|c| c.is_ascii_digit())
            }),
    };
    raw.len() <= 64 && number_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in [
            "100m", "0.5", "1", "64Mi", "1G", "1e3", "2E-2", ".5", "1.", "+1Gi",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "-1", "lots", "64MB", "1.2.3", "Mi", "1e", "1 Gi", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Overrides, InjectError> {
        Overrides::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn values_parse() {
        let o = parse(&[
            (EXCLUDE_INBOUND_PORTS, "9090, 8080,9090"),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/8"),
            (OPAQUE_PORTS, "5432"),
            (PROXY_LOG_LEVEL, "warn,mycel_sidecar=debug"),
            (PROXY_MEMORY_LIMIT, "128Mi"),
            (SIDECAR_MODE, "classic"),
            (MTLS_MODE, "strict"),
            (TRACE_SAMPLING, "0.25"),
            (ACCESS_LOG, "stdout"),
        ])
        .unwrap();
        assert_eq!(o.exclude_inbound_ports, [8080, 9090]);
        assert_eq!(o.exclude_outbound_cidrs, ["10.0.0.0/8"]);
        assert_eq!(o.opaque_ports, [5432]);
        assert_eq!(o.memory_limit.as_deref(), Some("128Mi"));
        assert_eq!(o.sidecar_mode, Some(SidecarMode::Classic));
        assert_eq!(o.mtls_mode, Some(MtlsMode::Strict));
        assert_eq!(o.trace_sampling, Ratio::new(0.25));
        assert_eq!(o.access_log, Some(AccessLog::Stdout));
        assert_eq!(parse(&[]).unwrap(), Overrides::default());
        for (raw, want) in [("0", 0.0), ("1", 1.0), ("1e-3", 0.001), (" 0.5 ", 0.5)] {
            let o = parse(&[(TRACE_SAMPLING, raw)]).unwrap();
            assert_eq!(o.trace_sampling, Ratio::new(want), "{raw}");
        }
        let off = parse(&[(ACCESS_LOG, "off")]).unwrap();
        assert_eq!(off.access_log, Some(AccessLog::Off));
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (key, value) in [
            (EXCLUDE_INBOUND_PORTS, "80,http"),
            (EXCLUDE_OUTBOUND_PORTS, "70000"),
            (OPAQUE_PORTS, "0"),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0"),
            (PROXY_LOG_LEVEL, "debug\"; rm -rf"),
            (PROXY_CPU_REQUEST, "a lot"),
            (PROXY_MEMORY_LIMIT, "-64Mi"),
            (SIDECAR_MODE, "sidecar"),
            (MTLS_MODE, "STRICT"),
            (MTLS_MODE, "disabled"),
            (TRACE_SAMPLING, "1.5"),
            (TRACE_SAMPLING, "-0.1"),
            (TRACE_SAMPLING, "NaN"),
            (TRACE_SAMPLING, "inf"),
            (TRACE_SAMPLING, "10%"),
            (ACCESS_LOG, "/var/log/access.log"),
            (ACCESS_LOG, "STDOUT"),
            (ACCESS_LOG, "-"),
        ] {
            let err = parse(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
            assert!(err.contains(&format!("{value:?}")), "{value}: {err}");
        }
    }
}
