//! The HAProxy pair: a client-side HAProxy (plaintext frontends) and a
//! server-side HAProxy (mTLS frontends, `verify required`), HTTP/2 over mTLS
//! between them (ALPN h2, as Mycel does), `http-reuse always` pools.

use std::time::Duration;

use super::{free_port, proxy_pair, which, ConfiguredProxy, PairSpec, Setup, SetupError};
use crate::backend::BackendAddrs;
use crate::certs::{write_pki, Pki, SERVER_NAME};
use crate::probe::ClientCert;

#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub front: [u16; 3],
    pub mesh: [u16; 3],
}

const DEFAULTS: &str = "global\n  maxconn 4000\n  nbthread 2\n  tune.ssl.default-dh-param 2048\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n  timeout http-keep-alive 300s\n  option http-keep-alive\n  http-reuse always\n";

const NAMES: [&str; 3] = ["http1", "h2", "grpc"];

/// Client side: plaintext frontends (h2c for h2 and gRPC), mTLS servers.
pub fn client_conf(pki: &Pki, p: Ports) -> String {
    let mut c = DEFAULTS.to_string();
    for (i, name) in NAMES.iter().enumerate() {
        let proto = if i == 0 { "" } else { " proto h2" };
        c.push_str(&format!(
            "frontend f_{name}\n  bind 127.0.0.1:{}{proto}\n  default_backend mesh_{name}\nbackend mesh_{name}\n  server s1 127.0.0.1:{} ssl crt {} ca-file {} verify required verifyhost {SERVER_NAME} sni str({SERVER_NAME}) alpn h2\n",
            p.front[i],
            p.mesh[i],
            pki.client_combined.display(),
            pki.ca.display(),
        ));
    }
    c
}

/// Server side: mTLS frontends (client certificate required), plaintext to
/// the backend (HTTP/1.1 for http1, h2c for h2 and gRPC).
pub fn server_conf(pki: &Pki, p: Ports, backend: &BackendAddrs) -> String {
    let mut c = DEFAULTS.to_string();
    let apps = [
        (backend.http1, ""),
        (backend.h2c, " proto h2"),
        (backend.grpc, " proto h2"),
    ];
    for (i, name) in NAMES.iter().enumerate() {
        c.push_str(&format!(
            "frontend m_{name}\n  bind 127.0.0.1:{} ssl crt {} ca-file {} verify required alpn h2,http/1.1\n  default_backend app_{name}\nbackend app_{name}\n  server a1 {}{}\n",
            p.mesh[i],
            pki.server_combined.display(),
            pki.ca.display(),
            apps[i].0,
            apps[i].1,
        ));
    }
    c
}

pub async fn start(backend: &BackendAddrs) -> Result<Setup, SetupError> {
    let program = which("haproxy").ok_or_else(|| {
        SetupError::Missing(
            "haproxy is not installed (bench/run.sh installs it: apt-get install -y nginx haproxy)"
                .into(),
        )
    })?;
    let dir = tempfile::tempdir()?;
    let pki = write_pki(dir.path())?;
    let mut ports = Ports {
        front: [0; 3],
        mesh: [0; 3],
    };
    for i in 0..3 {
        ports.front[i] = free_port()?.port();
        ports.mesh[i] = free_port()?.port();
    }
    let proxy = ConfiguredProxy {
        tool: "haproxy",
        program: &program,
        ext: "cfg",
        check_args: &["-c", "-q", "-f"],
        run_args: &["-db", "-f"],
    };
    let mut children = Vec::new();
    for (name, conf) in [
        ("server", server_conf(&pki, ports, backend)),
        ("client", client_conf(&pki, ports)),
    ] {
        children.push(proxy.start(name, conf, dir.path())?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(proxy_pair(
        PairSpec {
            name: "haproxy",
            fronts: [ports.front[0], ports.front[1], ports.front[2]],
            mesh: ports.mesh.to_vec(),
            server_name: SERVER_NAME,
            cert: ClientCert {
                chain: pki.client_chain_der.clone(),
                key_pkcs8: pki.client_key_der.clone(),
            },
            handshake_alpn: b"h2",
            note: "nbthread 2; hop between the pair: HTTP/2 over mTLS (ALPN h2), http-reuse always"
                .into(),
        },
        children,
        dir,
    ))
}
