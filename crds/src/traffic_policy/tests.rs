use super::*;

fn spec(extra: serde_json::Value) -> TrafficPolicySpec {
    let mut v = serde_json::json!({"targetRef": {"kind": "Service", "name": "ratings"}});
    if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in more {
            obj.insert(k.clone(), val.clone());
        }
    }
    serde_json::from_value(v).unwrap()
}

#[test]
fn defaults_fill_what_is_left_out() {
    let s = spec(serde_json::json!({
        "retry": {},
        "outlierDetection": {},
        "loadBalancer": {},
    }));
    s.validate().unwrap();
    let r = s.retry.unwrap();
    assert_eq!(r.attempts, 3);
    assert!(r.retry_on.contains(&RetryOn::GatewayError));
    assert_eq!(s.load_balancer.unwrap().algorithm, Algorithm::PeakEwma);
    let o = s.outlier_detection.unwrap();
    assert_eq!((o.consecutive_5xx, o.max_ejection_percent), (5, 10));
}

#[test]
fn invalid_specs_name_the_field() {
    let cases = [
        (
            serde_json::json!({"retry": {"attempts": 1}}),
            "spec.retry.attempts",
            "out of range (2-10)",
        ),
        (
            serde_json::json!({"retry": {"perTryTimeout": "soon"}}),
            "spec.retry.perTryTimeout",
            "not a duration",
        ),
        (
            serde_json::json!({"retry": {"retriableStatusCodes": [503, 200]}}),
            "spec.retry.retriableStatusCodes[1]",
            "out of range",
        ),
        (
            serde_json::json!({"retry": {"backoff": {"base": "1s", "max": "100ms"}}}),
            "spec.retry.backoff.base",
            "longer than max",
        ),
        (
            serde_json::json!({"retry": {"budget": {"window": "2m"}}}),
            "spec.retry.budget.window",
            "1s-60s",
        ),
        (
            serde_json::json!({"retry": {"budget": {"percent": 101}}}),
            "spec.retry.budget.percent",
            "out of range",
        ),
        (
            serde_json::json!({"loadBalancer": {"algorithm": "RingHash"}}),
            "spec.loadBalancer.hashOn",
            "required by RingHash",
        ),
        (
            serde_json::json!({"loadBalancer": {"hashOn": {"header": "x-user"}}}),
            "spec.loadBalancer.hashOn",
            "allowed only",
        ),
        (
            serde_json::json!({"loadBalancer": {"algorithm": "Maglev", "hashOn": {"header": "x", "cookie": "y"}}}),
            "spec.loadBalancer.hashOn",
            "exactly one",
        ),
        (
            serde_json::json!({"loadBalancer": {"algorithm": "Maglev", "hashOn": {"header": "bad header"}}}),
            "spec.loadBalancer.hashOn.header",
            "not a header",
        ),
        (
            serde_json::json!({"loadBalancer": {"minRingSize": 3}}),
            "spec.loadBalancer.minRingSize",
            "out of range",
        ),
        (
            serde_json::json!({"circuitBreaker": {"maxRequests": 0}}),
            "spec.circuitBreaker.maxRequests",
            "out of range",
        ),
        (
            serde_json::json!({"outlierDetection": {"baseEjectionTime": "10m", "maxEjectionTime": "1m"}}),
            "spec.outlierDetection.baseEjectionTime",
            "longer",
        ),
        (
            serde_json::json!({"outlierDetection": {"maxEjectionPercent": 150}}),
            "spec.outlierDetection.maxEjectionPercent",
            "out of range",
        ),
        (
            serde_json::json!({"fault": {}}),
            "spec.fault",
            "needs a delay",
        ),
        (
            serde_json::json!({"fault": {"abort": {"httpStatus": 99, "percentage": 5}}}),
            "spec.fault.abort.httpStatus",
            "out of range",
        ),
        (
            serde_json::json!({"fault": {"delay": {"fixedDelay": "50ms", "percentage": 101}}}),
            "spec.fault.delay.percentage",
            "out of range",
        ),
        (
            serde_json::json!({"timeouts": {"request": "1d"}}),
            "spec.timeouts.request",
            "not a duration",
        ),
        (
            serde_json::json!({"targetRef": {"kind": "Service", "name": "Ratings"}}),
            "spec.targetRef.name",
            "not a Service name",
        ),
        (
            serde_json::json!({"targetRef": {"group": "apps", "kind": "Service", "name": "r"}}),
            "spec.targetRef.group",
            "core group",
        ),
    ];
    for (extra, field, words) in cases {
        let err = spec(extra.clone()).validate().unwrap_err();
        assert_eq!(err.field, field, "{extra}");
        assert!(err.to_string().contains(words), "{extra}: {err}");
    }
}

#[test]
fn a_full_policy_is_valid() {
    let s = spec(serde_json::json!({
        "loadBalancer": {"algorithm": "RingHash", "hashOn": {"header": "x-user"}, "minRingSize": 1024, "slowStart": "30s", "locality": true},
        "retry": {"attempts": 5, "perTryTimeout": "250ms", "retryOn": ["5xx", "unavailable"], "retriableStatusCodes": [409],
                  "backoff": {"base": "10ms", "max": "1s"}, "budget": {"percent": 25, "minPerSecond": 5, "window": "10s"},
                  "maxBodyBytes": 1024, "retryNonIdempotent": true},
        "timeouts": {"request": "5s", "connect": "1s", "idle": "1m"},
        "circuitBreaker": {"maxConnections": 100, "maxPendingRequests": 10, "maxRequests": 1000, "maxRequestsPerEndpoint": 100},
        "outlierDetection": {"consecutive5xx": 3, "consecutiveGatewayErrors": 2, "interval": "1s", "baseEjectionTime": "5s",
                             "maxEjectionTime": "1m", "maxEjectionPercent": 50, "successRate": {"minimumHosts": 3, "requestVolume": 10, "stdevFactor": 1900}},
        "fault": {"delay": {"fixedDelay": "50ms", "percentage": 10}, "abort": {"httpStatus": 503, "percentage": 5}},
    }));
    assert_eq!(s.validate(), Ok(()));
}
