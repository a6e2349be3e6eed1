//! The gateway scenario: HTTPS fronts of the backend's HTTP/1.1 port, each
//! terminating TLS 1.3 with a certificate for [`GATEWAY_HOST`] from a CA
//! the harness makes (one per configuration), ALPN h2 or http/1.1 as the
//! client asks:
//!
//! * `direct-tls`: the backend itself behind TLS, in the harness process
//!   (the baseline: what TLS costs without a proxy);
//! * `nginx-tls`: nginx terminating TLS, `proxy_pass` over a keep-alive
//!   pool to the backend;
//! * `gateway-tls`: `mycel-proxy --mode gateway` following a Gateway whose
//!   HTTPRoute sends every request to the backend's Service; as always in
//!   Mycel, the gateway reaches the Service over the mesh (HTTP/2 over
//!   mTLS to the backend's sidecar, which calls the backend);
//! * `gateway-tls-jwt`: the same with a GatewayPolicy verifying an ES256
//!   JWT on every request (JWKS from a file);
//! * `gateway-tls-jwt-ratelimit`: the same policy plus a local rate limit
//!   set far above any rate measured ([`RATE_LIMIT`]), so its cost is
//!   measured, not its refusals.
//!
//! The load generator sends the same signed token on every request to
//! every configuration (so each carries the same bytes); only the JWT
//! configurations check it. Before measuring, [`check`] asks each front
//! with and without the token and records what it enforced.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use mycel_test_support::jwt::{jwks, Signer};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::mycel::{self, proxy_args, wait_ok, wait_registered, Bins, Controller, ProxyArgs};
use super::{free_port, start_err, Setup, SetupError, Watched};
use crate::backend::{self, BackendAddrs};
use crate::certs::{write_web_pki, WebPki, GATEWAY_HOST};
use crate::child::ChildProc;
use crate::client::{Conn, Proto, Target, TlsTarget};

/// The scenario's configurations, in their default order.
pub const CONFIGS: [&str; 5] = [
    DIRECT_TLS,
    "nginx-tls",
    "gateway-tls",
    "gateway-tls-jwt",
    "gateway-tls-jwt-ratelimit",
];

/// The baseline the others' added latency is measured against.
pub const DIRECT_TLS: &str = "direct-tls";

/// The Mycel configuration without a policy: what JWT and the rate limit
/// add is measured against it.
pub const GATEWAY_PLAIN: &str = "gateway-tls";

/// Whether `name` is one of this scenario's configurations.
pub fn is_config(name: &str) -> bool {
    CONFIGS.contains(&name)
}

/// The JWT every request carries: its issuer, audience and the claim the
/// policy requires.
const ISSUER: &str = "https://auth.bench.test";
const AUDIENCE: &str = "shop-api";
const SCOPE: &str = "shop:read";
/// The token is signed once at setup and must outlive any run.
const TOKEN_LIFETIME_S: u64 = 24 * 3600;

/// The local rate limit of `gateway-tls-jwt-ratelimit`: requests per
/// second and burst, far above the closed-loop rates this harness reaches
/// on loopback, so no request is refused (a refusal would count as an
/// error and fail the run's checks).
pub const RATE_LIMIT: u32 = 1_000_000;

/// The Gateway the gateway proxy follows and the policy's name.
const GATEWAY_NAME: &str = "bench-gateway";
const POLICY_NAME: &str = "shop-api";

/// What the Mycel gateway configurations add to plain routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    None,
    Jwt,
    JwtRateLimit,
}

impl Policy {
    fn of(config: &str) -> Option<Policy> {
        match config {
            "gateway-tls" => Some(Policy::None),
            "gateway-tls-jwt" => Some(Policy::Jwt),
            "gateway-tls-jwt-ratelimit" => Some(Policy::JwtRateLimit),
            _ => None,
        }
    }
}

/// Whether `config` verifies the token (a request without one is refused).
pub fn checks_jwt(config: &str) -> bool {
    matches!(Policy::of(config), Some(Policy::Jwt | Policy::JwtRateLimit))
}

/// The certificate, the JWT and how the client reaches a front: made
/// fresh for each configuration in its own directory.
struct Front {
    pki: WebPki,
    jwks: std::path::PathBuf,
    token: String,
    tls: TlsTarget,
}

impl Front {
    fn new(dir: &Path) -> Result<Front, SetupError> {
        let pki = write_web_pki(dir)?;
        let signer = Signer::new("bench-k1");
        let jwks_path = dir.join("jwks.json");
        std::fs::write(&jwks_path, jwks(&[&signer]).to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let token = signer.sign(&json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "bench-client", "scope": SCOPE,
            "iat": now, "exp": now + TOKEN_LIFETIME_S,
        }));
        let tls = TlsTarget::new(&pki.ca_der, GATEWAY_HOST)
            .map_err(|e| start_err("TLS client for the gateway scenario", e))?;
        Ok(Front {
            pki,
            jwks: jwks_path,
            token,
            tls,
        })
    }

    fn bearer(&self) -> Result<(http::HeaderName, http::HeaderValue), SetupError> {
        let value = http::HeaderValue::from_str(&format!("Bearer {}", self.token))
            .map_err(|e| start_err("authorization header", e))?;
        Ok((http::header::AUTHORIZATION, value))
    }

    /// HTTP/1.1 and HTTP/2 over TLS to `addr`, host [`GATEWAY_HOST`], the
    /// token on every request.
    fn targets(&self, addr: SocketAddr) -> Result<BTreeMap<Proto, Target>, SetupError> {
        let target = Target {
            addr,
            authority: GATEWAY_HOST.into(),
            tls: Some(self.tls.clone()),
            headers: vec![self.bearer()?],
            ..Target::plain(addr, GATEWAY_HOST)
        };
        Ok(BTreeMap::from([
            (Proto::Http1, target.clone()),
            (Proto::H2, target),
        ]))
    }
}

fn setup(
    name: &'static str,
    targets: BTreeMap<Proto, Target>,
    dir: tempfile::TempDir,
    notes: Vec<String>,
) -> Setup {
    Setup {
        name,
        targets,
        mesh_ports: Vec::new(),
        watched: Vec::new(),
        tcp: None,
        handshake: None,
        notes,
        children: Vec::new(),
        admins: Vec::new(),
        collector: None,
        tasks: tokio::task::JoinSet::new(),
        dir,
    }
}

/// Starts the configuration `name` (one of [`CONFIGS`]).
pub async fn start(
    name: &str,
    bins: Option<&Path>,
    backend: &BackendAddrs,
) -> Result<Setup, SetupError> {
    match name {
        DIRECT_TLS => start_direct().await,
        "nginx-tls" => start_nginx(backend).await,
        other => match Policy::of(other) {
            Some(policy) => start_gateway(&Bins::find(bins)?, backend, policy).await,
            None => Err(SetupError::Missing(format!(
                "{other:?} is not a gateway scenario configuration ({})",
                CONFIGS.join(", ")
            ))),
        },
    }
}

async fn start_direct() -> Result<Setup, SetupError> {
    let dir = tempfile::tempdir()?;
    let front = Front::new(dir.path())?;
    let config = backend::tls_config(&front.pki.chain_der, &front.pki.key_der)
        .map_err(|e| start_err("direct-tls server", e))?;
    let mut s = setup(DIRECT_TLS, BTreeMap::new(), dir, Vec::new());
    let addr = backend::serve_tls(config, &mut s.tasks).await?;
    s.targets = front.targets(addr)?;
    s.notes.push(
        "the backend terminates TLS itself (rustls, in the harness process, same runtime as the load generator): the baseline".into(),
    );
    Ok(s)
}

async fn start_nginx(backend: &BackendAddrs) -> Result<Setup, SetupError> {
    let dir = tempfile::tempdir()?;
    let front = Front::new(dir.path())?;
    let port = free_port()?;
    let child = super::nginx::start_tls_front(dir.path(), &front.pki, port.port(), backend).await?;
    let mut s = setup(
        "nginx-tls",
        front.targets(port)?,
        dir,
        vec!["nginx terminates TLS 1.3 (worker_processes auto: 2), HTTP/1.1 to the backend over a keep-alive pool of 128; does not look at the token".into()],
    );
    s.watched.push(Watched {
        role: "nginx",
        pid: child.pid().unwrap_or(0),
    });
    s.children.push(child);
    Ok(s)
}

/// The backend Service (HTTP port only), the Gateway, its HTTPRoute (one
/// rule, every path, to the backend) and, for `policy`, the GatewayPolicy
/// the rule names.
fn mesh_yaml(backend: &BackendAddrs, policy: Policy, jwks: &Path) -> String {
    let ns = mycel::NAMESPACE;
    let port = mycel::HTTP_PORT;
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: backend, namespace: {ns}}}\nspec:\n  selector: {{app: backend}}\n  ports:\n  - {{name: http, port: {port}, targetPort: {}, appProtocol: http}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {GATEWAY_NAME}, namespace: {ns}}}\nspec:\n  gatewayClassName: mycel\n  listeners: [{{name: web, port: 443, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: shop, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: {GATEWAY_NAME}}}]\n  hostnames: [{GATEWAY_HOST}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n",
        backend.http1.port()
    );
    if policy != Policy::None {
        out.push_str(&format!(
            "    filters: [{{type: ExtensionRef, extensionRef: {{group: mycel.io, kind: GatewayPolicy, name: {POLICY_NAME}}}}}]\n"
        ));
    }
    out.push_str(&format!(
        "    backendRefs: [{{name: backend, port: {port}}}]\n"
    ));
    if policy != Policy::None {
        out.push_str(&format!(
            "---\napiVersion: mycel.io/v1alpha1\nkind: GatewayPolicy\nmetadata: {{name: {POLICY_NAME}, namespace: {ns}}}\nspec:\n  jwt:\n    issuer: {ISSUER}\n    audiences: [{AUDIENCE}]\n    jwks: {{file: {}}}\n    algorithms: [ES256]\n    requiredClaims: [{{name: scope, value: \"{SCOPE}\"}}]\n    forwardClaims: [{{claim: sub, header: x-user-id}}]\n",
            jwks.display()
        ));
    }
    if policy == Policy::JwtRateLimit {
        out.push_str(&format!(
            "  rateLimit: {{requests: {RATE_LIMIT}, per: 1s, burst: {RATE_LIMIT}, key: ClientIP, scope: Local}}\n"
        ));
    }
    out
}

/// Controller, the backend's sidecar and the gateway proxy with an HTTPS
/// listener (and no plaintext one).
async fn start_gateway(
    bins: &Bins,
    backend: &BackendAddrs,
    policy: Policy,
) -> Result<Setup, SetupError> {
    let name = match policy {
        Policy::None => "gateway-tls",
        Policy::Jwt => "gateway-tls-jwt",
        Policy::JwtRateLimit => "gateway-tls-jwt-ratelimit",
    };
    let proxy_env: [(&str, &str); 1] = [("MYCEL_LOG", "warn")];
    let dir = tempfile::tempdir()?;
    let front = Front::new(dir.path())?;
    let ctl = Controller::start(bins, dir.path(), &mesh_yaml(backend, policy, &front.jwks)).await?;
    let mut tokens = Vec::new();
    for (sa, labels) in [("backend", &["app=backend"][..]), ("gateway", &[][..])] {
        let path = dir.path().join(format!("{sa}.token"));
        std::fs::write(&path, ctl.token_with_labels(bins, sa, labels)?)?;
        tokens.push(path);
    }
    let (sidecar_inbound, sidecar_admin) = (free_port()?, free_port()?);
    let sidecar = ChildProc::spawn(
        "mycel-backend-sidecar",
        &bins.proxy,
        &proxy_args(
            &ctl,
            ProxyArgs {
                workload: "backend-0",
                sa: "backend",
                token_file: &tokens[0],
                admin: sidecar_admin,
                inbound: sidecar_inbound,
                extra: vec![
                    "--label".into(),
                    "app=backend".into(),
                    "--app-port".into(),
                    format!("http:{}:http", backend.http1.port()),
                ],
            },
        ),
        &proxy_env,
        dir.path(),
    )?;
    let (https, gateway_admin) = (free_port()?, free_port()?);
    let gateway_args: Vec<String> = [
        "--mode",
        "gateway",
        "--gateway",
        GATEWAY_NAME,
        "--controller",
        &ctl.grpc.to_string(),
        "--ca-root",
        &ctl.ca_root().display().to_string(),
        "--token-file",
        &tokens[1].display().to_string(),
        "--workload",
        "gateway-0",
        "--namespace",
        mycel::NAMESPACE,
        "--service-account",
        "gateway",
        "--admin",
        &gateway_admin.to_string(),
        "--address",
        "127.0.0.1",
        "--tls-listen",
        &https.to_string(),
        "--tls-cert",
        &format!("{},{}", front.pki.cert.display(), front.pki.key.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let gateway = ChildProc::spawn(
        "mycel-gateway",
        &bins.proxy,
        &gateway_args,
        &proxy_env,
        dir.path(),
    )?;
    let mut children = vec![sidecar, gateway];
    wait_ok(&mut children[0], sidecar_admin, "/ready").await?;
    wait_ok(&mut children[1], gateway_admin, "/ready").await?;
    wait_registered(&ctl, "backend-0").await?;
    let watched = vec![
        Watched {
            role: "gateway",
            pid: children[1].pid().unwrap_or(0),
        },
        Watched {
            role: "backend-sidecar",
            pid: children[0].pid().unwrap_or(0),
        },
    ];
    // The controller is not on the data path and is not measured.
    children.push(ctl.proc);
    let mut notes = vec![
        "mycel-proxy --mode gateway (worker threads: its default, one per core: 2) following a Gateway, HTTPRoute PathPrefix / to the backend Service; gateway → HTTP/2 over mTLS → the backend's sidecar (1 worker thread) → backend HTTP/1.1".into(),
    ];
    match policy {
        Policy::None => notes.push("no GatewayPolicy: routing only".into()),
        Policy::Jwt => notes.push(format!(
            "GatewayPolicy jwt: ES256 from a JWKS file, issuer, audience, required claim scope={SCOPE}, sub forwarded as x-user-id"
        )),
        Policy::JwtRateLimit => notes.push(format!(
            "GatewayPolicy jwt as gateway-tls-jwt plus rateLimit {RATE_LIMIT} requests per 1s, burst {RATE_LIMIT}, key ClientIP, scope Local"
        )),
    }
    let mut s = setup(name, front.targets(https)?, dir, notes);
    s.mesh_ports = vec![sidecar_inbound];
    s.watched = watched;
    s.children = children;
    s.admins = vec![("gateway", gateway_admin)];
    Ok(s)
}

/// What a front answered a request with and one without the token, over
/// HTTP/1.1 through its TLS listener; `expected` is false when it did not
/// enforce what its configuration says (then the run reports a problem).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FrontCheck {
    pub with_token: String,
    pub without_token: String,
    /// `ratelimit-limit` / `ratelimit-policy` of the answer with the token.
    pub rate_limit_headers: Option<String>,
    pub expected: bool,
}

fn header(h: &http::HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn describe(r: &Result<(u16, http::HeaderMap), crate::client::CallError>) -> String {
    match r {
        Ok((status, h)) => match header(h, "www-authenticate") {
            Some(challenge) => format!("{status} ({challenge})"),
            None => status.to_string(),
        },
        Err(e) => format!("failed: {e}"),
    }
}

/// Asks the front of `setup` once with its token and once without.
/// JWT configurations must answer 401 without it; the rate-limited one
/// must label its answers with the limit; every one must answer 200 with
/// the token.
pub async fn check(setup: &Setup) -> FrontCheck {
    let Some(target) = setup.targets.get(&Proto::Http1) else {
        return FrontCheck::default();
    };
    let mut conn = match Conn::connect(Proto::Http1, target).await {
        Ok(c) => c,
        Err(e) => {
            return FrontCheck {
                with_token: format!("failed: {e}"),
                ..FrontCheck::default()
            }
        }
    };
    let with = conn.probe(target, target.headers.clone()).await;
    // The answer without a token may close the connection: a new one.
    let without = match Conn::connect(Proto::Http1, target).await {
        Ok(mut c) => c.probe(target, Vec::new()).await,
        Err(e) => Err(e),
    };
    let rate_limit_headers = with.as_ref().ok().and_then(|(_, h)| {
        let limit = header(h, "ratelimit-limit")?;
        Some(match header(h, "ratelimit-policy") {
            Some(p) => format!("ratelimit-limit: {limit}, ratelimit-policy: {p}"),
            None => format!("ratelimit-limit: {limit}"),
        })
    });
    let status = |r: &Result<(u16, http::HeaderMap), _>| r.as_ref().map(|(s, _)| *s).ok();
    let want_without = if checks_jwt(setup.name) { 401 } else { 200 };
    let want_limit = Policy::of(setup.name) == Some(Policy::JwtRateLimit);
    FrontCheck {
        expected: status(&with) == Some(200)
            && status(&without) == Some(want_without)
            && rate_limit_headers.is_some() == want_limit,
        with_token: describe(&with),
        without_token: describe(&without),
        rate_limit_headers,
    }
}

/// `mycel_gateway_policy_decisions_total` of one gateway, summed by
/// decision (`allowed`, `rate_limited`, `unauthenticated`, ...).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PolicyDecisions {
    pub config: String,
    pub decisions: BTreeMap<String, u64>,
    /// Requests the harness sent to the configuration, warm-ups and the
    /// setup's checks included.
    pub requests_sent: u64,
}

/// The decision counts of a Prometheus text exposition.
pub fn parse_decisions(metrics: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("mycel_gateway_policy_decisions_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let decision = labels.split(',').find_map(|l| {
            l.trim()
                .strip_prefix("decision=\"")
                .and_then(|v| v.strip_suffix('"'))
        });
        let value = value.split_whitespace().next().and_then(|v| {
            v.parse::<u64>()
                .ok()
                .or_else(|| v.parse::<f64>().ok().map(|f| f as u64))
        });
        // Counters that stayed at zero say nothing about this run.
        if let (Some(d), Some(v @ 1..)) = (decision, value) {
            *out.entry(d.to_string()).or_default() += v;
        }
    }
    out
}

/// Reads the gateway's decision counters from its admin port.
pub async fn read_decisions(admin: SocketAddr) -> Result<BTreeMap<String, u64>, String> {
    match crate::probe::http_get(admin, "localhost", "/metrics").await {
        Ok((200, body)) => Ok(parse_decisions(&body)),
        Ok((status, _)) => Err(format!("{admin}/metrics: status {status}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_summed_by_kind() {
        let text = "# TYPE mycel_gateway_policy_decisions counter\nmycel_gateway_policy_decisions_total{policy=\"bench/shop-api\",decision=\"allowed\"} 1200\nmycel_gateway_policy_decisions_total{policy=\"bench/other\",decision=\"allowed\"} 3\nmycel_gateway_policy_decisions_total{policy=\"bench/shop-api\",decision=\"unauthenticated\"} 1\nmycel_gateway_policy_decisions_total{policy=\"bench/shop-api\",decision=\"rate_limited\"} 0\nmycel_gateway_policy_decisions_created{policy=\"x\",decision=\"allowed\"} 17\n# EOF\n";
        let d = parse_decisions(text);
        assert_eq!(d.get("allowed"), Some(&1203));
        assert_eq!(d.get("unauthenticated"), Some(&1));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn mesh_yaml_names_the_policy_only_where_one_is_measured() {
        let addrs = BackendAddrs {
            http1: SocketAddr::from(([127, 0, 0, 1], 1001)),
            h2c: SocketAddr::from(([127, 0, 0, 1], 2)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 3)),
            tcp: SocketAddr::from(([127, 0, 0, 1], 4)),
        };
        let jwks = Path::new("/tmp/jwks.json");
        let plain = mesh_yaml(&addrs, Policy::None, jwks);
        assert!(!plain.contains("GatewayPolicy"), "{plain}");
        assert!(plain.contains("targetPort: 1001"), "{plain}");
        let jwt = mesh_yaml(&addrs, Policy::Jwt, jwks);
        assert!(
            jwt.contains("kind: GatewayPolicy") && jwt.contains("jwks: {file: /tmp/jwks.json}")
        );
        assert!(!jwt.contains("rateLimit"), "{jwt}");
        let limited = mesh_yaml(&addrs, Policy::JwtRateLimit, jwks);
        assert!(
            limited.contains("rateLimit: {requests: 1000000, per: 1s, burst: 1000000"),
            "{limited}"
        );
        assert!(checks_jwt("gateway-tls-jwt") && !checks_jwt("gateway-tls"));
        assert!(!checks_jwt("nginx-tls"));
    }
}
