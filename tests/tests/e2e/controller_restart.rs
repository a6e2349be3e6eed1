//! Losing the controller: traffic keeps flowing on the last config, and
//! proxies resync with changes made while it was gone.

use std::time::{Duration, Instant};

use mycel_tests::http;
use mycel_tests::mesh::{Mesh, SidecarSpec, APP_PORT};
use mycel_tests::shop::{mesh_yaml, workload};

fn stars_service() -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: stars\n  namespace: shop\nspec:\n  selector:\n    app: ratings\n  ports:\n  - name: http\n    port: 80\n    targetPort: {APP_PORT}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_controller_loss_and_resyncs_after_restart() {
    let mut mesh = Mesh::start(&mesh_yaml("")).await;
    let _ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    let client = mesh.sidecar(SidecarSpec::new("client", "frontend")).await;
    let out = client.outbound();

    assert_eq!(
        http::get(out, "ratings", "/ratings/1")
            .await
            .unwrap()
            .status,
        200
    );
    // Subscribed, but not in the mesh yet.
    let r = http::get(out, "stars", "/ratings/1").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);

    mesh.kill_controller().await;
    // Traffic keeps flowing on the last config and certificate.
    let until = Instant::now() + Duration::from_secs(2);
    let mut sent = 0;
    while Instant::now() < until && sent < 200 {
        let r = http::get(out, "ratings", "/ratings/2").await.unwrap();
        assert_eq!(
            r.status, 200,
            "request {sent} with the controller down: {}",
            r.body
        );
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = http::get(client.admin, "localhost", "/ready")
        .await
        .unwrap();
    assert_eq!(
        ready.status, 200,
        "a proxy with a cert and config stays ready"
    );

    // Change the mesh while the controller is down, then bring it back.
    mesh.write_mesh_yaml(&mesh_yaml(&stars_service()));
    mesh.start_controller().await;

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http::get(out, "stars", "/ratings/3").await.unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "proxy never picked up the new service after the controller came back: {} {}\n{}",
            r.status,
            r.body,
            client.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the old service still routes.
    assert_eq!(
        http::get(out, "ratings", "/ratings/4")
            .await
            .unwrap()
            .status,
        200
    );
}
