//! A real Kubernetes API server for tests: etcd and kube-apiserver built by
//! `tests/k8s/build-binaries.sh`, on 127.0.0.1, with a CA, serving and
//! admin certificates and a service-account signing key made here. Ready in
//! a few seconds; everything stops when the handle drops.
//!
//! There is no kube-controller-manager: no `default` ServiceAccount appears
//! by itself, Deployments create no Pods and namespace deletion never
//! finishes. Tests create what they need and use namespaces of their own.
//! A test that needs garbage collection starts the one controller that does
//! it ([`ApiServer::start_garbage_collector`]).

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};

use crate::process::Proc;
use crate::skip;

/// Kubernetes version the binaries are built for (tests/k8s/build-binaries.sh).
pub const K8S_VERSION: &str = "1.35.4";

/// Where the binaries are: `MYCEL_K8S_BIN`, else the build script's cache.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MYCEL_K8S_BIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("MYCEL_K8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/mycel/k8s")
        });
    cache.join(format!("v{K8S_VERSION}")).join("bin")
}

/// Whether the API-server tier can run here; reports the skip if not.
pub fn available() -> bool {
    let dir = bin_dir();
    let missing: Vec<&str> = ["etcd", "kube-apiserver"]
        .into_iter()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    skip::require(
        &format!(
            "{} missing in {} (tests/k8s/build-binaries.sh builds them; tests/run.sh runs it when Go is installed)",
            missing.join(", "),
            dir.display()
        ),
        missing.is_empty(),
    )
}

/// Whether kube-controller-manager is there too (for garbage collection).
pub fn controller_manager_available() -> bool {
    let dir = bin_dir();
    skip::require(
        &format!(
            "kube-controller-manager missing in {} (tests/k8s/build-binaries.sh builds it)",
            dir.display()
        ),
        dir.join("kube-controller-manager").is_file(),
    )
}

/// Whether helm and kubectl are there too.
pub fn tools_available() -> bool {
    let dir = bin_dir();
    skip::require(
        &format!("helm and kubectl missing in {}", dir.display()),
        dir.join("helm").is_file() && dir.join("kubectl").is_file(),
    )
}

/// A port free on `ip` now. On loopback it comes from below the kernel's
/// ephemeral range ([`crate::ports`]), where no outgoing connection of a
/// test can take it before the process binds it.
fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    if ip.is_loopback() {
        return Ok(crate::ports::free_block(1));
    }
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// The certificates and keys of one API server.
struct Pki {
    ca_pem: String,
    serving: (String, String),
    admin: (String, String),
    sa_key_pem: String,
    sa_pub_pem: String,
}

fn pki(ip: Ipv4Addr) -> anyhow::Result<Pki> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "mycel-test-kubernetes-ca");
    let ca_cert = ca.self_signed(&ca_key)?;

    let leaf = |cn: &str, org: Option<&str>, sans: Vec<SanType>, server: bool| {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        if let Some(o) = org {
            p.distinguished_name.push(DnType::OrganizationName, o);
        }
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = p.signed_by(&key, &ca_cert, &ca_key)?;
        anyhow::Ok((cert.pem(), key.serialize_pem()))
    };
    let serving = leaf(
        "kube-apiserver",
        None,
        vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V4(ip)),
            SanType::DnsName("localhost".try_into()?),
            SanType::DnsName("kubernetes.default.svc".try_into()?),
        ],
        true,
    )?;
    let admin = leaf(
        "mycel-test-admin",
        Some("system:masters"),
        Vec::new(),
        false,
    )?;
    let sa = KeyPair::generate()?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        serving,
        admin,
        sa_key_pem: sa.serialize_pem(),
        sa_pub_pem: sa.public_key_pem(),
    })
}

/// How many times [`ApiServer::start_at`] tries before it fails.
const START_ATTEMPTS: u32 = 3;

/// Why one start of the pair failed.
enum Start {
    /// etcd or kube-apiserver exited before the API server was ready.
    Exited(anyhow::Error),
    /// Anything else: files, certificates, a server that never got ready.
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Start {
    fn from(e: E) -> Start {
        Start::Failed(e.into())
    }
}

/// A running etcd + kube-apiserver pair.
pub struct ApiServer {
    pub url: String,
    /// A kubeconfig with cluster-admin rights (`system:masters`).
    pub kubeconfig: PathBuf,
    /// The cluster CA (PEM), for webhooks' and clients' trust.
    pub ca_pem: String,
    dir: tempfile::TempDir,
    apiserver: Proc,
    etcd: Proc,
}

impl ApiServer {
    /// Starts both processes on 127.0.0.1 and waits until the API server
    /// is ready.
    pub async fn start() -> anyhow::Result<ApiServer> {
        Self::start_at(Ipv4Addr::LOCALHOST).await
    }

    /// Like [`Self::start`], with the API server on `ip` (an address of
    /// this network namespace; etcd stays on 127.0.0.1).
    ///
    /// A start whose etcd or kube-apiserver exits before the API server is
    /// ready is tried again, on new ports, up to [`START_ATTEMPTS`] times:
    /// a port found free can be taken by another process before etcd binds
    /// it, and on a loaded machine a post-start hook of kube-apiserver can
    /// time out, which ends the process. What each failed attempt logged is
    /// printed, and the last one is the error.
    pub async fn start_at(ip: Ipv4Addr) -> anyhow::Result<ApiServer> {
        Self::start_trying(ip, None).await
    }

    /// [`Self::start_at`], whose first attempt gives etcd `etcd_port` for
    /// its clients rather than a port found free.
    async fn start_trying(ip: Ipv4Addr, mut etcd_port: Option<u16>) -> anyhow::Result<ApiServer> {
        let mut attempt = 1;
        loop {
            let port = match etcd_port.take() {
                Some(port) => port,
                None => free_port(Ipv4Addr::LOCALHOST)?,
            };
            match Self::start_once(ip, port).await {
                Ok(server) => return Ok(server),
                Err(Start::Exited(why)) if attempt < START_ATTEMPTS => {
                    eprintln!("API server start {attempt} of {START_ATTEMPTS} failed, trying again on new ports: {why:#}");
                    attempt += 1;
                }
                Err(Start::Exited(why) | Start::Failed(why)) => return Err(why),
            }
        }
    }

    async fn start_once(ip: Ipv4Addr, client_port: u16) -> Result<ApiServer, Start> {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("mycel-k8s-").tempdir()?;
        let path = |name: &str| dir.path().join(name);
        let pki = pki(ip)?;
        for (name, text) in [
            ("ca.crt", &pki.ca_pem),
            ("serving.crt", &pki.serving.0),
            ("serving.key", &pki.serving.1),
            ("sa.key", &pki.sa_key_pem),
            ("sa.pub", &pki.sa_pub_pem),
        ] {
            std::fs::write(path(name), text)?;
        }

        let peer_port = free_port(Ipv4Addr::LOCALHOST)?;
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<String> = [
            "--name=default".to_string(),
            format!("--data-dir={}", path("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--log-level=warn".to_string(),
        ]
        .into();
        let etcd = Proc::spawn("etcd", &bin.join("etcd"), &etcd_args, dir.path());

        let port = free_port(ip)?;
        let p = |name: &str| path(name).display().to_string();
        let args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={ip}"),
            format!("--advertise-address={ip}"),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", p("apiserver-certs")),
            format!("--tls-cert-file={}", p("serving.crt")),
            format!("--tls-private-key-file={}", p("serving.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--authorization-mode=Node,RBAC".into(),
            "--service-cluster-ip-range=198.19.0.0/16".into(),
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
            "--v=1".into(),
        ];
        let apiserver = Proc::spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &args,
            dir.path(),
        );
        let url = format!("https://{ip}:{port}");
        let kubeconfig = path("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text(&url, &pki))?;
        let mut server = ApiServer {
            url,
            kubeconfig,
            ca_pem: pki.ca_pem,
            dir,
            apiserver,
            etcd,
        };
        server.wait_ready(Duration::from_secs(60)).await?;
        Ok(server)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), Start> {
        let client = self.client().await?;
        let deadline = Instant::now() + limit;
        loop {
            // First: an etcd that could not bind its port exits at once,
            // while kube-apiserver waits 20 s for it before it gives up.
            for (name, status) in [
                ("kube-apiserver", self.apiserver.exit_status()),
                ("etcd", self.etcd.exit_status()),
            ] {
                if let Some(status) = status {
                    return Err(Start::Exited(anyhow::anyhow!(
                        "{name} exited early with {status}{}",
                        self.logs()
                    )));
                }
            }
            let req = http::Request::get("/readyz").body(Vec::new())?;
            let answer = tokio::time::timeout(Duration::from_secs(2), client.request_text(req));
            match answer.await {
                Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
                _ if Instant::now() > deadline => {
                    return Err(Start::Failed(anyhow::anyhow!(
                        "kube-apiserver not ready within {limit:?}{}",
                        self.logs()
                    )))
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The ends of both logs, where a process says why it stopped.
    fn logs(&self) -> String {
        format!(
            "\n--- kube-apiserver log (end):\n{}\n--- etcd log (end):\n{}",
            tail(&self.apiserver.log()),
            tail(&self.etcd.log())
        )
    }

    /// A client with cluster-admin rights.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .context("reading the test kubeconfig")?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A kubeconfig that authenticates with a bearer token (e.g. a
    /// ServiceAccount's, to test RBAC as that account).
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(format!("kubeconfig-{name}"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {name}\ncurrent-context: test\n",
            self.url,
            b64(&self.ca_pem),
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// A kubeconfig for a new ServiceAccount `account` in the existing
    /// `namespace`, which holds no rights until a test grants some.
    pub async fn account_kubeconfig(
        &self,
        namespace: &str,
        account: &str,
    ) -> anyhow::Result<PathBuf> {
        use k8s_openapi::api::core::v1::ServiceAccount;
        let accounts: kube::Api<ServiceAccount> =
            kube::Api::namespaced(self.client().await?, namespace);
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": account}}))?;
        accounts.create(&Default::default(), &sa).await?;
        let req = serde_json::from_value(serde_json::json!({"spec": {"expirationSeconds": 3600}}))?;
        let token = accounts
            .create_token_request(account, &Default::default(), &req)
            .await?
            .status
            .context("TokenRequest answered without a status")?
            .token;
        self.token_kubeconfig(account, &token)
    }

    /// A service-account token for `namespace/account` (whose uid is
    /// `uid`) signed with the API server's own key but already expired: what
    /// a proxy holding a stale token presents.
    pub fn expired_token(
        &self,
        namespace: &str,
        account: &str,
        uid: &str,
    ) -> anyhow::Result<String> {
        let key = std::fs::read(self.dir.path().join("sa.key"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let claims = serde_json::json!({
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": format!("system:serviceaccount:{namespace}:{account}"),
            "aud": ["mycel"],
            "iat": now - 7200,
            "nbf": now - 7200,
            "exp": now - 3600,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": account, "uid": uid},
            },
        });
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&key)?;
        Ok(jsonwebtoken::encode(&header, &claims, &key)?)
    }

    /// The API server's log so far.
    pub fn log(&self) -> String {
        self.apiserver.log()
    }

    /// kube-controller-manager running its garbage collector and nothing
    /// else (no Pods, no tokens, no namespace cleanup), as cluster admin,
    /// serving no port: what deletes an object once its owners are gone.
    /// It stops when the returned process drops.
    pub fn start_garbage_collector(&self) -> Proc {
        let args: Vec<String> = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--controllers=garbage-collector-controller".into(),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--v=1".into(),
        ];
        Proc::spawn(
            "kube-controller-manager",
            &bin_dir().join("kube-controller-manager"),
            &args,
            self.dir.path(),
        )
    }
}

/// An API server that accepts connections and never answers, and a
/// kubeconfig for it: a hung control plane as a client sees it. Needs no
/// Kubernetes binaries; stops when dropped.
pub struct SilentApiServer {
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl SilentApiServer {
    pub async fn start() -> anyhow::Result<SilentApiServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        // Holds every connection open and says nothing.
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: silent\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: silent\n    user: u\ncurrent-context: c\n"
            ),
        )?;
        Ok(SilentApiServer {
            kubeconfig,
            _dir: dir,
            task,
        })
    }
}

impl Drop for SilentApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn kubeconfig_text(url: &str, pki: &Pki) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\n",
        b64(&pki.ca_pem),
        b64(&pki.admin.0),
        b64(&pki.admin.1),
    )
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CI flake of stop 30: a port found free was someone else's by
    /// the time etcd bound it, etcd exited, and the test failed before it
    /// began. Here the port is surely taken on the first attempt.
    #[tokio::test]
    async fn an_etcd_port_taken_before_etcd_binds_it_costs_one_attempt_not_the_test() {
        if !available() {
            return;
        }
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = taken.local_addr().expect("address").port();
        let server = ApiServer::start_trying(Ipv4Addr::LOCALHOST, Some(port))
            .await
            .expect("the second attempt starts on new ports");
        let client = server.client().await.expect("client");
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("request");
        let body = client.request_text(req).await.expect("readyz");
        assert_eq!(body.trim(), "ok");
        drop(taken);
    }
}
