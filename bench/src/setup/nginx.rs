//! The nginx pair: a client-side nginx (plaintext listeners for the app)
//! and a server-side nginx (mTLS listeners, `ssl_verify_client on`) in front
//! of the backend, with keep-alive upstream pools on both hops.
//!
//! nginx proxies HTTP/1.1 upstream only (HTTP/2 upstream exists only as
//! `grpc_pass`), so the h2c client protocol is carried as HTTP/1.1 between
//! the two nginx and to the backend; gRPC goes over HTTP/2 on both hops.
//!
//! Also the gateway scenario's `nginx-tls` ([`start_tls_front`]): one
//! nginx terminating public TLS in front of the backend.

use std::path::Path;
use std::time::Duration;

use super::{free_port, proxy_pair, which, ConfiguredProxy, PairSpec, Setup, SetupError};
use crate::backend::BackendAddrs;
use crate::certs::{write_pki, Pki, WebPki, GATEWAY_HOST, SERVER_NAME};
use crate::child::ChildProc;
use crate::probe::ClientCert;

/// Ports of the pair.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub front_h1: u16,
    pub front_h2: u16,
    pub front_grpc: u16,
    pub mesh_http: u16,
    pub mesh_grpc: u16,
}

fn common(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes auto;\npid {d}/{name}.pid;\nerror_log stderr warn;\nevents {{ worker_connections 8192; }}\n"
    )
}

fn http_common(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "  access_log off;\n  client_body_temp_path {d}/{name}-body;\n  proxy_temp_path {d}/{name}-proxy;\n  fastcgi_temp_path {d}/{name}-fcgi;\n  uwsgi_temp_path {d}/{name}-uwsgi;\n  scgi_temp_path {d}/{name}-scgi;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n"
    )
}

/// The client-side nginx: plaintext in, mTLS out (client certificate,
/// server certificate verified against the pair's CA and name).
pub fn client_conf(dir: &Path, pki: &Pki, p: Ports) -> String {
    let tls = |prefix: &str| {
        format!(
            "      {prefix}_ssl_certificate {};\n      {prefix}_ssl_certificate_key {};\n      {prefix}_ssl_trusted_certificate {};\n      {prefix}_ssl_verify on;\n      {prefix}_ssl_name {SERVER_NAME};\n      {prefix}_ssl_server_name on;\n      {prefix}_ssl_session_reuse on;\n      {prefix}_ssl_protocols TLSv1.3;\n",
            pki.client_cert.display(),
            pki.client_key.display(),
            pki.ca.display()
        )
    };
    let proxy = format!(
        "    location / {{\n      proxy_pass https://mesh_http;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n{}    }}\n",
        tls("proxy")
    );
    format!(
        "{}http {{\n{}  upstream mesh_http {{ server 127.0.0.1:{}; keepalive 128; keepalive_requests 1000000; keepalive_timeout 300s; }}\n  upstream mesh_grpc {{ server 127.0.0.1:{}; keepalive 128; keepalive_requests 1000000; keepalive_timeout 300s; }}\n  server {{\n    listen 127.0.0.1:{};\n{proxy}  }}\n  server {{\n    listen 127.0.0.1:{} http2;\n{proxy}  }}\n  server {{\n    listen 127.0.0.1:{} http2;\n    location / {{\n      grpc_pass grpcs://mesh_grpc;\n{}    }}\n  }}\n}}\n",
        common(dir, "client"),
        http_common(dir, "client"),
        p.mesh_http,
        p.mesh_grpc,
        p.front_h1,
        p.front_h2,
        p.front_grpc,
        tls("grpc"),
    )
}

/// The server-side nginx: mTLS in (client certificate required), plaintext
/// to the backend.
pub fn server_conf(dir: &Path, pki: &Pki, p: Ports, backend: &BackendAddrs) -> String {
    let tls = format!(
        "    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_client_certificate {};\n    ssl_verify_client on;\n    ssl_protocols TLSv1.3;\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    format!(
        "{}http {{\n{}  upstream app_http {{ server {}; keepalive 128; keepalive_requests 1000000; keepalive_timeout 300s; }}\n  upstream app_grpc {{ server {}; keepalive 128; keepalive_requests 1000000; keepalive_timeout 300s; }}\n  server {{\n    listen 127.0.0.1:{} ssl;\n{tls}    location / {{\n      proxy_pass http://app_http;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n  server {{\n    listen 127.0.0.1:{} ssl http2;\n{tls}    location / {{\n      grpc_pass grpc://app_grpc;\n    }}\n  }}\n}}\n",
        common(dir, "server"),
        http_common(dir, "server"),
        backend.http1,
        backend.grpc,
        p.mesh_http,
        p.mesh_grpc,
    )
}

/// The gateway scenario's TLS front: HTTPS in on `port` (TLS 1.3, ALPN h2
/// and http/1.1 on one listener, the certificate for [`GATEWAY_HOST`]),
/// HTTP/1.1 out to the backend over a keep-alive pool, as the server side
/// of the pair does. `keepalive_requests` (in [`http_common`]) also bounds
/// the requests of one HTTP/2 connection since nginx 1.19.7, so the load
/// generator's connections are never closed under it.
pub fn tls_front_conf(dir: &Path, pki: &WebPki, port: u16, backend: &BackendAddrs) -> String {
    format!(
        "{}http {{\n{}  upstream app_http {{ server {}; keepalive 128; keepalive_requests 1000000; keepalive_timeout 300s; }}\n  server {{\n    listen 127.0.0.1:{port} ssl http2;\n    server_name {GATEWAY_HOST};\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.3;\n    location / {{\n      proxy_pass http://app_http;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        common(dir, "tls"),
        http_common(dir, "tls"),
        backend.http1,
        pki.cert.display(),
        pki.key.display(),
    )
}

fn program() -> Result<std::path::PathBuf, SetupError> {
    which("nginx").ok_or_else(|| {
        SetupError::Missing(
            "nginx is not installed (bench/run.sh installs it: apt-get install -y nginx haproxy)"
                .into(),
        )
    })
}

/// Starts [`tls_front_conf`] (checked with `nginx -t` first) with its
/// files in `dir`; waits for the master to fork its workers.
pub async fn start_tls_front(
    dir: &Path,
    pki: &WebPki,
    port: u16,
    backend: &BackendAddrs,
) -> Result<ChildProc, SetupError> {
    let program = program()?;
    let proxy = ConfiguredProxy {
        tool: "nginx",
        program: &program,
        ext: "conf",
        check_args: &["-t", "-q", "-c"],
        run_args: &["-c"],
    };
    let child = proxy.start("tls", tls_front_conf(dir, pki, port, backend), dir)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(child)
}

pub async fn start(backend: &BackendAddrs) -> Result<Setup, SetupError> {
    let program = program()?;
    let dir = tempfile::tempdir()?;
    let pki = write_pki(dir.path())?;
    let ports = Ports {
        front_h1: free_port()?.port(),
        front_h2: free_port()?.port(),
        front_grpc: free_port()?.port(),
        mesh_http: free_port()?.port(),
        mesh_grpc: free_port()?.port(),
    };
    let proxy = ConfiguredProxy {
        tool: "nginx",
        program: &program,
        ext: "conf",
        check_args: &["-t", "-q", "-c"],
        run_args: &["-c"],
    };
    let mut children = Vec::new();
    for (name, conf) in [
        ("server", server_conf(dir.path(), &pki, ports, backend)),
        ("client", client_conf(dir.path(), &pki, ports)),
    ] {
        children.push(proxy.start(name, conf, dir.path())?);
    }
    // Let the masters fork their workers before the first measurement.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(proxy_pair(
        PairSpec {
            name: "nginx",
            fronts: [ports.front_h1, ports.front_h2, ports.front_grpc],
            mesh: vec![ports.mesh_http, ports.mesh_grpc],
            server_name: SERVER_NAME,
            cert: ClientCert {
                chain: pki.client_chain_der.clone(),
                key_pkcs8: pki.client_key_der.clone(),
            },
            handshake_alpn: b"http/1.1",
            note: "worker_processes auto (2); hop between the pair: HTTP/1.1 over mTLS for http1 and h2 clients, HTTP/2 for gRPC".into(),
        },
        children,
        dir,
    ))
}
