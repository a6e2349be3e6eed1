//! The shop's order flow with every process in a pod of its own and every
//! connection captured transparently: PostgreSQL, Redis and NATS each a
//! `mycel-demo store` beside its sidecar, catalog, orders and
//! notifications dialling their stores by Service name (looked up in the
//! pod's `/etc/hosts`, a VIP of the mesh config, as in a cluster) with no
//! `--tcp-upstream` and no `--proxy`, and a meshed client calling the
//! services by name. Each store admits only its owners (the demo's
//! `<store>-users` AuthorizationPolicies). Needs root, iptables and the
//! stores' servers; skips (or fails under MYCEL_REQUIRE_ALL=1) elsewhere.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mycel_tests::bin;
use mycel_tests::mesh::spiffe;
use mycel_tests::netns::stores::{Hosts, StorePod};
use mycel_tests::netns::{self, Node, Pod, PodSpec};
use mycel_tests::stores::{self, allow_policy, counter, def, tcp_decisions, tunnels_from};

/// The shop services of the flow and their VIPs (HTTP, port 80).
const SERVICES: [(&str, Ipv4Addr); 3] = [
    ("catalog", Ipv4Addr::new(198, 19, 0, 11)),
    ("orders", Ipv4Addr::new(198, 19, 0, 12)),
    ("notifications", Ipv4Addr::new(198, 19, 0, 13)),
];

/// The stores they use and their VIPs (TCP, the server's usual port).
const STORES: [(&str, Ipv4Addr); 4] = [
    ("catalog-postgres", Ipv4Addr::new(198, 19, 0, 21)),
    ("orders-postgres", Ipv4Addr::new(198, 19, 0, 22)),
    ("notifications-redis", Ipv4Addr::new(198, 19, 0, 23)),
    ("nats", Ipv4Addr::new(198, 19, 0, 24)),
];

/// Where each service's app listens in its pod.
const APP_PORT: u16 = 8080;
/// How long the shop gets to show the effect of an order.
const EFFECT: Duration = Duration::from_secs(2);
/// How long the pods get to be ready for the first order.
const STARTUP: Duration = Duration::from_secs(30);

fn service_doc(name: &str, vip: Ipv4Addr, port: u16, target: u16, proto: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  selector:\n    app: {name}\n  clusterIP: {vip}\n  ports:\n  - name: {proto}\n    port: {port}\n    targetPort: {target}\n    appProtocol: {proto}\n"
    )
}

/// The Services with their VIPs, and each store's `<store>-users` policy
/// as the demo writes it (`cli/src/demo/plan/stores.rs`).
fn mesh_yaml() -> String {
    let mut y = String::new();
    for (name, vip) in SERVICES {
        y.push_str(&service_doc(name, vip, 80, APP_PORT, "http"));
    }
    for (name, vip) in STORES {
        let store = def(name);
        y.push_str(&service_doc(name, vip, store.port, store.port, "tcp"));
        let owners: Vec<String> = store.owners.iter().map(|o| format!("shop/{o}")).collect();
        let owners: Vec<&str> = owners.iter().map(String::as_str).collect();
        y.push_str(&allow_policy(&format!("{name}-users"), name, &owners));
    }
    y
}

/// Every Service's names (`name`, `name.shop`, the cluster FQDN) at its VIP.
fn hosts() -> Vec<(Ipv4Addr, Vec<String>)> {
    SERVICES
        .iter()
        .chain(STORES.iter())
        .map(|(name, vip)| {
            let names = [
                format!("{name}.shop.svc.cluster.local"),
                format!("{name}.shop"),
                name.to_string(),
            ];
            (*vip, names.to_vec())
        })
        .collect()
}

/// The stores `service` owns, in [`STORES`] order.
fn stores_of(service: &str) -> Vec<&'static str> {
    STORES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| def(name).owners.contains(&service))
        .collect()
}

/// A meshed pod with the Service names in its `/etc/hosts`.
struct NamedPod {
    pod: Pod,
    _hosts: Hosts,
}

/// `mycel-demo <service>` in its pod: the sidecar first (capture rules
/// and all), so that the app's first connections are already captured;
/// each store given by Service name and port.
async fn service_pod(node: &mut Node, service: &str) -> NamedPod {
    let mut pod = Pod::new(node, service);
    let hosts = Hosts::write(&pod, &hosts());
    let mut spec = PodSpec::new(service).app_port(&format!("http:{APP_PORT}"));
    let mut args = vec![
        service.to_string(),
        "--listen".into(),
        format!("{}:{APP_PORT}", pod.ip),
    ];
    for store in stores_of(service) {
        let d = def(store);
        spec = spec.subscribe(&format!("{store}.shop"));
        args.extend([d.flag.to_string(), format!("{store}.shop:{}", d.port)]);
    }
    pod.start_sidecar(node, &spec).await;
    let demo = bin("mycel-demo").display().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pod.app(service, &demo, &args);
    NamedPod { pod, _hosts: hosts }
}

/// Polls `check` every 100 ms until it gives a value; panics naming
/// `what` (and what the last attempt said) after `within`.
async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match check() {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sidecar's config dump, parsed.
fn config_dump(pod: &Pod) -> Result<serde_json::Value, String> {
    let r = pod.admin("/config_dump");
    serde_json::from_str(&r.stdout).map_err(|e| format!("config_dump: {e}: {}", r.stderr))
}

/// Whether the sidecar holds the inbound AuthorizationPolicy `policy`.
fn holds_policy(pod: &Pod, policy: &str) -> Result<(), String> {
    let dump = config_dump(pod)?;
    dump["snapshot"]["inbound"]["policies"]
        .as_array()
        .is_some_and(|all| all.iter().any(|p| p["name"] == policy))
        .then_some(())
        .ok_or_else(|| format!("policies: {}", dump["snapshot"]["inbound"]["policies"]))
}

/// Whether the sidecar knows `key` (`name.shop`) with a ready endpoint.
fn knows_ready(pod: &Pod, key: &str) -> Result<(), String> {
    let dump = config_dump(pod)?;
    let svc = &dump["snapshot"]["services"][key];
    svc["endpoints"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["ready"] == true))
        .then_some(())
        .ok_or_else(|| format!("{key}: {svc}"))
}

/// One HTTP exchange with curl from `pod`: status and body.
fn curl(pod: &Pod, method: &str, url: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let mut args = vec![
        "-sS",
        "-m",
        "5",
        "-X",
        method,
        "-H",
        "x-user-id: demo-user",
        "-w",
        "\n%{http_code}",
    ];
    if let Some(body) = body {
        args.extend(["-H", "content-type: application/json", "-d", body]);
    }
    args.push(url);
    let r = pod.exec("curl", &args);
    if !r.ok {
        return Err(format!("curl {method} {url}: {}{}", r.stdout, r.stderr));
    }
    let (body, code) = r.stdout.rsplit_once('\n').unwrap_or(("", &r.stdout));
    let code = code
        .trim()
        .parse()
        .map_err(|e| format!("curl {method} {url}: status {code:?}: {e}"))?;
    Ok((code, body.to_string()))
}

/// GET `url` from `pod`: the JSON of a 200 answer, or why not.
fn get_json(pod: &Pod, url: &str) -> Result<serde_json::Value, String> {
    let (code, body) = curl(pod, "GET", url, None)?;
    if code != 200 {
        return Err(format!("GET {url}: {code} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {url}: {e}: {body}"))
}

fn stock(client: &Pod) -> Result<u64, String> {
    let v = get_json(client, "http://catalog.shop/products/p1")?;
    v["stock"]
        .as_u64()
        .ok_or_else(|| format!("no stock in {v}"))
}

fn notified(client: &Pod) -> Result<Vec<String>, String> {
    let v = get_json(client, "http://notifications.shop/notifications")?;
    Ok(stores::order_ids(&v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_through_transparent_pods_lowers_stock_and_notifies_and_each_store_admits_its_owners(
) {
    if !netns::can_run() {
        return;
    }
    let store_names = STORES.map(|(name, _)| name);
    if !stores::available(&store_names) {
        return;
    }
    let started = Instant::now();
    let mut node = Node::new();
    node.start_controller(&mesh_yaml()).await;
    let data = node.path("stores");
    std::fs::create_dir_all(&data).unwrap();

    // The stores first (PostgreSQL's initdb takes a while), then their
    // sidecars, each holding its policy before any owner dials it.
    let mut store_pods: Vec<StorePod> = store_names
        .iter()
        .map(|name| StorePod::start(&mut node, name, &data))
        .collect();
    for store in &mut store_pods {
        store.wait_listening().await;
        let spec = store.spec();
        store.pod.start_sidecar(&node, &spec).await;
    }
    for store in &store_pods {
        node.wait_registered(store.def.name).await;
        let policy = format!("shop/{}-users", store.def.name);
        eventually(
            &format!("{} holds {policy}", store.def.name),
            STARTUP,
            || holds_policy(&store.pod, &policy),
        )
        .await;
    }
    let mut services = Vec::new();
    for (name, _) in SERVICES {
        services.push(service_pod(&mut node, name).await);
    }
    for (name, _) in SERVICES {
        node.wait_registered(name).await;
    }
    // A meshed client: its calls are mTLS end to end, as the gateway's.
    let client = {
        let mut pod = Pod::new(&mut node, "gateway");
        let hosts = Hosts::write(&pod, &hosts());
        let mut spec = PodSpec::new("gateway");
        for (name, _) in SERVICES {
            spec = spec.subscribe(&format!("{name}.shop"));
        }
        pod.start_sidecar(&node, &spec).await;
        NamedPod { pod, _hosts: hosts }
    };
    for (name, _) in SERVICES {
        let key = format!("{name}.shop");
        eventually(&format!("the client knows {key}"), STARTUP, || {
            knows_ready(&client.pod, &key)
        })
        .await;
    }
    let c = &client.pod;

    // Each service answers from its store.
    let before = eventually("catalog's stock from its database", STARTUP, || stock(c)).await;
    eventually("orders' list from its database", STARTUP, || {
        get_json(c, "http://orders.shop/orders")
    })
    .await;
    eventually("notifications' list from its Redis", STARTUP, || {
        notified(c)
    })
    .await;
    eprintln!("pods up and answering in {:?}", started.elapsed());

    let (code, body) = curl(
        c,
        "POST",
        "http://orders.shop/orders",
        Some(r#"{"product":"p1","quantity":2}"#),
    )
    .unwrap();
    let placed = Instant::now();
    assert_eq!(code, 201, "{body}");
    let order: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = order["id"].as_str().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "no order id in {body}");
    assert_eq!(
        order["caller"],
        client.pod.spiffe_id.clone().unwrap(),
        "orders saw the client's identity: {body}"
    );

    let want = before - 2;
    eventually("catalog took 2 from p1's stock", EFFECT, || {
        match stock(c)? {
            s if s == want => Ok(()),
            s => Err(format!("stock {s}, want {want}")),
        }
    })
    .await;
    eventually("notifications lists the order", EFFECT, || {
        let ids = notified(c)?;
        ids.contains(&id)
            .then_some(())
            .ok_or_else(|| format!("{ids:?} has no {id}"))
    })
    .await;
    eprintln!(
        "the order's effects showed {:?} after it was placed",
        placed.elapsed()
    );

    // Each owner's store connections were captured by its sidecar and sent
    // to the store's Service, its port declared TCP (no detection).
    for (service, named) in SERVICES.iter().zip(&services) {
        let metrics = named.pod.admin("/metrics").stdout;
        for store in stores_of(service.0) {
            let port = format!("port=\"{}\"", def(store).port);
            let captured = counter(
                &metrics,
                "mycel_captured_connections_total",
                &[
                    "direction=\"outbound\"",
                    "target=\"service\"",
                    "protocol=\"opaque_declared\"",
                    &port,
                ],
            );
            assert!(
                captured >= 1,
                "{}'s sidecar captured nothing to {store}:\n{metrics}",
                service.0
            );
        }
    }

    // Every store's connections crossed the mesh, each owner's under its
    // identity and admitted by the store's policy.
    for store in &store_pods {
        let metrics = store.pod.admin("/metrics").stdout;
        for owner in store.def.owners {
            let id = spiffe("shop", owner);
            assert!(
                tunnels_from(&metrics, &id) >= 1,
                "{}'s sidecar counted nothing from {id}:\n{metrics}",
                store.def.name
            );
        }
        let decisions = |decision: &str, policy: &str| tcp_decisions(&metrics, decision, policy);
        let policy = format!("shop/{}-users", store.def.name);
        assert!(
            decisions("allow", &policy) >= store.def.owners.len() as u64,
            "{} admitted fewer connections than it has owners under {policy}:\n{metrics}",
            store.def.name
        );
        assert_eq!(decisions("deny", "no-allow-match"), 0, "{metrics}");
    }

    // The policies bite: the client, no owner, gets no PostgreSQL answer.
    let r = c.exec(
        "psql",
        &[
            "host=catalog-postgres.shop port=5432 user=shop dbname=postgres connect_timeout=5",
            "-tAc",
            "select 1",
        ],
    );
    assert!(
        !r.ok,
        "a non-owner reached catalog's database: {}",
        r.stdout
    );
    let catalog_pg = &store_pods[0];
    let metrics = catalog_pg.pod.admin("/metrics").stdout;
    let denied = counter(
        &metrics,
        "mycel_authz_decisions_total",
        &["decision=\"deny\"", "protocol=\"tcp\""],
    );
    assert!(denied >= 1, "psql: {}\n{metrics}", r.stderr);
    eprintln!("whole test {:?}", started.elapsed());
}
