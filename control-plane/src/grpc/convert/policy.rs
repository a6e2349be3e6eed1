//! Traffic policy objects (validated `TrafficPolicySpec`s) to the
//! `TRAFFIC_POLICY` wire resource: names become flags and codes, durations
//! milliseconds, and every default the CRD documents is filled in here, so
//! proxies never guess a default of their own.

use std::time::Duration;

use mycel_api::v1;
use mycel_crds::duration::parse_duration;
use mycel_crds::traffic_policy::{self as tp, RetryOn};

use crate::model::{ServiceKey, ServicePolicy, TrafficPolicySpec};

/// Default limit of a request body kept for a retry (64 KiB).
const DEFAULT_RETRY_BODY_BYTES: u32 = 64 * 1024;

pub fn policy_to_proto(service: &ServiceKey, p: &ServicePolicy) -> v1::TrafficPolicy {
    v1::TrafficPolicy {
        service: service.to_string(),
        source: p.sources.join(","),
        rules: p.service_wide.as_ref().map(rules),
        ports: p
            .ports
            .iter()
            .map(|(port, spec)| v1::PortPolicy {
                port: u32::from(*port),
                rules: Some(rules(spec)),
            })
            .collect(),
    }
}

/// Milliseconds of a duration the spec's validation already accepted.
pub(super) fn ms(raw: &str) -> u64 {
    parse_duration(raw)
        .map(|d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn opt_ms(raw: &Option<String>) -> u64 {
    raw.as_deref().map(ms).unwrap_or(0)
}

fn rules(spec: &TrafficPolicySpec) -> v1::PolicyRules {
    v1::PolicyRules {
        load_balancer: spec.load_balancer.as_ref().map(load_balancer),
        retry: spec.retry.as_ref().map(retry),
        timeouts: spec.timeouts.as_ref().map(|t| v1::Timeouts {
            request_ms: opt_ms(&t.request),
            connect_ms: opt_ms(&t.connect),
            idle_ms: opt_ms(&t.idle),
        }),
        circuit_breaker: spec.circuit_breaker.as_ref().map(|c| v1::CircuitBreaker {
            max_connections: c.max_connections.unwrap_or(0),
            max_pending_requests: c.max_pending_requests.unwrap_or(0),
            max_requests: c.max_requests.unwrap_or(0),
            max_requests_per_endpoint: c.max_requests_per_endpoint.unwrap_or(0),
        }),
        outlier_detection: spec
            .outlier_detection
            .as_ref()
            .map(|o| v1::OutlierDetection {
                consecutive_5xx: o.consecutive_5xx,
                consecutive_gateway_errors: o.consecutive_gateway_errors,
                interval_ms: ms(&o.interval),
                base_ejection_time_ms: ms(&o.base_ejection_time),
                max_ejection_time_ms: ms(&o.max_ejection_time),
                max_ejection_percent: o.max_ejection_percent,
                success_rate: o.success_rate.as_ref().map(|s| v1::SuccessRate {
                    minimum_hosts: s.minimum_hosts,
                    request_volume: s.request_volume,
                    stdev_factor: s.stdev_factor,
                }),
            }),
        fault: spec.fault.as_ref().map(fault),
    }
}

/// Also the fault a route's `ExtensionRef` to a policy applies.
pub fn fault(f: &tp::Fault) -> v1::Fault {
    v1::Fault {
        delay: f.delay.as_ref().map(|d| v1::FaultDelay {
            delay_ms: ms(&d.fixed_delay),
            percent: d.percentage,
        }),
        abort: f.abort.as_ref().map(|a| v1::FaultAbort {
            http_status: u32::from(a.http_status),
            percent: a.percentage,
        }),
    }
}

fn load_balancer(lb: &tp::LoadBalancer) -> v1::LoadBalancer {
    use v1::load_balancer::Algorithm as A;
    let algorithm = match lb.algorithm {
        tp::Algorithm::PeakEwma => A::PeakEwma,
        tp::Algorithm::RoundRobin => A::RoundRobin,
        tp::Algorithm::LeastRequest => A::LeastRequest,
        tp::Algorithm::RingHash => A::RingHash,
        tp::Algorithm::Maglev => A::Maglev,
    };
    let hash_key = lb.hash_on.as_ref().and_then(|h| {
        let key = if let Some(name) = &h.header {
            v1::hash_key::Key::Header(name.to_ascii_lowercase())
        } else if let Some(name) = &h.cookie {
            v1::hash_key::Key::Cookie(name.clone())
        } else if h.source_ip == Some(true) {
            v1::hash_key::Key::SourceIp(true)
        } else {
            return None;
        };
        Some(v1::HashKey { key: Some(key) })
    });
    v1::LoadBalancer {
        algorithm: algorithm as i32,
        ewma_decay_ms: opt_ms(&lb.ewma_decay),
        hash_key,
        min_ring_size: lb.min_ring_size.unwrap_or(1024),
        slow_start_ms: opt_ms(&lb.slow_start),
        locality: lb.locality,
    }
}

fn retry(r: &tp::Retry) -> v1::RetryPolicy {
    let on = |c: RetryOn| r.retry_on.contains(&c);
    let mut grpc_codes: Vec<u32> = r.retry_on.iter().filter_map(|c| c.grpc_code()).collect();
    grpc_codes.sort_unstable();
    grpc_codes.dedup();
    let mut statuses: Vec<u32> = r
        .retriable_status_codes
        .iter()
        .map(|c| u32::from(*c))
        .collect();
    statuses.sort_unstable();
    statuses.dedup();
    let (base, max) = match &r.backoff {
        Some(b) => (ms(&b.base), ms(&b.max)),
        None => (25, 250),
    };
    let (percent, min_per_second, window) = match &r.budget {
        Some(b) => (b.percent, b.min_per_second, ms(&b.window)),
        None => (20, 10, 10_000),
    };
    v1::RetryPolicy {
        attempts: r.attempts,
        per_try_timeout_ms: opt_ms(&r.per_try_timeout),
        on_connect_failure: on(RetryOn::ConnectFailure),
        on_refused_stream: on(RetryOn::RefusedStream),
        on_reset: on(RetryOn::Reset),
        on_5xx: on(RetryOn::ServerError),
        on_gateway_error: on(RetryOn::GatewayError),
        on_retriable_4xx: on(RetryOn::Retriable4xx),
        statuses,
        grpc_codes,
        backoff_base_ms: base,
        backoff_max_ms: max,
        budget_percent: percent,
        budget_min_per_second: min_per_second,
        budget_window_ms: window,
        max_body_bytes: r.max_body_bytes.unwrap_or(DEFAULT_RETRY_BODY_BYTES),
        non_idempotent: r.retry_non_idempotent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> TrafficPolicySpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_are_filled_in_for_the_proxy() {
        let key = ServiceKey::new("ratings", "shop").unwrap();
        let p = ServicePolicy {
            sources: vec!["shop/ratings".into()],
            service_wide: Some(spec(serde_json::json!({
                "targetRef": {"kind": "Service", "name": "ratings"},
                "retry": {"retryOn": ["5xx", "unavailable", "cancelled"], "retriableStatusCodes": [409, 409]},
                "loadBalancer": {"algorithm": "Maglev", "hashOn": {"header": "X-User"}},
            }))),
            ports: Default::default(),
        };
        let out = policy_to_proto(&key, &p);
        assert_eq!(out.service, "ratings.shop");
        let rules = out.rules.unwrap();
        let r = rules.retry.unwrap();
        assert_eq!(r.attempts, 3);
        assert!(r.on_5xx && !r.on_gateway_error && !r.on_connect_failure);
        assert_eq!(r.grpc_codes, vec![1, 14]);
        assert_eq!(r.statuses, vec![409]);
        assert_eq!((r.backoff_base_ms, r.backoff_max_ms), (25, 250));
        assert_eq!(
            (
                r.budget_percent,
                r.budget_min_per_second,
                r.budget_window_ms
            ),
            (20, 10, 10_000)
        );
        assert_eq!(r.max_body_bytes, 65536);
        let lb = rules.load_balancer.unwrap();
        assert_eq!(lb.algorithm, v1::load_balancer::Algorithm::Maglev as i32);
        assert_eq!(
            lb.hash_key.unwrap().key,
            Some(v1::hash_key::Key::Header("x-user".into()))
        );
        assert!(rules.circuit_breaker.is_none() && rules.fault.is_none());
    }
}
