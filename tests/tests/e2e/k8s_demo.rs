//! The demo shop's Kubernetes manifests (`demo-services/k8s/`) on a real
//! kube-apiserver with the chart installed, applied as a user applies them
//! (`kubectl apply -f demo-services/k8s/`): every object is accepted; the
//! shop's Pods get the sidecar from the chart's webhook, served by a real
//! controller run with the installed chart's flags, settings and
//! ServiceAccount, while the gateway's Pod is left alone; images carry the
//! workspace version; and the gateway, a real `mycel-proxy` started with
//! the manifest's flags and a token of its ServiceAccount, gets its
//! certificate from that controller exactly as an injected sidecar does.
//!
//! No kube-controller-manager or kubelet runs here: the test creates each
//! Deployment's Pod from its template, as the ReplicaSet controller would,
//! and expands `$(VAR)` in the gateway's flags as the kubelet would. The
//! kind suite runs the same manifests in a whole cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use mycel_demo::upstream::Target;
use mycel_demo::ServiceKind;
use mycel_tests::k8s::{self, ApiServer};
use mycel_tests::mesh::{next_ip, spiffe, ADMIN_PORT, GATEWAY_PORT};
use mycel_tests::{bin, http, Mesh, Proc};
use serde_json::{json, Value};

const SHOP: &str = "shop";
const SYSTEM: &str = "mycel-system";
const CONTROLLER: &str = "mycel-controller";
/// images/build.sh tags every image with the workspace version, which this
/// crate shares.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The proxy's admin port in a meshed Pod (helm/mycel/values.yaml).
const PROXY_ADMIN: i32 = 15000;
/// Flags of a sidecar's own listeners, app ports and capture mode: a gateway has none of
/// them (it listens with --listen and routes by its Gateway, --gateway).
const SIDECAR_ONLY: &[&str] = &[
    "--inbound=",
    "--transparent-outbound=",
    "--inbound-capture=",
    "--app-port=",
    "--opaque-port=",
    // Governs the inbound capture, which a gateway has not.
    "--mtls-mode=",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn manifests() -> PathBuf {
    repo().join("demo-services/k8s")
}

/// Runs helm or kubectl from the Kubernetes tier's binaries.
fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(k8s::bin_dir().join(name))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `(kind, name)` of every document in the manifest files.
fn documents() -> BTreeSet<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = BTreeSet::new();
    for file in files {
        let yaml = std::fs::read_to_string(&file).unwrap();
        let docs = serde_saphyr::from_multiple::<Value>(&yaml)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for d in docs.into_iter().filter(|d| !d.is_null()) {
            if d["kind"] != "Namespace" {
                assert_eq!(d["metadata"]["namespace"], SHOP, "{}: {d}", file.display());
            }
            let kind = d["kind"].as_str().unwrap().to_string();
            let name = d["metadata"]["name"].as_str().unwrap().to_string();
            assert!(
                out.insert((kind, name)),
                "{}: defined twice: {d}",
                file.display()
            );
        }
    }
    out
}

/// A token for `sa` in `ns` (TokenRequest), as a projected volume holds it.
async fn token(admin: &Client, ns: &str, sa: &str, spec: Value) -> String {
    let req: TokenRequest = serde_json::from_value(json!({ "spec": spec })).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &req)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// The controller as the chart runs it: the installed Deployment's flags
/// (the harness sets the data dir, ports and --kubernetes), the installed
/// injector settings, and a token of the chart's ServiceAccount. The
/// installed webhook configuration is pointed at its loopback webhook port
/// (nothing routes the chart's Service here); its selectors and conditions
/// stay the chart's.
async fn chart_controller(api: &ApiServer, admin: &Client, dir: &Path) -> Mesh {
    let webhook = SocketAddr::from(([127, 0, 0, 1], mycel_tests::ports::free_block(1)));
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let mut hook = hooks.get("mycel-injector").await.unwrap();
    for w in hook.webhooks.iter_mut().flatten() {
        w.client_config.service = None;
        w.client_config.url = Some(format!("https://{webhook}/inject"));
    }
    hooks
        .replace("mycel-injector", &PostParams::default(), &hook)
        .await
        .unwrap();

    let config = Api::<ConfigMap>::namespaced(admin.clone(), SYSTEM)
        .get("mycel-config")
        .await
        .unwrap();
    let inject = dir.join("inject.yaml");
    std::fs::write(&inject, &config.data.unwrap()["inject.yaml"]).unwrap();

    let deploy = Api::<Deployment>::namespaced(admin.clone(), SYSTEM)
        .get(CONTROLLER)
        .await
        .unwrap();
    let chart_args = deploy.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    let mut args = Vec::new();
    for arg in chart_args {
        match arg.split('=').next().unwrap() {
            "--kubernetes" | "--data-dir" | "--grpc-addr" | "--admin-addr" => {}
            "--webhook-addr" => args.push(format!("--webhook-addr={webhook}")),
            "--inject-config" => args.push(format!("--inject-config={}", inject.display())),
            _ => args.push(arg),
        }
    }
    let sa_token = token(
        admin,
        SYSTEM,
        CONTROLLER,
        json!({"expirationSeconds": 3600}),
    )
    .await;
    let kubeconfig = api.token_kubeconfig(CONTROLLER, &sa_token).unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Mesh::start_kubernetes(&kubeconfig, &args).await
}

/// The Pod the ReplicaSet controller would make of `deploy`'s template.
fn pod_of(deploy: &Deployment) -> Pod {
    let name = deploy.metadata.name.clone().unwrap();
    pod_of_template(&name, deploy.spec.clone().unwrap().template)
}

/// The Pod a controller would make of `template` for `name`.
fn pod_of_template(name: &str, template: k8s_openapi::api::core::v1::PodTemplateSpec) -> Pod {
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-0")),
            namespace: Some(SHOP.into()),
            labels: meta.labels,
            annotations: meta.annotations,
            ..ObjectMeta::default()
        },
        spec: template.spec,
        ..Pod::default()
    }
}

/// Creates `pod`; while the controller has not yet patched the webhook's
/// caBundle the API server cannot call it and (failurePolicy Fail) refuses
/// the Pod, so that is retried for a while.
async fn create_pod(pods: &Api<Pod>, pod: &Pod) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match pods.create(&PostParams::default(), pod).await {
            Ok(p) => return p,
            Err(e) if Instant::now() < deadline => {
                println!("creating {:?}: {e}; retrying", pod.metadata.name);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("the API server never admitted {:?}: {e}", pod.metadata.name),
        }
    }
}

fn names(containers: &Option<Vec<Container>>) -> Vec<&str> {
    containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect()
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// A value as JSON, so that objects compare whole and print readably.
fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

/// What the webhook must have made of an app's Pod; its proxy container.
fn assert_meshed(pod: &Pod) -> &Container {
    let name = pod.metadata.name.as_deref().unwrap();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(
        names(&spec.init_containers),
        ["mycel-init", "mycel-proxy"],
        "{name}: not injected"
    );
    assert_eq!(
        annotation(pod, "mycel.io/injected"),
        Some("native"),
        "{name}"
    );
    assert_eq!(label(pod, "mycel.io/meshed"), Some("true"), "{name}");
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(
        proxy.restart_policy.as_deref(),
        Some("Always"),
        "{name}: the proxy is a native sidecar"
    );
    assert_eq!(
        proxy.image.as_deref(),
        Some(format!("mycel-proxy:{VERSION}").as_str()),
        "{name}: the chart's proxy image"
    );
    let app = &spec.containers[0];
    // Every app port is announced to the proxy, gRPC by its port name.
    let want: Vec<String> = app
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let port_name = p.name.clone().unwrap();
            let proto = if port_name.starts_with("grpc") {
                "grpc"
            } else if port_name.starts_with("tcp") {
                "tcp"
            } else {
                "http"
            };
            format!("--app-port={port_name}:{}:{proto}", p.container_port)
        })
        .collect();
    let got: Vec<&String> = proxy
        .args
        .iter()
        .flatten()
        .filter(|a| a.starts_with("--app-port="))
        .collect();
    assert_eq!(got, want.iter().collect::<Vec<_>>(), "{name}");
    // A store has no probe: the kubelet's would come from outside the
    // mesh, which a strict pod refuses.
    if annotation(pod, "mycel.io/mtls-mode") == Some("strict") {
        assert!(app.readiness_probe.is_none(), "{name}");
        return proxy;
    }
    // The readiness probe goes through the proxy's admin port.
    let probe = app
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .unwrap_or_else(|| panic!("{name}: no HTTP readiness probe"));
    assert_eq!(
        probe.path.as_deref(),
        Some(format!("/app-health/{}/readyz", app.name).as_str()),
        "{name}"
    );
    assert_eq!(probe.port, IntOrString::Int(PROXY_ADMIN), "{name}");
    proxy
}

/// The gateway is a proxy that was not injected, given what the injector
/// gives a sidecar for its identity: the same image, identity and
/// controller flags, downward-API variables, token and trust-bundle
/// volumes and mounts as `sidecar`, the proxy the webhook added to an app.
fn assert_gateway_set_up_like(gateway: &Pod, sidecar: &Container, injected: &Pod) {
    let spec = gateway.spec.as_ref().unwrap();
    assert!(
        names(&spec.init_containers).is_empty(),
        "the gateway was injected: {gateway:?}"
    );
    assert_eq!(names(&Some(spec.containers.clone())), ["gateway"]);
    assert_eq!(annotation(gateway, "mycel.io/injected"), None);
    assert_eq!(label(gateway, "mycel.io/meshed"), None);
    assert_eq!(annotation(gateway, "mycel.io/inject"), Some("disabled"));
    let c = &spec.containers[0];
    assert_eq!(
        c.image, sidecar.image,
        "the gateway runs the injected proxy's image"
    );

    let args = c.args.clone().unwrap_or_default();
    for arg in sidecar.args.iter().flatten() {
        if SIDECAR_ONLY.iter().any(|p| arg.starts_with(p)) {
            continue;
        }
        assert!(
            args.contains(arg),
            "the injector gives a sidecar {arg}, the gateway has not: {args:?}"
        );
    }
    for var in sidecar.env.iter().flatten() {
        if var.name.starts_with("MYCEL_") {
            continue;
        }
        let same = c.env.iter().flatten().find(|e| e.name == var.name);
        assert_eq!(
            same.map(json_of),
            Some(json_of(var)),
            "environment variable {}",
            var.name
        );
    }
    let mounts = |c: &Container| -> BTreeSet<String> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| json_of(m).to_string())
            .collect()
    };
    assert_eq!(mounts(c), mounts(sidecar), "volume mounts");
    for volume in ["mycel-token", "mycel-trust-bundle"] {
        let find = |p: &Pod| {
            p.spec
                .as_ref()
                .unwrap()
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == volume)
                .map(json_of)
        };
        assert!(find(injected).is_some(), "the injector adds no {volume}");
        assert_eq!(find(gateway), find(injected), "volume {volume}");
    }
}

/// The gateway's command line as the kubelet would run it in Pod `pod`
/// (`$(VAR)` expanded from the container's downward-API variables), then
/// pointed at this test's controller, files and loopback addresses.
fn gateway_command(pod: &Pod, overrides: &BTreeMap<&str, String>) -> Vec<String> {
    let spec = pod.spec.as_ref().unwrap();
    let c = &spec.containers[0];
    assert_eq!(c.command.as_deref(), Some(&["mycel-proxy".to_string()][..]));
    let field = |path: &str| -> String {
        match path {
            "metadata.name" => pod.metadata.name.clone().unwrap(),
            "metadata.namespace" => pod.metadata.namespace.clone().unwrap(),
            "spec.serviceAccountName" => spec.service_account_name.clone().unwrap(),
            // The address the gateway runs on here; a kubelet gives the Pod's.
            "status.podIP" => overrides["--address"].clone(),
            other => panic!("a downward-API field the test does not know: {other}"),
        }
    };
    let vars: Vec<(String, String)> = c
        .env
        .iter()
        .flatten()
        .map(|e| {
            let path = &e
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path;
            (format!("$({})", e.name), field(path))
        })
        .collect();
    let mut seen = BTreeSet::new();
    let args: Vec<String> = c
        .args
        .iter()
        .flatten()
        .map(|arg| {
            let flag = arg.split('=').next().unwrap();
            if let Some(value) = overrides.get(flag) {
                seen.insert(flag);
                return format!("{flag}={value}");
            }
            vars.iter()
                .fold(arg.clone(), |a, (var, value)| a.replace(var, value))
        })
        .collect();
    assert_eq!(
        seen,
        overrides.keys().copied().collect(),
        "flags the test points elsewhere must be in the manifest"
    );
    assert!(!args.iter().any(|a| a.contains("$(")), "{args:?}");
    args
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn name(d: &Deployment) -> &str {
    d.metadata.name.as_deref().unwrap()
}

/// Images, pull policy, readiness probes and requests of every workload.
fn assert_workloads(deployments: &[Deployment]) {
    for d in deployments {
        let name = name(d);
        for c in &pod_spec(d).containers {
            let image = c.image.as_deref().unwrap_or_default();
            let (repository, tag) = image.split_once(':').unwrap_or((image, ""));
            let want_repo = if name == "gateway" {
                "mycel-proxy"
            } else {
                "mycel-demo"
            };
            assert_eq!(repository, want_repo, "{name}: {image}");
            assert_eq!(tag, VERSION, "{name}: {image} is not the workspace version");
            assert_eq!(
                c.image_pull_policy.as_deref(),
                Some("IfNotPresent"),
                "{name}"
            );
            assert!(c.readiness_probe.is_some(), "{name}: no readiness probe");
            let requests = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.clone())
                .unwrap_or_default();
            assert!(
                requests.contains_key("cpu") && requests.contains_key("memory"),
                "{name}: no CPU and memory requests"
            );
        }
    }
}

/// The apps' command lines, read by mycel-demo's own flags: each listens
/// on a port its container opens, shows its fault knobs, and those that
/// call others do so by Service name and port.
fn assert_app_command_lines(deployments: &[Deployment]) {
    for d in deployments
        .iter()
        .filter(|d| !["gateway", "issuer"].contains(&name(d)))
    {
        let name = name(d);
        let c = &pod_spec(d).containers[0];
        let argv = std::iter::once("mycel-demo".to_string()).chain(c.args.clone().unwrap());
        let cli = mycel_demo::config::Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{name}: mycel-demo refuses its args: {e}"));
        // The fault knobs are written out, off, for users to turn up.
        let args = c.args.clone().unwrap_or_default();
        for knob in ["--error-rate=0", "--latency-ms=0"] {
            assert!(args.iter().any(|a| a == knob), "{name}: no {knob}");
        }
        let config =
            mycel_demo::ServiceConfig::try_from(cli).unwrap_or_else(|e| panic!("{name}: {e}"));
        let opens = |port: u16| {
            c.ports
                .iter()
                .flatten()
                .any(|p| p.container_port == i32::from(port))
        };
        assert!(
            opens(config.listen.port()),
            "{name}: --listen {}",
            config.listen
        );
        if let Some(health) = config.health {
            assert!(opens(health.port()), "{name}: --health {health}");
        }
        let calls: &[(&str, u16)] = match config.kind {
            ServiceKind::Frontend => &[
                ("catalog", 80),
                ("ratings", 80),
                ("reviews", 9090),
                ("notifications", 80),
            ],
            ServiceKind::Reviews => &[("ratings", 80)],
            ServiceKind::Catalog
            | ServiceKind::Ratings
            | ServiceKind::Orders
            | ServiceKind::Notifications => &[],
        };
        // Each service reaches its own stores by Service name and port,
        // which its sidecar captures (opaque TCP over mTLS).
        let by_name = |store: Option<(&str, u16)>| {
            store.map(|(host, port)| Target::Host {
                host: format!("{host}.{SHOP}"),
                port,
            })
        };
        let [postgres, redis, nats] = own_stores(config.kind);
        assert_eq!(
            config.stores.postgres,
            by_name(postgres),
            "{name} --postgres"
        );
        assert_eq!(config.stores.redis, by_name(redis), "{name} --redis");
        assert_eq!(config.stores.nats, by_name(nats), "{name} --nats");
        for (service, port) in calls {
            let route = config
                .upstreams
                .route(service, *port)
                .unwrap_or_else(|e| panic!("{name} cannot call {service}: {e}"));
            let by_name = Target::Host {
                host: service.to_string(),
                port: *port,
            };
            assert_eq!(route.connect, by_name, "{name} calls {service}");
        }
    }
}

/// The shop's token issuer stands outside the mesh, as an identity
/// provider would: not injected, serving its keys on the port its Service
/// targets, keeping its key on a writable volume (the root is read-only),
/// and named by both orders GatewayPolicies as their `jwks.url`.
async fn assert_issuer_outside_the_mesh(admin: &Client, pod: &Pod, deployments: &[Deployment]) {
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(names(&Some(spec.containers.clone())), ["issuer"]);
    assert_eq!(annotation(pod, "mycel.io/injected"), None);
    assert_eq!(annotation(pod, "mycel.io/inject"), Some("disabled"));
    let d = deployments.iter().find(|d| name(d) == "issuer").unwrap();
    let c = &pod_spec(d).containers[0];
    let argv = std::iter::once("mycel-demo".to_string()).chain(c.args.clone().unwrap());
    let args = match mycel_demo::config::parse_args(argv) {
        Ok(mycel_demo::config::Invocation::Issuer(args)) => args,
        other => panic!("issuer: not `mycel-demo issuer`: {other:?}"),
    };
    assert!(
        c.ports
            .iter()
            .flatten()
            .any(|p| p.container_port == i32::from(args.listen.port())),
        "issuer: --listen {}",
        args.listen
    );
    let mounted = c
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| Path::new(&m.mount_path) == args.key_dir && m.read_only != Some(true));
    assert!(
        mounted,
        "issuer: --key-dir {:?} is not a writable volume",
        args.key_dir
    );

    let policies = Api::<mycel_crds::GatewayPolicy>::namespaced(admin.clone(), SHOP);
    for policy in ["orders-auth", "orders-read"] {
        let jwt = policies.get(policy).await.unwrap().spec.jwt.unwrap();
        assert_eq!(
            jwt.jwks.url.as_deref(),
            Some(format!("http://issuer.{SHOP}.svc.cluster.local/jwks.json").as_str()),
            "{policy}"
        );
        assert_eq!(jwt.issuer, mycel_api::demo_tokens::ISSUER, "{policy}");
        assert_eq!(
            jwt.audiences,
            [mycel_api::demo_tokens::AUDIENCE],
            "{policy}"
        );
    }
}

/// Each Service selects the Pods of exactly its Deployments, on a port
/// they open; the gateway's is reachable on every node at 30080.
async fn assert_services(admin: &Client, deployments: &[Deployment]) {
    let services = Api::<Service>::namespaced(admin.clone(), SHOP);
    for (service, port, want) in [
        ("frontend", 80, &["frontend"][..]),
        ("catalog", 80, &["catalog"][..]),
        ("ratings", 80, &["ratings"][..]),
        ("orders", 80, &["orders"][..]),
        ("notifications", 80, &["notifications"][..]),
        ("reviews", 9090, &["reviews-v1", "reviews-v2"][..]),
        ("reviews-v1", 9090, &["reviews-v1"][..]),
        ("reviews-v2", 9090, &["reviews-v2"][..]),
        ("gateway", 80, &["gateway"][..]),
        ("issuer", 80, &["issuer"][..]),
    ] {
        let spec = services.get(service).await.unwrap().spec.unwrap();
        let selector = spec.selector.unwrap_or_default();
        let selected: Vec<&Deployment> = deployments
            .iter()
            .filter(|d| {
                let meta = d.spec.as_ref().unwrap().template.metadata.as_ref();
                let labels = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        let names: Vec<&str> = selected.iter().map(|d| name(d)).collect();
        assert_eq!(names, want, "Service {service} selects {selector:?}");
        let ports = spec.ports.unwrap();
        assert_eq!(ports.len(), 1, "{service}");
        assert_eq!(ports[0].port, port, "{service}");
        let target = match &ports[0].target_port {
            Some(IntOrString::Int(n)) => *n,
            other => panic!("{service}: targetPort {other:?}"),
        };
        for d in selected {
            let opens = pod_spec(d).containers[0]
                .ports
                .iter()
                .flatten()
                .any(|p| p.container_port == target);
            assert!(opens, "{service} → {target}: not a port of {}", name(d));
        }
        match service {
            "gateway" => {
                assert_eq!(spec.type_.as_deref(), Some("NodePort"));
                assert_eq!(ports[0].node_port, Some(30080));
            }
            "reviews" => assert_eq!(ports[0].name.as_deref(), Some("grpc")),
            _ => {}
        }
    }
}

/// The PostgreSQL, Redis and NATS a service of the shop uses, by Service
/// name and port: a database per service, the broker for the events.
fn own_stores(kind: ServiceKind) -> [Option<(&'static str, u16)>; 3] {
    let nats = Some(("nats", 4222));
    match kind {
        ServiceKind::Catalog => [Some(("catalog-postgres", 5432)), None, nats],
        ServiceKind::Orders => [Some(("orders-postgres", 5432)), None, nats],
        ServiceKind::Ratings => [None, Some(("ratings-redis", 6379)), None],
        ServiceKind::Notifications => [None, Some(("notifications-redis", 6379)), nats],
        ServiceKind::Frontend | ServiceKind::Reviews => [None, None, None],
    }
}

/// The shop's stores (`demo-services/k8s/stores.yaml`).
const STORES: [&str; 5] = [
    "catalog-postgres",
    "orders-postgres",
    "ratings-redis",
    "notifications-redis",
    "nats",
];

/// Each store: the stores image at the workspace version, started by
/// `mycel-demo store <kind>` on the port its Service declares opaque TCP,
/// strict (nothing outside the mesh reaches it in plaintext), not as root
/// and not as the proxy's UID.
async fn assert_stores(admin: &Client, stores: &[StatefulSet]) {
    let services = Api::<Service>::namespaced(admin.clone(), SHOP);
    let names: BTreeSet<&str> = stores
        .iter()
        .filter_map(|s| s.metadata.name.as_deref())
        .collect();
    assert_eq!(names, STORES.into_iter().collect(), "the StatefulSets");
    for set in stores {
        let name = set.metadata.name.as_deref().unwrap();
        let spec = set.spec.as_ref().unwrap();
        let template = &spec.template;
        let annotations = template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        assert_eq!(
            annotations.get("mycel.io/mtls-mode").map(String::as_str),
            Some("strict"),
            "{name}"
        );
        let c = &template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some(format!("mycel-demo-stores:{VERSION}").as_str()),
            "{name}"
        );
        let args = c.args.clone().unwrap_or_default();
        assert_eq!(args.first().map(String::as_str), Some("store"), "{name}");
        let uid = c
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .unwrap_or(0);
        assert!(uid != 0 && uid != 1337, "{name} runs as {uid}");
        let service = services.get(name).await.unwrap().spec.unwrap();
        let port = &service.ports.unwrap()[0];
        assert_eq!(port.app_protocol.as_deref(), Some("tcp"), "{name}");
        assert!(
            args.contains(&format!("--listen=0.0.0.0:{}", port.port)),
            "{name}: {args:?}"
        );
    }
}

/// Waits for the trust bundle the controller publishes into shop.
async fn trust_bundle(admin: &Client, mesh: &Mesh) -> String {
    let bundles = Api::<ConfigMap>::namespaced(admin.clone(), SHOP);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(cm) = bundles.get_opt("mycel-trust-bundle").await.unwrap() {
            return cm.data.unwrap()["ca.crt"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no trust bundle published into shop; controller log:\n{}",
            mesh.controller.as_ref().unwrap().log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The gateway for real: the manifest's command line with a token of its
/// ServiceAccount (the projected volume's audience and lifetime) and the
/// trust bundle the controller published into shop. It gets a certificate
/// for its account and is ready with its route to the frontend.
async fn run_gateway(admin: &Client, mesh: &Mesh, gateway: &Pod, dir: &Path) {
    let projection = gateway
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "mycel-token")
        .and_then(|v| {
            v.projected
                .as_ref()?
                .sources
                .as_ref()?
                .first()?
                .service_account_token
                .clone()
        })
        .unwrap();
    let jwt = token(
        admin,
        SHOP,
        "gateway",
        json!({"audiences": [projection.audience.clone().unwrap()],
               "expirationSeconds": projection.expiration_seconds.unwrap()}),
    )
    .await;
    let (token_file, ca_file) = (dir.join("token"), dir.join("ca.crt"));
    std::fs::write(&token_file, jwt).unwrap();
    std::fs::write(&ca_file, trust_bundle(admin, mesh).await).unwrap();
    let ip = next_ip();
    let admin_addr = SocketAddr::from((ip, ADMIN_PORT));
    let overrides = BTreeMap::from([
        ("--controller", mesh.grpc.to_string()),
        ("--ca-root", ca_file.display().to_string()),
        ("--token-file", token_file.display().to_string()),
        ("--listen", SocketAddr::from((ip, GATEWAY_PORT)).to_string()),
        ("--admin", admin_addr.to_string()),
        ("--address", ip.to_string()),
    ]);
    let args = gateway_command(gateway, &overrides);
    let proc = Proc::spawn("gateway", &bin("mycel-proxy"), &args, dir);
    if let Err(e) = http::wait_ok(admin_addr, "/ready", Duration::from_secs(30)).await {
        panic!(
            "the gateway never got ready: {e:#}\n{}\ncontroller log:\n{}",
            proc.log(),
            mesh.controller.as_ref().unwrap().log()
        );
    }
    let get = |path| async move { http::get(admin_addr, "localhost", path).await.unwrap().body };
    let certs = get("/certs").await;
    assert!(certs.contains(&spiffe(SHOP, "gateway")), "{certs}");
    // The Gateway's HTTPRoute to the frontend and to orders, pushed by the
    // controller.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let dump = get("/config_dump").await;
        let routes = serde_json::from_str::<serde_json::Value>(&dump).unwrap_or_default()
            ["snapshot"]["gateway_routes"]["shop-gateway.shop"]
            .to_string();
        if routes.contains("frontend.shop") && routes.contains("orders.shop") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the routes to the frontend and to orders never came: {dump}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_manifests_apply_and_the_webhook_meshes_every_shop_pod_but_the_gateway() {
    if !k8s::available() || !k8s::tools_available() {
        return;
    }
    // What the kind suite looks for: exactly these objects.
    let mut want: BTreeSet<(String, String)> = BTreeSet::new();
    want.insert(("Namespace".into(), SHOP.into()));
    for sa in [
        "frontend",
        "catalog",
        "ratings",
        "orders",
        "notifications",
        "reviews",
        "gateway",
        "issuer",
    ] {
        want.insert(("ServiceAccount".into(), sa.into()));
        want.insert(("Service".into(), sa.into()));
    }
    for d in [
        "frontend",
        "catalog",
        "ratings",
        "orders",
        "notifications",
        "reviews-v1",
        "reviews-v2",
        "gateway",
        "issuer",
    ] {
        want.insert(("Deployment".into(), d.into()));
    }
    // /api/orders behind the issuer's tokens.
    for policy in ["orders-auth", "orders-read"] {
        want.insert(("GatewayPolicy".into(), policy.into()));
    }
    // A database per service and the broker: each a StatefulSet behind
    // its own Service and account, open only to its owners.
    for store in STORES {
        for kind in ["ServiceAccount", "Service", "StatefulSet"] {
            want.insert((kind.into(), store.into()));
        }
        want.insert(("AuthorizationPolicy".into(), format!("{store}-users")));
    }
    want.insert(("AuthorizationPolicy".into(), "notifications-callers".into()));
    // The reviews versions' own Services, the backends of the split.
    for v in ["reviews-v1", "reviews-v2"] {
        want.insert(("Service".into(), v.into()));
    }
    want.insert(("GRPCRoute".into(), "reviews-split".into()));
    want.insert(("Gateway".into(), "shop-gateway".into()));
    want.insert(("HTTPRoute".into(), "shop".into()));
    want.insert(("AuthorizationPolicy".into(), "catalog-callers".into()));
    want.insert(("AuthorizationPolicy".into(), "orders-callers".into()));
    assert_eq!(documents(), want, "the objects of demo-services/k8s/");

    let api = ApiServer::start().await.unwrap();
    let admin = api.client().await.unwrap();
    let kubeconfig = api.kubeconfig.display().to_string();
    let chart = repo().join("helm/mycel").display().to_string();
    let out = tool(
        "helm",
        &[
            "install",
            "mycel",
            &chart,
            "-n",
            SYSTEM,
            "--create-namespace",
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    assert!(out.status.success(), "helm install: {}", text(&out));
    let dir = tempfile::tempdir().unwrap();
    let mesh = chart_controller(&api, &admin, dir.path()).await;

    // As the README says; the namespace's file sorts first.
    let dir_arg = manifests().display().to_string();
    let apply = || {
        tool(
            "kubectl",
            &["apply", "-f", &dir_arg, "--kubeconfig", &kubeconfig],
        )
    };
    let out = apply();
    assert!(out.status.success(), "kubectl apply: {}", text(&out));
    let again = apply();
    let said = text(&again);
    assert!(again.status.success(), "kubectl apply again: {said}");
    assert!(
        said.lines().all(|l| l.ends_with(" unchanged")),
        "applying again changes nothing: {said}"
    );

    let deployments = Api::<Deployment>::namespaced(admin.clone(), SHOP)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(deployments.len(), 9);
    assert_workloads(&deployments);
    assert_app_command_lines(&deployments);
    assert_services(&admin, &deployments).await;
    let stores = Api::<StatefulSet>::namespaced(admin.clone(), SHOP)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_stores(&admin, &stores).await;

    // The Pods a ReplicaSet would create: meshed by the webhook, but for
    // the gateway.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), SHOP);
    let mut created = BTreeMap::new();
    for d in &deployments {
        let pod = create_pod(&pods, &pod_of(d)).await;
        created.insert(name(d).to_string(), pod);
    }
    for set in &stores {
        let name = set.metadata.name.clone().unwrap();
        let template = set.spec.clone().unwrap().template;
        let pod = create_pod(&pods, &pod_of_template(&name, template)).await;
        created.insert(name, pod);
    }
    for (name, pod) in &created {
        if name != "gateway" && name != "issuer" {
            assert_meshed(pod);
        }
    }
    assert_issuer_outside_the_mesh(&admin, &created["issuer"], &deployments).await;
    let frontend = &created["frontend"];
    assert_gateway_set_up_like(&created["gateway"], assert_meshed(frontend), frontend);

    run_gateway(&admin, &mesh, &created["gateway"], dir.path()).await;
}
