//! Opaque TCP through the mesh: a declared upstream port on the client side,
//! tunnelled with HTTP/2 CONNECT over mTLS to the server's app.

use std::net::SocketAddr;
use std::time::Duration;

use mycel_tests::echo::tcp_echo;
use mycel_tests::http;
use mycel_tests::mesh::{spiffe, Mesh, SidecarSpec, APP_PORT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_upstream_is_tunnelled_to_the_service() {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: shop\nspec:\n  selector:\n    app: echo\n  ports:\n  - name: tcp\n    port: 7000\n    targetPort: {APP_PORT}\n    appProtocol: tcp\n"
    );
    let mesh = Mesh::start(&yaml).await;
    let server = SidecarSpec::new("echo", "echo")
        .label("app", "echo")
        .app_port(&format!("tcp:{APP_PORT}:tcp"));
    tcp_echo(server.app_addr(), b"echo:").await;
    let server = mesh.sidecar(server).await;
    mesh.wait_registered("echo").await;

    let client_spec = SidecarSpec::new("client", "frontend");
    let upstream = SocketAddr::from((client_spec.ip, 16000));
    let client = mesh
        .sidecar(
            client_spec
                .arg("--tcp-upstream")
                .arg(&format!("{upstream}=echo.shop:7000")),
        )
        .await;

    let mut conn = tokio::net::TcpStream::connect(upstream).await.unwrap();
    for i in 0..20 {
        let msg = format!("line {i}\n");
        conn.write_all(msg.as_bytes()).await.unwrap();
        let want = format!("echo:{msg}").into_bytes();
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut got))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }
    drop(conn);

    // The tunnel crossed the mesh with the client's identity.
    let metrics = server.metrics().await;
    assert!(metrics.contains(&spiffe("shop", "frontend")), "{metrics}");

    // The controller shows the client's subscription and what it ACKed.
    let proxies = http::get(mesh.admin, "localhost", "/debug/proxies")
        .await
        .unwrap()
        .json();
    let me = proxies
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["workload"] == "client")
        .expect("client in /debug/proxies")
        .clone();
    assert!(
        me["subscriptions"].to_string().contains("echo.shop"),
        "{me}"
    );
    assert!(me["acked"].to_string().contains("echo.shop"), "{me}");
    assert!(me["last_nack"].is_null(), "{me}");
    drop(client);
}
