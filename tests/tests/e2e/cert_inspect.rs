//! `mycelctl cert inspect` as a real process: the chain a real sidecar's
//! mesh port presents, judged against the mesh root and against a stranger;
//! PEM files good and bad. Traffic only to loopback.

use std::process::Output;

use mycel_test_support::TestCa;
use mycel_tests::mesh::{spiffe, Mesh};
use mycel_tests::process;
use mycel_tests::shop::{mesh_yaml, workload};
use serde_json::Value;

pub(super) async fn mycelctl(args: &[&str]) -> Output {
    tokio::process::Command::new(process::bin("mycelctl"))
        .args(args)
        .output()
        .await
        .expect("run mycelctl")
}

pub(super) fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_a_sidecar_shows_its_identity_and_verifies_against_the_mesh_root() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    let port = ratings.sidecar.inbound().to_string();
    let root = mesh.ca_root().display().to_string();
    let id = spiffe("shop", "ratings");

    // Against the mesh root: the sidecar's identity, verified; the mesh port
    // asked for a client certificate we did not have.
    let out = mycelctl(&["cert", "inspect", "--handshake", &port, "--ca-root", &root]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&id), "{stdout}");
    assert!(stdout.contains("Chain: verified"), "{stdout}");
    assert!(
        stdout.contains("server requires a client certificate"),
        "{stdout}"
    );
    // Text goes to a pipe here: no colour codes.
    assert!(!stdout.contains('\x1b'), "{stdout:?}");

    // The same as JSON, with stable field names.
    let out = mycelctl(&[
        "cert",
        "inspect",
        "--handshake",
        &port,
        "--ca-root",
        &root,
        "-o",
        "json",
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("-o json parses");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["chain"][0]["spiffe_id"], id.as_str());
    assert_eq!(doc["chain"][0]["role"], "leaf");
    assert_eq!(doc["verification"]["status"], "verified");
    assert_eq!(doc["handshake"]["client_certificate_requested"], true);
    assert_eq!(doc["handshake"]["completed"], false);
    assert!(doc["trust_bundle"]
        .as_array()
        .is_some_and(|r| !r.is_empty()));

    // Against a root that did not sign it: shown, not verified, exit 1.
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.pem");
    std::fs::write(&foreign, TestCa::new("foreign").root_pem()).unwrap();
    let out = mycelctl(&[
        "cert",
        "inspect",
        "--handshake",
        &port,
        "--ca-root",
        &foreign.display().to_string(),
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&id), "{stdout}");
    assert!(stdout.contains("not verified: unknown issuer"), "{stdout}");
    assert!(stderr.contains(&port), "the error names the peer: {stderr}");

    // Nothing listening: a clear error naming the address.
    let closed = "127.0.0.1:1";
    let out = mycelctl(&["cert", "inspect", "--handshake", closed, "--timeout", "2s"]).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains(closed), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_files_are_inspected_and_garbage_is_named() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let dir = tempfile::tempdir().unwrap();
    let root = mesh.ca_root().display().to_string();

    // A chain the mesh's own issuer signed: leaf then issuer, verified.
    let id = spiffe("shop", "probe");
    let leaf = TestCa::from_data_dir(&mesh.path("data")).leaf(&id);
    let chain = dir.path().join("chain.pem");
    std::fs::write(&chain, &leaf.chain_pem).unwrap();
    let out = mycelctl(&[
        "cert",
        "inspect",
        &chain.display().to_string(),
        "--ca-root",
        &root,
        "-o",
        "json",
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("-o json parses");
    assert_eq!(doc["chain"][0]["spiffe_id"], id.as_str());
    assert_eq!(doc["chain"][1]["role"], "intermediate");
    assert_eq!(doc["verification"]["status"], "verified");
    assert!(doc.get("handshake").is_none());

    // From standard input, without a bundle: shown, not checked, exit 0.
    let mut child = tokio::process::Command::new(process::bin("mycelctl"))
        .args(["cert", "inspect", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(leaf.chain_pem.as_bytes()).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Source: standard input"), "{stdout}");
    assert!(
        stdout.contains("not checked: no trust bundle given"),
        "{stdout}"
    );

    // Garbage: an error naming the file and what is wrong with it.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not a certificate\n").unwrap();
    let junk = junk.display().to_string();
    let out = mycelctl(&["cert", "inspect", &junk]).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("{junk} is not PEM")), "{stderr}");

    // A key alone: PEM, but no certificate in it.
    let key = dir.path().join("key.pem");
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let key = key.display().to_string();
    let out = mycelctl(&["cert", "inspect", &key]).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{key} holds no CERTIFICATE block")),
        "{stderr}"
    );
}

/// Attack: an endless or huge input (`/dev/zero`) is refused at the cap,
/// naming it, instead of eating memory.
#[tokio::test]
async fn an_endless_pem_input_is_refused_at_the_size_cap() {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        mycelctl(&["cert", "inspect", "/dev/zero"]),
    )
    .await
    .expect("mycelctl cert inspect /dev/zero did not stop");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("/dev/zero is larger than 4194304 bytes"),
        "{stderr}"
    );
}

/// Attack: a server that accepts and never speaks TLS. The handshake gives
/// up after `--timeout`, naming the address and the phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_server_is_named_after_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            conns.push(conn);
        }
    });
    let started = std::time::Instant::now();
    let out = mycelctl(&["cert", "inspect", "--handshake", &addr, "--timeout", "1s"]).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains(&addr) && stderr.contains("no answer within 1s"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    held.abort();
}
