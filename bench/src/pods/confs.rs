//! Configuration files of the pod scenario's programs: the nginx app in
//! every server pod, and the nginx and HAProxy pairs (one proxy in each
//! pod) that the Mycel sidecars are compared with. The pairs do what the
//! loopback scenario's pairs do (mTLS with a client certificate between
//! the pods, keep-alive pools), with pod addresses instead of loopback.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::certs::{Pki, SERVER_NAME};

/// The app's port in the server pod.
pub const APP_PORT: u16 = 8080;
/// The body of every answer of the app: 17 bytes.
pub const BODY: &str = "hello from nginx\n";
/// Where the app serves the bulk file.
pub const BULK_PATH: &str = "/bulk";
/// The client-side proxy's port on the client pod's loopback.
pub const FRONT_PORT: u16 = 10080;
/// The server-side proxy's mTLS port on the server pod's address.
pub const MESH_PORT: u16 = 10443;

/// Lines every nginx here starts with: in the foreground, 2 workers,
/// temporary files in `dir`, no access log, connections kept for good.
fn nginx_head(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes auto;\npid {d}/{name}.pid;\nerror_log stderr warn;\nevents {{ worker_connections 8192; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/{name}-body;\n  proxy_temp_path {d}/{name}-proxy;\n  fastcgi_temp_path {d}/{name}-fcgi;\n  uwsgi_temp_path {d}/{name}-uwsgi;\n  scgi_temp_path {d}/{name}-scgi;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n"
    )
}

/// The app: [`BODY`] for every path but [`BULK_PATH`], which sends the
/// file `bulk` (sendfile) from `dir`.
pub fn app(dir: &Path) -> String {
    format!(
        "{}  server {{\n    listen 0.0.0.0:{APP_PORT};\n    location = {BULK_PATH} {{ sendfile on; alias {}/bulk; }}\n    location / {{ return 200 \"{}\"; }}\n  }}\n}}\n",
        nginx_head(dir, "app"),
        dir.display(),
        BODY.escape_default(),
    )
}

/// Client-side nginx: plaintext on the pod's loopback, mTLS to the server
/// pod's nginx (client certificate, server name checked).
pub fn nginx_client(dir: &Path, pki: &Pki, server: Ipv4Addr) -> String {
    format!(
        "{}  upstream mesh {{ server {server}:{MESH_PORT}; keepalive 128; keepalive_requests 1000000; keepalive_timeout 300s; }}\n  server {{\n    listen 127.0.0.1:{FRONT_PORT};\n    location / {{\n      proxy_pass https://mesh;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_ssl_certificate {};\n      proxy_ssl_certificate_key {};\n      proxy_ssl_trusted_certificate {};\n      proxy_ssl_verify on;\n      proxy_ssl_name {SERVER_NAME};\n      proxy_ssl_server_name on;\n      proxy_ssl_session_reuse on;\n      proxy_ssl_protocols TLSv1.3;\n    }}\n  }}\n}}\n",
        nginx_head(dir, "client"),
        pki.client_cert.display(),
        pki.client_key.display(),
        pki.ca.display(),
    )
}

/// Server-side nginx: mTLS on the pod address (client certificate
/// required), plaintext to the app on loopback.
pub fn nginx_server(dir: &Path, pki: &Pki, server: Ipv4Addr) -> String {
    format!(
        "{}  upstream app {{ server 127.0.0.1:{APP_PORT}; keepalive 128; keepalive_requests 1000000; keepalive_timeout 300s; }}\n  server {{\n    listen {server}:{MESH_PORT} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_client_certificate {};\n    ssl_verify_client on;\n    ssl_protocols TLSv1.3;\n    location / {{\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        nginx_head(dir, "server"),
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display(),
    )
}

/// Where Debian's nginx keeps its dynamic stream (L4) module
/// (`libnginx-mod-stream`).
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Lines an L4 nginx starts with: the stream module, then as
/// [`nginx_head`] but a `stream` block instead of `http`.
fn nginx_l4_head(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "load_module {NGINX_STREAM_MODULE};\ndaemon off;\nmaster_process on;\nworker_processes auto;\npid {d}/{name}.pid;\nerror_log stderr warn;\nevents {{ worker_connections 8192; }}\nstream {{\n"
    )
}

/// Client side of an L4 mTLS tunnel (nginx `stream`): each connection from
/// the client becomes one TLS connection to the server pod, with the client
/// certificate; bytes are relayed as they are, nothing is parsed.
pub fn nginx_l4_client(dir: &Path, pki: &Pki, server: Ipv4Addr) -> String {
    format!(
        "{}  server {{\n    listen 127.0.0.1:{FRONT_PORT};\n    proxy_pass {server}:{MESH_PORT};\n    proxy_timeout 300s;\n    proxy_ssl on;\n    proxy_ssl_certificate {};\n    proxy_ssl_certificate_key {};\n    proxy_ssl_trusted_certificate {};\n    proxy_ssl_verify on;\n    proxy_ssl_name {SERVER_NAME};\n    proxy_ssl_server_name on;\n    proxy_ssl_session_reuse on;\n    proxy_ssl_protocols TLSv1.3;\n  }}\n}}\n",
        nginx_l4_head(dir, "client"),
        pki.client_cert.display(),
        pki.client_key.display(),
        pki.ca.display(),
    )
}

/// Server side of the L4 tunnel: TLS with a required client certificate
/// on the pod address, each connection relayed to the app on loopback.
pub fn nginx_l4_server(dir: &Path, pki: &Pki, server: Ipv4Addr) -> String {
    format!(
        "{}  server {{\n    listen {server}:{MESH_PORT} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_client_certificate {};\n    ssl_verify_client on;\n    ssl_protocols TLSv1.3;\n    proxy_pass 127.0.0.1:{APP_PORT};\n    proxy_timeout 300s;\n  }}\n}}\n",
        nginx_l4_head(dir, "server"),
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display(),
    )
}

const HAPROXY_HEAD: &str = "global\n  maxconn 4000\n  nbthread 2\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n  timeout http-keep-alive 300s\n  option http-keep-alive\n  http-reuse always\n";

/// Client-side HAProxy: plaintext on the pod's loopback, HTTP/2 over mTLS
/// (ALPN h2, as Mycel's hop) to the server pod's HAProxy.
pub fn haproxy_client(pki: &Pki, server: Ipv4Addr) -> String {
    format!(
        "{HAPROXY_HEAD}frontend front\n  bind 127.0.0.1:{FRONT_PORT}\n  default_backend mesh\nbackend mesh\n  server s1 {server}:{MESH_PORT} ssl crt {} ca-file {} verify required verifyhost {SERVER_NAME} sni str({SERVER_NAME}) alpn h2\n",
        pki.client_combined.display(),
        pki.ca.display(),
    )
}

/// Server-side HAProxy: mTLS on the pod address (client certificate
/// required), HTTP/1.1 to the app on loopback.
pub fn haproxy_server(pki: &Pki, server: Ipv4Addr) -> String {
    format!(
        "{HAPROXY_HEAD}frontend mesh\n  bind {server}:{MESH_PORT} ssl crt {} ca-file {} verify required alpn h2,http/1.1\n  default_backend app\nbackend app\n  server a1 127.0.0.1:{APP_PORT}\n",
        pki.server_combined.display(),
        pki.ca.display(),
    )
}

/// The controller's mesh config: the app's Service, reached by its VIP.
pub fn mesh_yaml(namespace: &str, vip: Ipv4Addr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: backend\n  namespace: {namespace}\nspec:\n  selector:\n    app: backend\n  clusterIP: {vip}\n  ports:\n  - {{name: http, port: 80, targetPort: {APP_PORT}, appProtocol: http}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_answers_seventeen_bytes_escaped_for_nginx() {
        assert_eq!(BODY.len(), 17);
        let conf = app(Path::new("/tmp/x"));
        assert!(
            conf.contains("return 200 \"hello from nginx\\n\";"),
            "{conf}"
        );
        assert!(conf.contains("alias /tmp/x/bulk;"), "{conf}");
    }

    #[test]
    fn the_pairs_cross_between_the_pod_addresses() {
        let ip = Ipv4Addr::new(198, 18, 200, 5);
        let pki = crate::certs::write_pki(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(haproxy_client(&pki, ip).contains("server s1 198.18.200.5:10443 ssl"));
        assert!(haproxy_server(&pki, ip).contains("bind 198.18.200.5:10443 ssl"));
        let dir = Path::new("/d");
        assert!(nginx_client(dir, &pki, ip).contains("server 198.18.200.5:10443;"));
        assert!(nginx_server(dir, &pki, ip).contains("listen 198.18.200.5:10443 ssl;"));
        assert!(nginx_l4_client(dir, &pki, ip).contains("proxy_pass 198.18.200.5:10443;"));
        assert!(nginx_l4_server(dir, &pki, ip).contains("listen 198.18.200.5:10443 ssl;"));
    }

    #[test]
    fn the_l4_tunnel_loads_the_stream_module_and_relays_without_http() {
        let pki = crate::certs::write_pki(tempfile::tempdir().unwrap().path()).unwrap();
        let ip = Ipv4Addr::new(198, 18, 200, 5);
        for conf in [
            nginx_l4_client(Path::new("/d"), &pki, ip),
            nginx_l4_server(Path::new("/d"), &pki, ip),
        ] {
            assert!(conf.starts_with("load_module "), "{conf}");
            assert!(conf.contains("stream {"), "{conf}");
            assert!(!conf.contains("http {"), "{conf}");
        }
    }
}
