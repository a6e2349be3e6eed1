//! Trust-anchor rotation with real processes: a controller, two meshed
//! workloads under constant load, `mycelctl ca rotate` and `ca status`. No
//! request may fail across a whole rotation, and at the end no proxy trusts
//! the old root (neither in its bundle nor in what its mesh port accepts).

use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use mycel_test_support::TestCa;
use mycel_tests::mesh::{pem_certs, spiffe, Mesh, Sidecar, SidecarSpec, APP_PORT};
use mycel_tests::shop::{mesh_yaml, workload};
use mycel_tests::{http, mtls, process};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

async fn mycelctl(args: &[&str]) -> Output {
    tokio::process::Command::new(process::bin("mycelctl"))
        .args(args)
        .output()
        .await
        .expect("run mycelctl")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

async fn ca_status(mesh: &Mesh) -> serde_json::Value {
    http::get(mesh.admin, "localhost", "/ca/status")
        .await
        .expect("GET /ca/status")
        .json()
}

/// Waits until the controller reports `phase`; returns that status.
async fn wait_phase(mesh: &Mesh, phase: &str, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = ca_status(mesh).await;
        if s["phase"] == phase {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "rotation never reached {phase}: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Requests through a client sidecar until stopped, bounded in count and
/// time; returns (answered 200, failures).
struct Load {
    stop: watch::Sender<bool>,
    task: JoinHandle<(u64, Vec<String>)>,
}

const LOAD_MAX_REQUESTS: u64 = 20_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(120);

fn start_load(out: SocketAddr) -> Load {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let (mut ok, mut failures) = (0u64, Vec::new());
        let until = Instant::now() + LOAD_MAX_TIME;
        let mut n = 0u64;
        while !*stopped.borrow_and_update() && n < LOAD_MAX_REQUESTS && Instant::now() < until {
            n += 1;
            match http::get(out, "ratings", &format!("/ratings/{n}")).await {
                Ok(r) if r.status == 200 => ok += 1,
                Ok(r) => failures.push(format!("request {n}: {} {}", r.status, r.body)),
                Err(e) => failures.push(format!("request {n}: {e:#}")),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ok, failures)
    });
    Load { stop, task }
}

impl Load {
    async fn finish(self) -> (u64, Vec<String>) {
        let _ = self.stop.send(true);
        self.task.await.expect("load task")
    }
}

/// The proxy's `/certs`: its trust bundle is exactly `root`, and its leaf's
/// issuer is signed by `root`.
async fn assert_only_trusts(sidecar: &Sidecar, root: &[u8]) {
    let certs = sidecar.admin_json("/certs").await;
    let bundle: Vec<&str> = certs["trust_bundle"]
        .as_array()
        .expect("trust_bundle")
        .iter()
        .filter_map(|r| r["sha256"].as_str())
        .collect();
    assert_eq!(
        bundle,
        vec![fingerprint(root).as_str()],
        "{} trust bundle",
        sidecar.proc.name
    );
    let chain = pem::parse_many(certs["chain_pem"].as_str().expect("chain_pem")).expect("chain");
    let top = chain.get(1).unwrap_or(&chain[0]);
    let (_, top) = x509_parser::parse_x509_certificate(top.contents()).expect("issuer");
    let (_, root) = x509_parser::parse_x509_certificate(root).expect("root");
    assert!(
        top.verify_signature(Some(root.public_key())).is_ok(),
        "{}'s leaf does not chain to the new root",
        sidecar.proc.name
    );
}

struct Scenario {
    mesh: Mesh,
    ratings: mycel_tests::shop::Workload,
    client: Sidecar,
}

async fn scenario(overlap: &str) -> Scenario {
    let mesh = Mesh::start_with(&mesh_yaml(""), &["--rotation-overlap", overlap]).await;
    let ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    let client = mesh.sidecar(SidecarSpec::new("client", "frontend")).await;
    let r = http::get(client.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    Scenario {
        mesh,
        ratings,
        client,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_rotation_under_load_fails_no_request_and_drops_the_old_root() {
    let Scenario {
        mesh,
        ratings,
        client,
    } = scenario("2s").await;
    let old_root = pem_certs(&mesh.ca_root()).remove(0);
    let old_ca = TestCa::from_data_dir(&mesh.path("data"));
    let admin = mesh.admin.to_string();

    let load = start_load(client.outbound());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let out = mycelctl(&["ca", "rotate", "--controller-admin", &admin, "-o", "json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["phase"], "distributing", "{answer:#}");
    assert_eq!(answer["roots"].as_array().unwrap().len(), 2);

    // A second rotation while one runs is refused.
    let again = mycelctl(&["ca", "rotate", "--controller-admin", &admin]).await;
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already under way"),
        "{}",
        text(&again.stderr)
    );

    // A proxy that joins mid-rotation gets a new-root leaf and talks to
    // proxies on either root.
    wait_phase(&mesh, "overlap", Duration::from_secs(20)).await;
    let late = mesh.sidecar(SidecarSpec::new("late", "reviews")).await;
    for i in 0..20 {
        let r = http::get(late.outbound(), "ratings", &format!("/ratings/{i}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "late client request {i}: {}", r.body);
    }

    let done = wait_phase(&mesh, "stable", Duration::from_secs(40)).await;
    let took = started.elapsed();
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rotation: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 50, "too little load to mean anything: {ok}");
    eprintln!("rotation: {ok} requests, none failed, stable again after {took:?}");

    let new_root = pem_certs(&mesh.ca_root()).remove(0);
    assert_ne!(new_root, old_root);
    let roots = done["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{done:#}");
    assert_eq!(roots[0]["fingerprint"], fingerprint(&new_root));
    for p in done["proxies"].as_array().unwrap() {
        assert_eq!(p["on_current_root"], true, "{p}");
    }
    for sidecar in [&ratings.sidecar, &client, &late] {
        assert_only_trusts(sidecar, &new_root).await;
    }

    // What the mesh port accepts: the old root's leaves no longer, the new
    // root's yes.
    let probe = spiffe("shop", "probe");
    let port = ratings.sidecar.inbound();
    let refused = mtls::get(port, &old_ca.leaf(&probe), "/ratings/1", APP_PORT).await;
    assert!(refused.is_err(), "old-root client served: {refused:?}");
    let new_ca = TestCa::from_data_dir(&mesh.path("data"));
    let (status, body) = mtls::get(port, &new_ca.leaf(&probe), "/ratings/1", APP_PORT)
        .await
        .expect("new-root client");
    assert_eq!(status, 200, "{body}");

    let out = mycelctl(&["ca", "status", "--controller-admin", &admin]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("PHASE  stable"), "{table}");
    assert!(table.contains("0 of 3 proxies on an old root"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restart_in_overlap_continues_the_rotation() {
    let Scenario {
        mut mesh,
        ratings,
        client,
    } = scenario("8s").await;
    let old_root = pem_certs(&mesh.ca_root()).remove(0);
    let admin = mesh.admin.to_string();
    let load = start_load(client.outbound());

    let out = mycelctl(&["ca", "rotate", "--controller-admin", &admin]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("PHASE  distributing"));
    wait_phase(&mesh, "overlap", Duration::from_secs(20)).await;

    // The load pauses over the restart itself: a controller that comes back
    // knows no registered workload until each re-registers, and a client
    // that resyncs first briefly sees no ready endpoint. That is a property
    // of restarts (local mode), not of the rotation, which the load covers
    // before and after.
    let (ok_before, failures) = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    mesh.kill_controller().await;
    mesh.start_controller().await;
    mesh.wait_registered("ratings").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while http::get(client.outbound(), "ratings", "/ratings/0")
        .await
        .map(|r| r.status)
        .unwrap_or(0)
        != 200
    {
        assert!(Instant::now() < deadline, "the client never resynced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let load = start_load(client.outbound());
    let after = ca_status(&mesh).await;
    assert!(
        after["phase"] == "overlap" || after["phase"] == "finishing",
        "a restart must continue the rotation: {after:#}"
    );
    let bundle_after_restart = after["roots"].as_array().unwrap().len();
    assert!(bundle_after_restart >= 1);

    wait_phase(&mesh, "stable", Duration::from_secs(60)).await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok_before + ok > 50, "{ok_before} + {ok}");
    let new_root = pem_certs(&mesh.ca_root()).remove(0);
    assert_ne!(new_root, old_root);
    for sidecar in [&ratings.sidecar, &client] {
        assert_only_trusts(sidecar, &new_root).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_new_root_is_refused_and_the_mesh_keeps_working() {
    let Scenario {
        mesh,
        ratings,
        client,
    } = scenario("2s").await;
    let admin = mesh.admin.to_string();
    let root_before = ca_status(&mesh).await["roots"].clone();
    let cadir = mesh.path("data/ca");
    let dir = mesh.path("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let leaf = ratings.sidecar.admin_json("/certs").await["chain_pem"]
        .as_str()
        .unwrap()
        .to_string();
    let issuer = cadir.join("issuer.pem").display().to_string();
    let issuer_key = cadir.join("issuer.key").display().to_string();
    let cases = [
        (
            write("leaf.pem", &leaf),
            "--root-cert: is not a CA certificate",
        ),
        (
            write("foreign-root.pem", TestCa::new("foreign").root_pem()),
            "issuer certificate --issuer-cert is not signed by root certificate --root-cert",
        ),
    ];
    for (root, want) in cases {
        let out = mycelctl(&[
            "ca",
            "rotate",
            "--controller-admin",
            &admin,
            "--root-cert",
            &root,
            "--issuer-cert",
            &issuer,
            "--issuer-key",
            &issuer_key,
        ])
        .await;
        assert!(!out.status.success(), "{root} accepted");
        let err = text(&out.stderr);
        assert!(
            err.contains("rotation refused") && err.contains(want),
            "{err}"
        );
    }
    let s = ca_status(&mesh).await;
    assert_eq!(s["phase"], "stable", "{s:#}");
    assert_eq!(s["roots"], root_before, "nothing half-applied");
    assert!(!cadir.join("rotation.json").exists());
    for i in 0..20 {
        let r = http::get(client.outbound(), "ratings", &format!("/ratings/{i}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let out = mycelctl(&["ca", "status", "--controller-admin", &admin, "-o", "yaml"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("phase: stable"),
        "{}",
        text(&out.stdout)
    );
}

/// Bring your own CA: a root whose key the controller never sees, replaced
/// by another such root under load; a restart with the old flags keeps the
/// new CA (the flags name a retired root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_ca_without_its_root_key_rotates_to_another_user_ca() {
    let users = tempfile::tempdir().unwrap();
    let first = TestCa::new("user-one");
    let mut args = vec!["--rotation-overlap".to_string(), "2s".into()];
    args.extend(first.write_user_ca(&users.path().join("one")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut mesh = Mesh::start_with(&mesh_yaml(""), &args).await;
    // Proxies pin the root the user gave (the data dir holds no CA yet).
    std::fs::create_dir_all(mesh.path("data/ca")).unwrap();
    std::fs::write(mesh.ca_root(), first.root_pem()).unwrap();
    let ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    let client = mesh.sidecar(SidecarSpec::new("client", "frontend")).await;
    let admin = mesh.admin.to_string();
    let load = start_load(client.outbound());

    let second = TestCa::new("user-two");
    let flags = second.write_user_ca(&users.path().join("two"));
    let mut rotate = vec!["ca", "rotate", "--controller-admin", admin.as_str()];
    rotate.extend(flags.iter().map(String::as_str));
    let out = mycelctl(&rotate).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_phase(&mesh, "stable", Duration::from_secs(40)).await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 20, "{ok}");

    let new_root = second.root_der().to_vec();
    for sidecar in [&ratings.sidecar, &client] {
        assert_only_trusts(sidecar, &new_root).await;
    }
    assert!(
        !mesh.path("data/ca/root.key").exists(),
        "the user's root key is never needed"
    );

    // Restarted with the flags of the first CA: it was retired, so the
    // data dir's (the second) is used, and the mesh keeps working.
    mesh.kill_controller().await;
    mesh.start_controller().await;
    let s = ca_status(&mesh).await;
    assert_eq!(
        s["roots"][0]["fingerprint"],
        fingerprint(&new_root),
        "{s:#}"
    );
    assert_eq!(s["roots"].as_array().unwrap().len(), 1);
    // A restarted controller in local mode knows the endpoints of the
    // proxies that reconnected: wait for ratings' before calling it.
    mesh.wait_registered("ratings").await;
    let late = mesh.sidecar(SidecarSpec::new("late", "reviews")).await;
    let r = http::get(late.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_only_trusts(&late, &new_root).await;
}

/// A proxy that cannot reach the controller for a whole rotation (here:
/// frozen with SIGSTOP until the controller drops its stream) wakes up
/// trusting only the old root, with an old-root certificate the controller
/// no longer accepts. It must catch up by itself, without a restart: read
/// `--ca-root` again to trust the controller, renew with its join token,
/// and get the new bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_cut_off_for_a_whole_rotation_catches_up_without_a_restart() {
    let mesh = Mesh::start_with(
        &mesh_yaml(""),
        &[
            "--rotation-overlap",
            "1s",
            "--grpc-keepalive-interval",
            "1s",
        ],
    )
    .await;
    let _ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    let sleeper = mesh.sidecar(SidecarSpec::new("sleeper", "reviews")).await;
    let r = http::get(sleeper.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let pid = sleeper.proc.pid();
    let admin = mesh.admin.to_string();

    sleeper
        .proc
        .signal(nix::sys::signal::Signal::SIGSTOP as i32);
    let out = mycelctl(&["ca", "rotate", "--controller-admin", &admin]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The frozen proxy's stream is dropped by keepalive (about 11 s), then
    // the rotation completes without it.
    let done = wait_phase(&mesh, "stable", Duration::from_secs(60)).await;
    assert_eq!(done["roots"].as_array().unwrap().len(), 1, "{done:#}");
    let new_root = pem_certs(&mesh.ca_root()).remove(0);

    sleeper
        .proc
        .signal(nix::sys::signal::Signal::SIGCONT as i32);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let certs = sleeper.admin_json("/certs").await;
        let bundle_is_new = certs["trust_bundle"]
            .as_array()
            .is_some_and(|b| b.len() == 1 && b[0]["sha256"] == fingerprint(&new_root));
        if bundle_is_new {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the woken proxy never caught up: {certs:#}\n{}",
            sleeper.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_only_trusts(&sleeper, &new_root).await;
    assert_eq!(sleeper.proc.pid(), pid, "the proxy was restarted");
    // Its old-root certificate is refused now, so the renewal that got it
    // a new-root leaf went by join token.
    let log = sleeper.proc.log();
    assert!(
        log.contains("trying the join token"),
        "caught up some other way than the one under test:\n{log}"
    );
    let r = http::get(sleeper.outbound(), "ratings", "/ratings/2")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}
