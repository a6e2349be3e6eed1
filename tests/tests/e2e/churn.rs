//! Endpoints follow instances: started ones get traffic within a second,
//! stopped ones get none after a second.

use std::time::{Duration, Instant};

use mycel_tests::http;
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec};
use mycel_tests::shop::{mesh_yaml, workload};

async fn served(sidecar: &Sidecar) -> u64 {
    sidecar.served_inbound().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_started_and_stopped_are_followed_within_a_second() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let a = workload(&mesh, "ratings-a", "ratings", "http", &[], |s| s).await;
    let client = mesh.sidecar(SidecarSpec::new("client", "frontend")).await;
    let out = client.outbound();

    let r = http::get(out, "ratings", "/ratings/1").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        served(&a.sidecar).await >= 1,
        "instance a never counted a request"
    );

    // Start b; from the moment the controller has it as a ready endpoint, b
    // must get traffic within one second.
    let b = workload(&mesh, "ratings-b", "ratings", "http", &[], |s| s).await;
    let ready_at = Instant::now();
    let mut reached_b = None;
    for _ in 0..200 {
        let r = http::get(out, "ratings", "/ratings/2").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        if served(&b.sidecar).await > 0 {
            reached_b = Some(ready_at.elapsed());
            break;
        }
        if ready_at.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reached_b = reached_b.expect("new instance b never received traffic");
    assert!(
        reached_b <= Duration::from_secs(1),
        "b got its first request {reached_b:?} after it was ready"
    );
    eprintln!("new instance reached after {reached_b:?}");

    // Stop b (app and sidecar, as a pod going away). One second later no
    // request may go to it: every request succeeds, all on a.
    let stopped_at = Instant::now();
    drop(b);
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(stopped_at.elapsed())).await;
    let before = served(&a.sidecar).await;
    for i in 0..50 {
        let r = http::get(out, "ratings", &format!("/ratings/{i}"))
            .await
            .unwrap();
        assert_eq!(
            r.status, 200,
            "request {i} after b stopped failed (sent to b?): {}",
            r.body
        );
    }
    assert_eq!(
        served(&a.sidecar).await - before,
        50,
        "every request must land on a"
    );
    let dump = client.admin_json("/config_dump").await.to_string();
    assert_eq!(
        dump.matches("ratings-b").count(),
        0,
        "stopped instance still in the client's config: {dump}"
    );
}
