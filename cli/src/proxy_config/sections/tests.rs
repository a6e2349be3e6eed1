use serde_json::json;

use super::*;

/// The parts of a real `/config_dump` snapshot these sections read.
fn snapshot() -> Value {
    json!({
        "services": {
            "ratings.shop": {
                "state": "known",
                "service": {
                    "name": "ratings", "namespace": "shop",
                    "ports": [{"name": "http", "port": 80, "target_port": 8080, "protocol": "http"}],
                    "vips": ["10.96.0.10"]
                },
                "endpoints": [
                    {"mesh_addr": "127.0.0.2:15006", "identity": "spiffe://cluster.local/ns/shop/sa/ratings",
                     "workload": "ratings-0", "zone": "", "weight": 1, "ready": true},
                    {"mesh_addr": "127.0.0.3:15006", "identity": "spiffe://cluster.local/ns/shop/sa/ratings",
                     "workload": "ratings-1", "zone": "z1", "weight": 1, "ready": false}
                ],
                "policy": {
                    "source": "shop/ratings-policy",
                    "rules": {
                        "load_balancer": {"algorithm": {"type": "ring_hash", "key": {"from": "header", "name": "x-user"}, "min_ring_size": 1024}},
                        "retry": {"attempts": 3},
                        "timeouts": {"request": {"secs": 2, "nanos": 500000000}, "connect": null, "idle": null},
                        "circuit_breaker": null, "outlier_detection": {"consecutive_5xx": 5}, "fault": null
                    },
                    "ports": {"80": {
                        "load_balancer": {"algorithm": {"type": "round_robin"}},
                        "retry": null, "timeouts": {"request": null},
                        "circuit_breaker": {"max_connections": 1}, "outlier_detection": null, "fault": null
                    }}
                },
                "routes": {"routes": [{
                    "name": "shop/ratings-split", "kind": "Http", "ports": [], "hostnames": [],
                    "rules": [{"matches": [], "filters": [], "timeout": null, "backends": [
                        {"service_key": "ratings-v1.shop", "port": 80, "weight": 90, "filters": []},
                        {"service_key": "ratings-v2.shop", "port": null, "weight": 10, "filters": []}
                    ]}]
                }]}
            },
            "reviews.shop": {"state": "pending"}
        },
        "inbound": {
            "default": "mesh-authenticated",
            "policies": [{"name": "shop/ratings-callers", "action": "ALLOW", "rules": [{}, {}]}]
        }
    })
}

#[test]
fn service_rows() {
    let rows = services(&snapshot());
    let out = services_table(&rows).render();
    assert_eq!(
        out,
        "SERVICE       STATE    PORTS               VIPS        ENDPOINTS\n\
         ratings.shop  known    http 80->8080/http  10.96.0.10  1/2 ready\n\
         reviews.shop  pending  -                   -           0/0 ready\n",
        "{out}"
    );
}

#[test]
fn endpoint_rows() {
    let out = endpoints_table(&endpoints(&snapshot())).render();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].starts_with("ratings.shop  127.0.0.2:15006  spiffe://cluster.local/ns/shop/sa/ratings  ratings-0  true   -     1"), "{out}");
    assert!(lines[2].contains("ratings-1  false  z1"), "{out}");
}

#[test]
fn policy_rows_per_port() {
    let rows = policies(&snapshot());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].load_balancer, "ring_hash (header x-user)");
    assert_eq!(rows[0].retries, "3");
    assert_eq!(rows[0].request_timeout, "2s 500ms");
    assert!(rows[0].outlier_detection && !rows[0].circuit_breaker);
    assert_eq!(
        (rows[1].port, rows[1].load_balancer.as_str()),
        (Some(80), "round_robin")
    );
    assert!(rows[1].circuit_breaker);
    let out = policies_table(&rows).render();
    assert!(out.contains("shop/ratings-policy  *"), "{out}");
}

#[test]
fn route_rows() {
    let rows = routes(&snapshot());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kind, "http");
    assert_eq!(
        rows[0].backends,
        ["ratings-v1.shop:80 90", "ratings-v2.shop 10"]
    );
    assert!(routes_table(&rows)
        .render()
        .contains("shop/ratings-split  http  *"));
}

#[test]
fn authz_rows() {
    let a = authz(&snapshot());
    let out = authz_table(&a).render();
    assert_eq!(
        out,
        "POLICY                ACTION              RULES\n\
         (default)             mesh-authenticated  -\n\
         shop/ratings-callers  ALLOW               2\n"
    );
    let none = authz(&json!({}));
    assert!(!none.received);
    assert!(authz_table(&none).render().contains("nothing received"));
}

#[test]
fn cert_row() {
    let c = cert(&json!({
        "spiffe_id": "spiffe://cluster.local/ns/shop/sa/ratings", "serial": "0a",
        "not_after": "2030-01-01T00:00:00Z", "not_after_unix": 1,
        "issuer_chain": [{"subject": "CN=mycel intermediate"}]
    }));
    assert!(c.seconds_left < 0);
    let out = certs_table(&c).render();
    assert!(
        out.contains("expired") && out.contains("CN=mycel intermediate"),
        "{out}"
    );
}

#[test]
fn sections_are_titled_only_when_several() {
    let one = render(&[("Services", services_table(&[]))]);
    assert_eq!(one, "(none)\n");
    let two = render(&[
        ("Services", services_table(&[])),
        ("Routes", routes_table(&[])),
    ]);
    assert_eq!(two, "Services:\n(none)\n\nRoutes:\n(none)\n");
}
