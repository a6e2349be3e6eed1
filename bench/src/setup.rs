//! The configurations under test. Each one takes the running backend and
//! gives the load generator a first hop per protocol, plus what to watch:
//! proxy processes, mesh-side ports, a TCP tunnel and a handshake target.

pub mod collector;
pub mod gateway;
pub mod haproxy;
pub mod mycel;
pub mod nginx;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::backend::BackendAddrs;
use crate::child::ChildProc;
use crate::client::{Conn, Proto, Target};
use crate::probe::ClientCert;

/// A proxy process whose CPU and memory are reported.
#[derive(Clone, Debug)]
pub struct Watched {
    /// "client-side" or "server-side".
    pub role: &'static str,
    pub pid: u32,
}

/// Where to run the TLS handshake test.
#[derive(Clone, Debug)]
pub struct HandshakeTarget {
    pub addr: SocketAddr,
    pub server_name: String,
    pub cert: ClientCert,
    pub alpn: Vec<Vec<u8>>,
}

pub struct Setup {
    pub name: &'static str,
    pub targets: BTreeMap<Proto, Target>,
    /// Mesh-side (mTLS) ports, checked to refuse plaintext.
    pub mesh_ports: Vec<SocketAddr>,
    pub watched: Vec<Watched>,
    /// Loopback port tunnelled to the backend's TCP sink.
    pub tcp: Option<SocketAddr>,
    pub handshake: Option<HandshakeTarget>,
    /// Notes for the report (what differs from the other configurations).
    pub notes: Vec<String>,
    /// Child processes, stopped when the setup is dropped.
    pub children: Vec<ChildProc>,
    /// Admin ports serving `/metrics`, by role (the Mycel proxies).
    pub admins: Vec<(&'static str, SocketAddr)>,
    /// The OTLP collector the proxies export to (tracing configurations);
    /// stopped after the children.
    pub collector: Option<collector::Collector>,
    /// In-process servers of the configuration (`direct-tls`), stopped
    /// when the setup is dropped.
    pub tasks: tokio::task::JoinSet<()>,
    /// Config files, certificates and logs.
    pub dir: tempfile::TempDir,
}

/// Everything that differs between the nginx and HAProxy pairs; the rest of
/// their [`Setup`] is built the same way by [`proxy_pair`].
pub struct PairSpec {
    pub name: &'static str,
    /// Client-side ports for HTTP/1.1, h2 and gRPC.
    pub fronts: [u16; 3],
    /// Mesh-side ports; the first one takes the handshake test.
    pub mesh: Vec<u16>,
    pub server_name: &'static str,
    pub cert: ClientCert,
    pub handshake_alpn: &'static [u8],
    pub note: String,
}

/// A two-process proxy pair started as `[server side, client side]`.
pub fn proxy_pair(spec: PairSpec, children: Vec<ChildProc>, dir: tempfile::TempDir) -> Setup {
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let pid = |i: usize| children.get(i).and_then(ChildProc::pid).unwrap_or(0);
    let watched = vec![
        Watched {
            role: "client-side",
            pid: pid(1),
        },
        Watched {
            role: "server-side",
            pid: pid(0),
        },
    ];
    let target = |port: u16| Target::plain(loopback(port), spec.server_name);
    let [h1, h2, grpc] = spec.fronts;
    Setup {
        name: spec.name,
        targets: BTreeMap::from([
            (Proto::Http1, target(h1)),
            (Proto::H2, target(h2)),
            (Proto::Grpc, target(grpc)),
        ]),
        mesh_ports: spec.mesh.iter().map(|&p| loopback(p)).collect(),
        watched,
        tcp: None,
        handshake: spec.mesh.first().map(|&p| HandshakeTarget {
            addr: loopback(p),
            server_name: spec.server_name.into(),
            cert: spec.cert,
            alpn: vec![spec.handshake_alpn.to_vec()],
        }),
        notes: vec![spec.note],
        children,
        admins: Vec::new(),
        collector: None,
        tasks: tokio::task::JoinSet::new(),
        dir,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Missing(String),
    #[error("{what}: {message}")]
    Start { what: String, message: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Child(#[from] crate::child::ChildError),
    #[error(transparent)]
    Cert(#[from] crate::certs::CertError),
}

pub fn start_err(what: impl Into<String>, message: impl std::fmt::Display) -> SetupError {
    SetupError::Start {
        what: what.into(),
        message: message.to_string(),
    }
}

/// One side of a config-file proxy pair (nginx, HAProxy): writes `conf`
/// to `<dir>/<tool>-<side>.<ext>`, has the program check it
/// (`check_args` + path), then starts it (`run_args` + path).
pub struct ConfiguredProxy<'a> {
    pub tool: &'a str,
    pub program: &'a std::path::Path,
    pub ext: &'a str,
    pub check_args: &'a [&'a str],
    pub run_args: &'a [&'a str],
}

impl ConfiguredProxy<'_> {
    pub fn start(
        &self,
        side: &str,
        conf: String,
        dir: &std::path::Path,
    ) -> Result<ChildProc, SetupError> {
        let path = dir.join(format!("{}-{side}.{}", self.tool, self.ext));
        std::fs::write(&path, conf)?;
        let check = std::process::Command::new(self.program)
            .args(self.check_args)
            .arg(&path)
            .output()?;
        if !check.status.success() {
            return Err(start_err(
                format!("{} {side} config", self.tool),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&check.stdout),
                    String::from_utf8_lossy(&check.stderr)
                ),
            ));
        }
        let mut args: Vec<String> = self.run_args.iter().map(|a| a.to_string()).collect();
        args.push(path.display().to_string());
        Ok(ChildProc::spawn(
            &format!("{}-{side}-side", self.tool),
            self.program,
            &args,
            &[],
            dir,
        )?)
    }
}

/// A loopback port free a moment ago, from below the kernel's ephemeral
/// range, so that no outgoing connection takes it before its proxy binds it.
pub fn free_port() -> std::io::Result<SocketAddr> {
    let port = mycel_test_support::ports::free_block(1);
    Ok(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)))
}

/// The client talking to the backend itself.
pub fn direct(backend: &BackendAddrs) -> Result<Setup, SetupError> {
    let mut targets = BTreeMap::new();
    for (proto, addr) in [
        (Proto::Http1, backend.http1),
        (Proto::H2, backend.h2c),
        (Proto::Grpc, backend.grpc),
    ] {
        targets.insert(proto, Target::plain(addr, addr.to_string()));
    }
    Ok(Setup {
        name: "direct",
        targets,
        mesh_ports: Vec::new(),
        watched: Vec::new(),
        tcp: Some(backend.tcp),
        handshake: None,
        notes: Vec::new(),
        children: Vec::new(),
        admins: Vec::new(),
        collector: None,
        tasks: tokio::task::JoinSet::new(),
        dir: tempfile::tempdir()?,
    })
}

/// Waits until one request of every protocol succeeds through `setup`
/// (bounded by `limit`), so measurements start on a working chain.
pub async fn wait_working(setup: &mut Setup, limit: Duration) -> Result<(), SetupError> {
    let deadline = Instant::now() + limit;
    for (proto, target) in setup.targets.clone() {
        let mut last;
        loop {
            if let Some(i) = setup.children.iter_mut().position(|c| c.exited()) {
                let dead = &setup.children[i];
                return Err(start_err(
                    format!("{} ({})", setup.name, dead.name),
                    format!("exited early; log:\n{}", dead.log_tail()),
                ));
            }
            let r = match Conn::connect(proto, &target).await {
                Ok(mut c) => c.call(&target).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => break,
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                let logs: String = setup
                    .children
                    .iter()
                    .map(|c| format!("--- {}\n{}\n", c.name, c.log_tail()))
                    .collect();
                return Err(start_err(
                    format!("{} {}", setup.name, proto.as_str()),
                    format!("no successful request within {limit:?}: {last}\n{logs}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Finds `program` on PATH (nginx, haproxy).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
