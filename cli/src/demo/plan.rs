//! The demo's layout, decided before anything starts: which ports each
//! process uses, the `mesh.yaml` the controller reads, and every child's
//! command line. All pure, so the whole plan is tested without a process.
//!
//! Ports, from `--base-port B`: controller gRPC B, controller admin B+1,
//! gateway B+2, gateway admin B+3, trace receiver B+4, gateway HTTPS B+5;
//! workload slot i (from B+10, six ports each) holds its app, mesh
//! (inbound), outbound and admin ports, then the local ends of the TCP
//! tunnels to the stores it uses (see [`stores`]).
//!
//! Both reviews versions must be reachable on the one `targetPort` of the
//! `reviews` Service, so v2's app listens on the same port as v1's on a
//! second loopback address (127.0.0.2) and its sidecar is told so with
//! `--app-host`, as two pods would each have the port on their own IP.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod faults;
pub mod stores;
pub use faults::{Fault, Faults};
pub use stores::{StoreKind, Stores};

/// Namespace of every demo workload.
pub const NAMESPACE: &str = "shop";
/// How many ports from `--base-port` the demo may use.
pub const SPAN: u16 = 90;
/// Lowest allowed base port (below are privileged).
pub const MIN_BASE: u16 = 1024;
const FIRST_SLOT: u16 = 10;
/// App, inbound, outbound, admin, and one port per store used.
const SLOT_WIDTH: u16 = 4 + stores::MAX_USED as u16;
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SECOND_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("--base-port {0} is below {MIN_BASE} (privileged ports)")]
    Privileged(u16),
    #[error("--base-port {base}: the demo needs ports {base}..={last}, past 65535")]
    TooHigh { base: u16, last: u32 },
}

/// The app protocol of a workload's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppProto {
    Http,
    Grpc,
    /// A store's port: opaque TCP, never parsed.
    Tcp,
}

impl AppProto {
    pub fn as_str(self) -> &'static str {
        match self {
            AppProto::Http => "http",
            AppProto::Grpc => "grpc",
            AppProto::Tcp => "tcp",
        }
    }
}

/// A local port of a workload's sidecar that tunnels to a store
/// (`--tcp-upstream LISTEN=STORE.shop:PORT`), and the app flag naming it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub listen: SocketAddr,
    pub store: &'static stores::StoreSpec,
}

/// One app and its sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadPlan {
    /// Workload name, also the log file stem (`reviews-v2`).
    pub name: String,
    /// The shop service it runs (`reviews`), label `app`.
    pub service: &'static str,
    pub service_account: &'static str,
    /// `v1`/`v2` for reviews (label `version`).
    pub version: Option<&'static str>,
    pub proto: AppProto,
    /// Set for a store: what `mycel-demo store` runs.
    pub store: Option<StoreKind>,
    pub app: SocketAddr,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    /// The stores this workload's app reaches through its sidecar.
    pub upstreams: Vec<Upstream>,
}

/// Every address of the demo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoPlan {
    pub base: u16,
    pub controller_grpc: SocketAddr,
    pub controller_admin: SocketAddr,
    pub gateway: SocketAddr,
    pub gateway_admin: SocketAddr,
    /// The gateway's HTTPS listener.
    pub gateway_https: SocketAddr,
    /// The built-in OTLP trace receiver (unless the demo is told otherwise).
    pub traces: SocketAddr,
    pub workloads: Vec<WorkloadPlan>,
}

/// The shop's Services: (name, port, protocol). Workloads are matched by
/// `app`. The stores' Services come from [`stores::STORES`].
const SERVICES: [(&str, u16, AppProto); 6] = [
    ("frontend", 80, AppProto::Http),
    ("catalog", 80, AppProto::Http),
    ("reviews", 9090, AppProto::Grpc),
    ("ratings", 80, AppProto::Http),
    ("orders", 80, AppProto::Http),
    ("notifications", 80, AppProto::Http),
];

/// Every Service the demo may have, the shop's and the stores'.
fn all_services() -> impl Iterator<Item = (&'static str, u16, AppProto)> {
    SERVICES.into_iter().chain(
        stores::STORES
            .iter()
            .map(|s| (s.name, s.kind.port(), AppProto::Tcp)),
    )
}

impl DemoPlan {
    /// The plan of a machine where every store's server is installed.
    #[cfg(test)]
    pub fn new(base: u16) -> Result<DemoPlan, PlanError> {
        DemoPlan::with_stores(base, &Stores::all())
    }

    /// The plan with the stores of the kinds `stores` has; a service whose
    /// store cannot run keeps its data in memory.
    pub fn with_stores(base: u16, stores: &Stores) -> Result<DemoPlan, PlanError> {
        if base < MIN_BASE {
            return Err(PlanError::Privileged(base));
        }
        let last = u32::from(base) + u32::from(SPAN) - 1;
        if last > u32::from(u16::MAX) {
            return Err(PlanError::TooHigh { base, last });
        }
        let at = |offset: u16| SocketAddr::new(LOOPBACK, base + offset);
        // (workload, service, version) in start order: stores first, then
        // backends before their callers.
        let running: Vec<&'static stores::StoreSpec> = stores::STORES
            .iter()
            .filter(|s| stores.has(s.kind))
            .collect();
        let mut layout: Vec<(&str, &'static str, Option<&'static str>)> =
            running.iter().map(|s| (s.name, s.name, None)).collect();
        layout.extend([
            ("ratings", "ratings", None),
            ("reviews-v1", "reviews", Some("v1")),
            ("reviews-v2", "reviews", Some("v2")),
            ("catalog", "catalog", None),
            ("orders", "orders", None),
            ("notifications", "notifications", None),
            ("frontend", "frontend", None),
        ]);
        let mut workloads: Vec<WorkloadPlan> = Vec::new();
        for (i, (name, service, version)) in (0u16..).zip(layout) {
            let slot = FIRST_SLOT + i * SLOT_WIDTH;
            let proto = service_proto(service);
            let upstreams = stores::used_by(service)
                .filter(|s| running.contains(s))
                .filter(|s| stores::usable(service, s, &running))
                .zip(slot + 4..)
                .map(|(store, port)| Upstream {
                    listen: at(port),
                    store,
                })
                .collect();
            let shared_app = workloads
                .iter()
                .find(|w| w.service == service)
                .map(|w| w.app);
            let app = match shared_app {
                // A second version: same port, its own loopback address.
                Some(first) => SocketAddr::new(SECOND_LOOPBACK, first.port()),
                None => at(slot),
            };
            workloads.push(WorkloadPlan {
                name: name.to_string(),
                service,
                service_account: service,
                version,
                proto,
                store: stores::spec(service).map(|s| s.kind),
                app,
                inbound: at(slot + 1),
                outbound: at(slot + 2),
                admin: at(slot + 3),
                upstreams,
            });
        }
        Ok(DemoPlan {
            base,
            controller_grpc: at(0),
            controller_admin: at(1),
            gateway: at(2),
            gateway_admin: at(3),
            traces: at(4),
            gateway_https: at(5),
            workloads,
        })
    }

    /// Every address the demo will listen on, with who it is for.
    pub fn listeners(&self) -> Vec<(SocketAddr, String)> {
        let mut out = vec![
            (self.controller_grpc, "controller gRPC".to_string()),
            (self.controller_admin, "controller admin".to_string()),
            (self.gateway, "gateway".to_string()),
            (self.gateway_admin, "gateway admin".to_string()),
            (self.gateway_https, "gateway HTTPS".to_string()),
        ];
        for w in &self.workloads {
            out.push((w.app, format!("{} app", w.name)));
            out.push((w.inbound, format!("{} sidecar inbound", w.name)));
            out.push((w.outbound, format!("{} sidecar outbound", w.name)));
            out.push((w.admin, format!("{} sidecar admin", w.name)));
            for up in &w.upstreams {
                out.push((
                    up.listen,
                    format!("{} sidecar's tunnel to {}", w.name, up.store.name),
                ));
            }
        }
        out
    }

    /// The port of `service`'s app: the `targetPort` of its Service.
    fn target_port(&self, service: &str) -> Option<u16> {
        self.workloads
            .iter()
            .find(|w| w.service == service)
            .map(|w| w.app.port())
    }
}

fn service_proto(service: &str) -> AppProto {
    all_services()
        .find(|(name, _, _)| *name == service)
        .map_or(AppProto::Http, |(_, _, proto)| proto)
}

/// Where the demo keeps its files inside the data dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub data: PathBuf,
}

impl Paths {
    pub fn mesh_yaml(&self) -> PathBuf {
        self.data.join("mesh.yaml")
    }
    /// The controller's own data dir (its CA and token store), which it
    /// keeps private (0700): apart from the stores', which another user
    /// may have to reach (see [`Self::stores`]).
    pub fn controller(&self) -> PathBuf {
        self.data.join("controller")
    }
    pub fn ca_root(&self) -> PathBuf {
        self.controller().join("ca").join("root.pem")
    }
    /// The gateway's HTTPS certificate and the local CA that signs it.
    pub fn web_tls_dir(&self) -> PathBuf {
        self.data.join("gateway-tls")
    }
    pub fn web_ca(&self) -> PathBuf {
        self.web_tls_dir().join("ca.pem")
    }
    pub fn web_ca_key(&self) -> PathBuf {
        self.web_tls_dir().join("ca.key")
    }
    pub fn web_cert(&self) -> PathBuf {
        self.web_tls_dir().join("shop.crt")
    }
    pub fn web_key(&self) -> PathBuf {
        self.web_tls_dir().join("shop.key")
    }
    /// The demo's token issuer: its signing key and public JWKS.
    pub fn jwt_dir(&self) -> PathBuf {
        self.data.join("gateway-jwt")
    }
    pub fn jwt_key(&self) -> PathBuf {
        self.jwt_dir().join("signing.key")
    }
    /// Read by the gateway (GatewayPolicies [`ORDERS_READ`] and
    /// [`ORDERS_WRITE`]), so the data dir must be an absolute path.
    pub fn jwks(&self) -> PathBuf {
        self.jwt_dir().join("jwks.json")
    }
    /// The token the banner tells the user to send to `/api/orders`.
    pub fn demo_token(&self) -> PathBuf {
        self.data.join("demo-token.jwt")
    }
    /// The join token file of one proxy (each proxy has its own: a token
    /// carries the labels its workload registers with).
    pub fn token(&self, proxy: &str) -> PathBuf {
        self.data.join("tokens").join(format!("{proxy}.token"))
    }
    pub fn logs(&self) -> PathBuf {
        self.data.join("logs")
    }
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
    /// Where the stores keep their data, one directory each.
    pub fn stores(&self) -> PathBuf {
        self.data.join("stores")
    }
    pub fn store(&self, name: &str) -> PathBuf {
        self.stores().join(name)
    }
}

// The subset of a Kubernetes Service the local controller reads.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDoc {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ServiceSpec,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Metadata {
    pub name: String,
    pub namespace: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceSpec {
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePortDoc>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortDoc {
    pub name: String,
    pub port: u16,
    pub target_port: u16,
    pub app_protocol: String,
}

/// The shop's Services: one per service (selector `app`), plus
/// `reviews-v1`/`reviews-v2` selecting one version (`app` + `version`).
pub fn services(plan: &DemoPlan) -> Vec<ServiceDoc> {
    let mut docs = Vec::new();
    for (name, port, proto) in all_services() {
        let Some(target_port) = plan.target_port(name) else {
            continue;
        };
        let doc = |doc_name: String, selector: BTreeMap<String, String>| ServiceDoc {
            api_version: "v1".into(),
            kind: "Service".into(),
            metadata: Metadata {
                name: doc_name,
                namespace: NAMESPACE.into(),
            },
            spec: ServiceSpec {
                selector,
                ports: vec![ServicePortDoc {
                    name: proto.as_str().into(),
                    port,
                    target_port,
                    app_protocol: proto.as_str().into(),
                }],
            },
        };
        docs.push(doc(name.into(), [("app".into(), name.into())].into()));
        for version in plan
            .workloads
            .iter()
            .filter(|w| w.service == name)
            .filter_map(|w| w.version)
        {
            let selector = [
                ("app".to_string(), name.to_string()),
                ("version".to_string(), version.to_string()),
            ];
            docs.push(doc(format!("{name}-{version}"), selector.into()));
        }
    }
    docs
}

/// The shop's traffic policies. Ratings is retried (up to 6 tries, the
/// budget at half the requests), so its fault knob
/// (`--ratings-error-rate`) shows retries at work: at an error rate of 0.2
/// a failed answer reaches a page about once in 15,000 ratings calls, and
/// `mycel_retries_total` on the frontend and reviews sidecars counts what
/// was hidden.
pub fn policies(plan: &DemoPlan) -> Vec<mycel_crds::TrafficPolicy> {
    use mycel_crds::traffic_policy::{
        Backoff, RetryBudget, RetryOn, TargetKind, TargetRef, TrafficPolicySpec,
    };
    if plan.target_port("ratings").is_none() {
        return Vec::new();
    }
    let spec = TrafficPolicySpec {
        target_ref: TargetRef {
            group: String::new(),
            kind: TargetKind::Service,
            name: "ratings".into(),
            port: None,
        },
        load_balancer: None,
        retry: Some(mycel_crds::traffic_policy::Retry {
            attempts: 6,
            per_try_timeout: Some("2s".into()),
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Reset,
                RetryOn::ServerError,
            ],
            retriable_status_codes: Vec::new(),
            backoff: Some(Backoff {
                base: "5ms".into(),
                max: "50ms".into(),
            }),
            budget: Some(RetryBudget {
                percent: 50,
                min_per_second: 10,
                window: "10s".into(),
            }),
            max_body_bytes: None,
            retry_non_idempotent: false,
        }),
        timeouts: None,
        circuit_breaker: None,
        outlier_detection: None,
        fault: None,
    };
    let mut policy = mycel_crds::TrafficPolicy::new("ratings", spec);
    policy.metadata.namespace = Some(NAMESPACE.into());
    vec![policy]
}

/// Share of reviews calls that v2 answers, in percent.
pub const REVIEWS_V2_PERCENT: u32 = 10;

/// The shop's routes: a GRPCRoute on the `reviews` Service (GAMMA) that
/// splits its calls between `reviews-v1` and `reviews-v2`, so the page
/// shows v2 (with stars) for about one product in ten. Empty when the plan
/// has no two reviews versions.
pub fn routes(plan: &DemoPlan) -> Vec<serde_json::Value> {
    let versions: Vec<&str> = plan
        .workloads
        .iter()
        .filter(|w| w.service == "reviews")
        .filter_map(|w| w.version)
        .collect();
    if versions != ["v1", "v2"] || plan.target_port("reviews").is_none() {
        return Vec::new();
    }
    let Some((_, port, _)) = SERVICES.iter().find(|(name, _, _)| *name == "reviews") else {
        return Vec::new();
    };
    vec![serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": "reviews-split", "namespace": NAMESPACE},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": port}],
            "rules": [{
                "backendRefs": [
                    {"name": "reviews-v1", "port": port, "weight": 100 - REVIEWS_V2_PERCENT},
                    {"name": "reviews-v2", "port": port, "weight": REVIEWS_V2_PERCENT},
                ],
            }],
        },
    })]
}

/// The AuthorizationPolicy that lets only `frontend` call `catalog`.
pub const CATALOG_POLICY: &str = "catalog-callers";

/// The AuthorizationPolicy that lets only the gateway call `orders`.
pub const ORDERS_POLICY: &str = "orders-callers";

/// The AuthorizationPolicy that lets only the frontend read notifications.
pub const NOTIFICATIONS_POLICY: &str = "notifications-callers";

/// Who may call whom: only the frontend's identity may call catalog (any
/// other caller, e.g. ratings, gets 403 naming why), and only the
/// gateway's may call orders, which trusts the `x-user-id` the gateway
/// sets from a verified token: another workload could send any user.
/// Only the frontend reads notifications, and each store admits only the
/// services that own it (a database per service). Each is left out when
/// the plan lacks its service.
pub fn authorization(plan: &DemoPlan) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = stores::STORES
        .iter()
        .filter(|s| plan.target_port(s.name).is_some())
        .map(|s| stores::authorization(s, NAMESPACE))
        .collect();
    if plan.target_port("notifications").is_some() {
        out.push(serde_json::json!({
            "apiVersion": "mycel.io/v1alpha1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": NOTIFICATIONS_POLICY, "namespace": NAMESPACE},
            "spec": {
                "selector": {"matchLabels": {"app": "notifications"}},
                "action": "ALLOW",
                "rules": [{"from": [{"serviceAccounts": [format!("{NAMESPACE}/frontend")]}]}],
            },
        }));
    }
    if plan.target_port("orders").is_some() {
        out.push(serde_json::json!({
            "apiVersion": "mycel.io/v1alpha1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": ORDERS_POLICY, "namespace": NAMESPACE},
            "spec": {
                "selector": {"matchLabels": {"app": "orders"}},
                "action": "ALLOW",
                "rules": [{"from": [{"serviceAccounts": [format!("{NAMESPACE}/gateway")]}]}],
            },
        }));
    }
    let Some(frontend) = plan.workloads.iter().find(|w| w.service == "frontend") else {
        return out;
    };
    if plan.target_port("catalog").is_none() {
        return out;
    }
    out.push(serde_json::json!({
        "apiVersion": "mycel.io/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": CATALOG_POLICY, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "catalog"}},
            "action": "ALLOW",
            // The gateway reads products for the aggregated product view.
            "rules": [{"from": [{"serviceAccounts": [
                format!("{NAMESPACE}/{}", frontend.service_account),
                format!("{NAMESPACE}/gateway"),
            ]}]}],
        },
    }));
    out
}

/// The Gateway (Gateway API) the demo gateway serves (`--gateway`).
pub const GATEWAY_NAME: &str = "shop-gateway";

/// The GatewayPolicy that rate-limits the shop's JSON API per client.
pub const API_RATE_LIMIT: &str = "shop-api-rate";

/// The GatewayPolicy that serves `/api/catalog` from the gateway's cache
/// (and rate-limits it like the rest of `/api`).
pub const CATALOG_CACHE: &str = "catalog-cache";

/// The GatewayPolicy that answers `/api/product-view/{id}` by merging the
/// catalog's product and the ratings' rating.
pub const PRODUCT_VIEW: &str = "product-view";

/// The GatewayPolicy of `POST /api/orders`: a token of the demo's issuer
/// with the scope `orders:write`.
pub const ORDERS_WRITE: &str = "orders-auth";

/// The GatewayPolicy of every other method on `/api/orders`: a token of
/// the demo's issuer with the scope `orders:read`.
pub const ORDERS_READ: &str = "orders-read";

/// The per-client rate limit of the shop's JSON API, in every `/api`
/// policy: a request takes one rule, the most specific, and only that
/// rule's policy applies, so each policy under `/api` repeats the limit.
fn api_rate_limit() -> serde_json::Value {
    serde_json::json!({"requests": 50, "per": "1s", "burst": 100, "key": "ClientIP"})
}

/// A GatewayPolicy admitting tokens of the demo's issuer (ES256 keys of
/// the JWKS file) that carry `scope`, forwarding their `sub` to orders as
/// `x-user-id`; the token itself stays at the gateway.
fn orders_policy(name: &str, scope: &str, jwks: &Path) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "mycel.io/v1alpha1",
        "kind": "GatewayPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "jwt": {
                "issuer": super::jwt::ISSUER,
                "audiences": [super::jwt::AUDIENCE],
                "jwks": {"file": path(jwks)},
                "algorithms": ["ES256"],
                "requiredClaims": [{"name": "scope", "value": scope}],
                "forwardClaims": [{"claim": "sub", "header": "x-user-id"}],
                "forwardToken": false,
            },
            "rateLimit": api_rate_limit(),
        },
    })
}

fn port_of(service: &str) -> u16 {
    SERVICES
        .iter()
        .find(|(name, _, _)| *name == service)
        .map_or(80, |(_, port, _)| *port)
}

/// The shop's front door: a Gateway `shop-gateway` with one HTTP listener
/// on the demo gateway's port, and an HTTPRoute `shop` sending every path
/// of any host to `frontend:80`, `/api/product-view/{id}` answered by the
/// gateway from the catalog and the ratings ([`PRODUCT_VIEW`]),
/// `/api/catalog` to the catalog's `/products` through the gateway's cache
/// ([`CATALOG_CACHE`]), `/api` under a per-client rate limit
/// (GatewayPolicy [`API_RATE_LIMIT`]: 50 per second, bursts of 100),
/// and `/api/orders` to the orders' `/orders` for holders of a token of
/// the demo's issuer: `POST` needs the scope `orders:write`
/// ([`ORDERS_WRITE`]), other methods `orders:read` ([`ORDERS_READ`]), so
/// a read-only token can list but not order. Two rules rather than one
/// policy, as a policy applies to a whole rule and the Gateway API picks
/// the rule with a method match first.
/// None names a hostname, so the gateway answers whatever host the
/// browser uses (`127.0.0.1:<port>`). Empty when the plan has no
/// frontend.
pub fn gateway(plan: &DemoPlan, paths: &Paths) -> Vec<serde_json::Value> {
    if plan.target_port("frontend").is_none() {
        return Vec::new();
    }
    let Some((_, port, _)) = SERVICES.iter().find(|(name, _, _)| *name == "frontend") else {
        return Vec::new();
    };
    let mut rules = vec![
        serde_json::json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": "frontend", "port": port}],
        }),
        serde_json::json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/api/product-view"}}],
            "filters": [{
                "type": "ExtensionRef",
                "extensionRef": {"group": "mycel.io", "kind": "GatewayPolicy", "name": PRODUCT_VIEW},
            }],
            "backendRefs": [{"name": "frontend", "port": port}],
        }),
        serde_json::json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/api/catalog"}}],
            "filters": [
                {
                    "type": "URLRewrite",
                    "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/products"}},
                },
                {
                    "type": "ExtensionRef",
                    "extensionRef": {"group": "mycel.io", "kind": "GatewayPolicy", "name": CATALOG_CACHE},
                },
            ],
            "backendRefs": [{"name": "catalog", "port": port_of("catalog")}],
        }),
        serde_json::json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
            "filters": [{
                "type": "ExtensionRef",
                "extensionRef": {"group": "mycel.io", "kind": "GatewayPolicy", "name": API_RATE_LIMIT},
            }],
            "backendRefs": [{"name": "frontend", "port": port}],
        }),
    ];
    if plan.target_port("orders").is_some() {
        let orders_rule = |method: Option<&str>, policy: &str| {
            let mut matched =
                serde_json::json!({"path": {"type": "PathPrefix", "value": "/api/orders"}});
            if let Some(method) = method {
                matched["method"] = method.into();
            }
            serde_json::json!({
                "matches": [matched],
                "filters": [
                    {
                        "type": "URLRewrite",
                        "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/orders"}},
                    },
                    {
                        "type": "ExtensionRef",
                        "extensionRef": {"group": "mycel.io", "kind": "GatewayPolicy", "name": policy},
                    },
                ],
                "backendRefs": [{"name": "orders", "port": port_of("orders")}],
            })
        };
        rules.push(orders_rule(Some("POST"), ORDERS_WRITE));
        rules.push(orders_rule(None, ORDERS_READ));
    }
    let mut docs = vec![
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": NAMESPACE},
            "spec": {
                "gatewayClassName": "mycel",
                "listeners": [{"name": "http", "port": plan.gateway.port(), "protocol": "HTTP"}],
            },
        }),
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "shop", "namespace": NAMESPACE},
            "spec": {
                "parentRefs": [{"name": GATEWAY_NAME}],
                "rules": rules,
            },
        }),
        serde_json::json!({
            "apiVersion": "mycel.io/v1alpha1",
            "kind": "GatewayPolicy",
            "metadata": {"name": API_RATE_LIMIT, "namespace": NAMESPACE},
            "spec": {
                "rateLimit": api_rate_limit(),
            },
        }),
        serde_json::json!({
            "apiVersion": "mycel.io/v1alpha1",
            "kind": "GatewayPolicy",
            "metadata": {"name": CATALOG_CACHE, "namespace": NAMESPACE},
            "spec": {
                "rateLimit": api_rate_limit(),
                "cache": {},
            },
        }),
        serde_json::json!({
            "apiVersion": "mycel.io/v1alpha1",
            "kind": "GatewayPolicy",
            "metadata": {"name": PRODUCT_VIEW, "namespace": NAMESPACE},
            "spec": {
                "rateLimit": api_rate_limit(),
                "aggregate": {"parts": [
                    {"name": "product", "backendRef": {"name": "catalog", "port": port_of("catalog")},
                     "path": "/products/{last}", "timeout": "2s"},
                    {"name": "rating", "backendRef": {"name": "ratings", "port": port_of("ratings")},
                     "path": "/ratings/{last}", "timeout": "1s", "required": false},
                ]},
            },
        }),
    ];
    if plan.target_port("orders").is_some() {
        docs.push(orders_policy(ORDERS_WRITE, "orders:write", &paths.jwks()));
        docs.push(orders_policy(ORDERS_READ, "orders:read", &paths.jwks()));
    }
    docs
}

/// `mesh.yaml`: the Services, traffic policies, the Gateway and the routes
/// as YAML documents.
pub fn mesh_yaml(plan: &DemoPlan, paths: &Paths) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::from("# Written by `mycelctl demo`.\n");
    for doc in services(plan) {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&doc)?);
    }
    for doc in policies(plan) {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&doc)?);
    }
    for doc in gateway(plan, paths)
        .into_iter()
        .chain(routes(plan))
        .chain(authorization(plan))
    {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&doc)?);
    }
    Ok(out)
}

fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

pub fn controller_args(plan: &DemoPlan, paths: &Paths) -> Vec<String> {
    vec![
        "--data-dir".into(),
        path(&paths.controller()),
        "--grpc-addr".into(),
        plan.controller_grpc.to_string(),
        "--admin-addr".into(),
        plan.controller_admin.to_string(),
        "--mesh-config".into(),
        path(&paths.mesh_yaml()),
        "--dashboard".into(),
    ]
}

/// The `mycel-demo` command line of a workload's app: a shop service, or
/// `mycel-demo store <kind>` for a store (its data in the data dir).
pub fn app_args(w: &WorkloadPlan, paths: &Paths, faults: &Faults) -> Vec<String> {
    if let Some(kind) = w.store {
        let mut args = strings(["store", kind.as_str(), "--dir"]);
        args.push(path(&paths.store(&w.name)));
        args.push("--listen".into());
        args.push(w.app.to_string());
        return args;
    }
    let mut args = strings([w.service, "--listen"]);
    args.push(w.app.to_string());
    args.push("--proxy".into());
    args.push(w.outbound.to_string());
    if let Some(version) = w.version {
        args.extend(strings(["--version", version]));
    }
    for up in &w.upstreams {
        args.push(up.store.kind.app_flag().into());
        args.push(up.listen.to_string());
    }
    args.extend(faults.app_args(w.service));
    args
}

/// Flags every proxy (sidecar or gateway) shares.
fn proxy_common(plan: &DemoPlan, paths: &Paths, workload: &str, sa: &str) -> Vec<String> {
    vec![
        "--controller".into(),
        plan.controller_grpc.to_string(),
        "--ca-root".into(),
        path(&paths.ca_root()),
        "--token-file".into(),
        path(&paths.token(workload)),
        "--workload".into(),
        workload.into(),
        "--namespace".into(),
        NAMESPACE.into(),
        "--service-account".into(),
        sa.into(),
    ]
}

/// The labels a workload registers with; its join token is created with
/// exactly these.
pub fn labels(w: &WorkloadPlan) -> Vec<(String, String)> {
    let mut labels = vec![("app".to_string(), w.service.to_string())];
    if let Some(version) = w.version {
        labels.push(("version".to_string(), version.to_string()));
    }
    labels
}

/// A join token the demo creates: one per proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyToken {
    /// Names the token file.
    pub proxy: String,
    pub service_account: &'static str,
    pub labels: Vec<(String, String)>,
    /// The address the proxy registers (its inbound IP), allowed explicitly
    /// so admission does not depend on which source address it dials from.
    pub addresses: Vec<std::net::IpAddr>,
}

/// Every join token the demo creates (all in [`NAMESPACE`]).
pub fn tokens(plan: &DemoPlan) -> Vec<ProxyToken> {
    let mut out: Vec<ProxyToken> = plan
        .workloads
        .iter()
        .map(|w| ProxyToken {
            proxy: w.name.clone(),
            service_account: w.service_account,
            labels: labels(w),
            addresses: vec![w.inbound.ip()],
        })
        .collect();
    out.push(ProxyToken {
        proxy: "gateway".to_string(),
        service_account: "gateway",
        labels: Vec::new(),
        addresses: Vec::new(),
    });
    out
}

pub fn sidecar_args(plan: &DemoPlan, paths: &Paths, w: &WorkloadPlan) -> Vec<String> {
    let mut args = proxy_common(plan, paths, &w.name, w.service_account);
    for (k, v) in labels(w) {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    let app_port = match w.proto {
        AppProto::Http => format!("http:{}", w.app.port()),
        AppProto::Grpc => format!("grpc:{}:grpc", w.app.port()),
        AppProto::Tcp => format!(
            "{}:{}:tcp",
            w.store.map_or("tcp", StoreKind::as_str),
            w.app.port()
        ),
    };
    args.extend(["--app-port".into(), app_port]);
    for up in &w.upstreams {
        args.extend([
            "--tcp-upstream".into(),
            format!(
                "{}={}.{NAMESPACE}:{}",
                up.listen,
                up.store.name,
                up.store.kind.port()
            ),
        ]);
    }
    if w.app.ip() != LOOPBACK {
        args.extend(["--app-host".into(), w.app.ip().to_string()]);
    }
    args.extend([
        "--inbound".into(),
        w.inbound.to_string(),
        "--outbound".into(),
        w.outbound.to_string(),
        "--admin".into(),
        w.admin.to_string(),
    ]);
    args
}

pub fn gateway_args(plan: &DemoPlan, paths: &Paths) -> Vec<String> {
    let mut args = strings(["--mode", "gateway"]);
    args.extend(proxy_common(plan, paths, "gateway", "gateway"));
    args.extend([
        "--listen".into(),
        plan.gateway.to_string(),
        "--gateway".into(),
        GATEWAY_NAME.into(),
        "--admin".into(),
        plan.gateway_admin.to_string(),
        "--tls-listen".into(),
        plan.gateway_https.to_string(),
        "--tls-cert".into(),
        format!(
            "{},{}",
            paths.web_cert().display(),
            paths.web_key().display()
        ),
    ]);
    args
}

#[cfg(test)]
mod tests;
