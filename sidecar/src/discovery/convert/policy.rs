//! The `TRAFFIC_POLICY` resource into the data path's model. Every value is
//! checked against the ranges the CRD allows, so a controller that sends
//! nonsense (or a newer one that sends what this proxy does not know) gets
//! a NACK naming the field, and the last good policy stays.

use std::collections::BTreeMap;
use std::time::Duration;

use mycel_api::v1 as pb;

use super::{ConvertError, Ctx};
use crate::core::directory::policy::{
    Algorithm, CircuitBreaker, Fault, FaultAbort, FaultDelay, HashKey, LoadBalancer,
    OutlierDetection, PolicyRules, RetryBudget, RetryOn, RetryPolicy, SuccessRate, Timeouts,
    TrafficPolicy, DEFAULT_EWMA_DECAY,
};

/// Largest request body a retry may keep (the CRD's limit).
const MAX_RETRY_BODY_BYTES: u32 = 4 * 1024 * 1024;

pub(super) fn traffic_policy(
    ctx: &Ctx,
    key: &str,
    p: &pb::TrafficPolicy,
) -> Result<TrafficPolicy, ConvertError> {
    if p.service != key {
        return Err(ctx.err(
            "traffic_policy.service",
            format!("{:?} is not the resource key", p.service),
        ));
    }
    let whole = match &p.rules {
        Some(r) => rules(ctx, "traffic_policy.rules", r)?,
        None => PolicyRules::default(),
    };
    let mut ports = BTreeMap::new();
    for (i, pp) in p.ports.iter().enumerate() {
        let at = format!("traffic_policy.ports[{i}]");
        let port = match u16::try_from(pp.port) {
            Ok(n) if n != 0 => n,
            _ => {
                return Err(ctx.err(
                    format!("{at}.port"),
                    format!("{} is not a port number in 1..=65535", pp.port),
                ))
            }
        };
        let r = match &pp.rules {
            Some(r) => rules(ctx, &format!("{at}.rules"), r)?,
            None => PolicyRules::default(),
        };
        if ports.insert(port, r).is_some() {
            return Err(ctx.err(format!("{at}.port"), format!("port {port} listed twice")));
        }
    }
    Ok(TrafficPolicy {
        source: p.source.clone(),
        rules: whole,
        ports,
    })
}

fn range(ctx: &Ctx, field: String, v: u64, min: u64, max: u64) -> Result<(), ConvertError> {
    if v < min || v > max {
        return Err(ctx.err(field, format!("{v} is out of range ({min}-{max})")));
    }
    Ok(())
}

fn ms(v: u64) -> Option<Duration> {
    (v != 0).then(|| Duration::from_millis(v))
}

fn rules(ctx: &Ctx, at: &str, r: &pb::PolicyRules) -> Result<PolicyRules, ConvertError> {
    Ok(PolicyRules {
        load_balancer: match &r.load_balancer {
            Some(lb) => load_balancer(ctx, &format!("{at}.load_balancer"), lb)?,
            None => LoadBalancer::default(),
        },
        retry: r
            .retry
            .as_ref()
            .map(|x| retry(ctx, &format!("{at}.retry"), x))
            .transpose()?,
        timeouts: r
            .timeouts
            .as_ref()
            .map(|t| Timeouts {
                request: ms(t.request_ms),
                connect: ms(t.connect_ms),
                idle: ms(t.idle_ms),
            })
            .unwrap_or_default(),
        circuit_breaker: r.circuit_breaker.as_ref().map(|c| {
            // 0 is "no limit" on the wire.
            let limit = |v: u32| if v == 0 { u32::MAX } else { v };
            CircuitBreaker {
                max_connections: limit(c.max_connections),
                max_pending_requests: limit(c.max_pending_requests),
                max_requests: limit(c.max_requests),
                max_requests_per_endpoint: c.max_requests_per_endpoint,
            }
        }),
        outlier_detection: r
            .outlier_detection
            .as_ref()
            .map(|o| outlier(ctx, &format!("{at}.outlier_detection"), o))
            .transpose()?,
        fault: r
            .fault
            .as_ref()
            .map(|f| fault(ctx, &format!("{at}.fault"), f))
            .transpose()?,
    })
}

fn load_balancer(ctx: &Ctx, at: &str, lb: &pb::LoadBalancer) -> Result<LoadBalancer, ConvertError> {
    use pb::load_balancer::Algorithm as A;
    let hash = || -> Result<HashKey, ConvertError> {
        let field = format!("{at}.hash_key");
        match lb.hash_key.as_ref().and_then(|h| h.key.as_ref()) {
            Some(pb::hash_key::Key::Header(h)) if valid_token(h) => {
                Ok(HashKey::Header(h.to_ascii_lowercase()))
            }
            Some(pb::hash_key::Key::Cookie(c)) if valid_token(c) => Ok(HashKey::Cookie(c.clone())),
            Some(pb::hash_key::Key::SourceIp(true)) => Ok(HashKey::SourceIp),
            Some(_) => Err(ctx.err(field, "not a header or cookie name")),
            None => Err(ctx.err(field, "missing (ring hash and Maglev need one)")),
        }
    };
    let algorithm = match A::try_from(lb.algorithm) {
        Ok(A::Unspecified | A::PeakEwma) => Algorithm::PeakEwma {
            decay: ms(lb.ewma_decay_ms).unwrap_or(DEFAULT_EWMA_DECAY),
        },
        Ok(A::RoundRobin) => Algorithm::RoundRobin,
        Ok(A::LeastRequest) => Algorithm::LeastRequest,
        Ok(A::RingHash) => {
            let size = if lb.min_ring_size == 0 {
                1024
            } else {
                lb.min_ring_size
            };
            range(ctx, format!("{at}.min_ring_size"), size.into(), 64, 65536)?;
            Algorithm::RingHash {
                key: hash()?,
                min_ring_size: size,
            }
        }
        Ok(A::Maglev) => Algorithm::Maglev { key: hash()? },
        Err(_) => {
            return Err(ctx.err(
                format!("{at}.algorithm"),
                format!("unknown algorithm {}", lb.algorithm),
            ))
        }
    };
    Ok(LoadBalancer {
        algorithm,
        slow_start: ms(lb.slow_start_ms),
        locality: lb.locality,
    })
}

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b))
}

fn retry(ctx: &Ctx, at: &str, r: &pb::RetryPolicy) -> Result<RetryPolicy, ConvertError> {
    range(ctx, format!("{at}.attempts"), r.attempts.into(), 2, 10)?;
    range(
        ctx,
        format!("{at}.budget_percent"),
        r.budget_percent.into(),
        0,
        100,
    )?;
    range(
        ctx,
        format!("{at}.budget_window_ms"),
        r.budget_window_ms,
        1_000,
        60_000,
    )?;
    range(
        ctx,
        format!("{at}.max_body_bytes"),
        r.max_body_bytes.into(),
        0,
        MAX_RETRY_BODY_BYTES.into(),
    )?;
    if r.backoff_base_ms > r.backoff_max_ms {
        return Err(ctx.err(
            format!("{at}.backoff_base_ms"),
            format!(
                "{} is longer than backoff_max_ms {}",
                r.backoff_base_ms, r.backoff_max_ms
            ),
        ));
    }
    for (i, s) in r.statuses.iter().enumerate() {
        range(ctx, format!("{at}.statuses[{i}]"), (*s).into(), 400, 599)?;
    }
    for (i, c) in r.grpc_codes.iter().enumerate() {
        range(ctx, format!("{at}.grpc_codes[{i}]"), (*c).into(), 1, 16)?;
    }
    Ok(RetryPolicy {
        attempts: r.attempts,
        per_try_timeout: ms(r.per_try_timeout_ms),
        retry_on: RetryOn {
            connect_failure: r.on_connect_failure,
            refused_stream: r.on_refused_stream,
            reset: r.on_reset,
            server_error: r.on_5xx,
            gateway_error: r.on_gateway_error,
            retriable_4xx: r.on_retriable_4xx,
            statuses: r
                .statuses
                .iter()
                .filter_map(|s| u16::try_from(*s).ok())
                .collect(),
            grpc_codes: r.grpc_codes.clone(),
        },
        backoff_base: Duration::from_millis(r.backoff_base_ms),
        backoff_max: Duration::from_millis(r.backoff_max_ms),
        budget: RetryBudget {
            ratio: f64::from(r.budget_percent) / 100.0,
            min_per_second: r.budget_min_per_second,
            window: Duration::from_millis(r.budget_window_ms),
        },
        max_body_bytes: usize::try_from(r.max_body_bytes).unwrap_or(0),
        non_idempotent: r.non_idempotent,
    })
}

fn outlier(
    ctx: &Ctx,
    at: &str,
    o: &pb::OutlierDetection,
) -> Result<OutlierDetection, ConvertError> {
    range(
        ctx,
        format!("{at}.max_ejection_percent"),
        o.max_ejection_percent.into(),
        0,
        100,
    )?;
    range(ctx, format!("{at}.interval_ms"), o.interval_ms, 1, u64::MAX)?;
    range(
        ctx,
        format!("{at}.base_ejection_time_ms"),
        o.base_ejection_time_ms,
        1,
        o.max_ejection_time_ms.max(1),
    )?;
    let success_rate = match &o.success_rate {
        Some(s) => {
            range(
                ctx,
                format!("{at}.success_rate.minimum_hosts"),
                s.minimum_hosts.into(),
                1,
                1000,
            )?;
            range(
                ctx,
                format!("{at}.success_rate.request_volume"),
                s.request_volume.into(),
                1,
                u32::MAX.into(),
            )?;
            range(
                ctx,
                format!("{at}.success_rate.stdev_factor"),
                s.stdev_factor.into(),
                1,
                100_000,
            )?;
            Some(SuccessRate {
                minimum_hosts: s.minimum_hosts,
                request_volume: s.request_volume,
                stdev_factor: s.stdev_factor,
            })
        }
        None => None,
    };
    Ok(OutlierDetection {
        consecutive_5xx: o.consecutive_5xx,
        consecutive_gateway_errors: o.consecutive_gateway_errors,
        interval: Duration::from_millis(o.interval_ms),
        base_ejection_time: Duration::from_millis(o.base_ejection_time_ms),
        max_ejection_time: Duration::from_millis(o.max_ejection_time_ms),
        max_ejection_percent: o.max_ejection_percent,
        success_rate,
    })
}

pub(super) fn fault(ctx: &Ctx, at: &str, f: &pb::Fault) -> Result<Fault, ConvertError> {
    let delay = match &f.delay {
        Some(d) => {
            range(ctx, format!("{at}.delay.percent"), d.percent.into(), 0, 100)?;
            Some(FaultDelay {
                delay: Duration::from_millis(d.delay_ms),
                percent: f64::from(d.percent),
            })
        }
        None => None,
    };
    let abort = match &f.abort {
        Some(a) => {
            range(
                ctx,
                format!("{at}.abort.http_status"),
                a.http_status.into(),
                200,
                599,
            )?;
            range(ctx, format!("{at}.abort.percent"), a.percent.into(), 0, 100)?;
            Some(FaultAbort {
                status: u16::try_from(a.http_status).unwrap_or(503),
                percent: f64::from(a.percent),
            })
        }
        None => None,
    };
    Ok(Fault { delay, abort })
}
