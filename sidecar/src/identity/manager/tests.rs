use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use mycel_api::spiffe::SpiffeId;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::*;
use crate::core::credentials::TrustBundle;
use crate::identity::fake::FakeCa;

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", sa).unwrap()
}

fn manager(ca: FakeCa) -> (IdentityManager<FakeCa>, Arc<IdentityState>) {
    let state = IdentityState::new();
    let metrics = IdentityMetrics::new(&mut Registry::default());
    let m = IdentityManager::new(ca, state.clone(), id("catalog"), None, metrics);
    (m, state)
}

#[test]
fn refresh_at_table() {
    let mono = Instant::now();
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    // (not_before, not_after, wall now, expected wait in milliseconds)
    let cases = [
        (1000, 2000, 1000, 700_000),
        (1000, 2000, 1500, 350_000),
        (1000, 2000, 1700, 210_000),
        (1000, 2000, 1900, 70_000),
        // Backdated by 60 s, 6 s of real life: renew after 4.2 s, not at once.
        (940, 1006, 1000, 4_200),
        (1000, 2000, 2500, 0),
        (1000, 1000, 1000, 0),
        (2000, 1000, 1000, 1_000_000), // inverted validity: renew at not_before
        (0, 86_400, 0, 60_480_000),
    ];
    for (nb, na, now, wait) in cases {
        let got = refresh_at(
            nb,
            na,
            Now {
                wall: at(now),
                mono,
            },
        );
        assert_eq!(
            got - mono,
            Duration::from_millis(wait),
            "{nb}..{na} at {now}"
        );
    }
}

#[tokio::test]
async fn installs_cert_with_expected_identity() {
    let ca = FakeCa::new(id("catalog"), Duration::from_secs(3600));
    let (m, state) = manager(ca.clone());
    m.renew().await.unwrap();
    let cert = state.cert().unwrap();
    assert_eq!(cert.spiffe_id, id("catalog"));
    assert_eq!(cert.not_after_unix - cert.not_before_unix, 3600);
    assert!(!cert.serial_hex.is_empty());
    assert_eq!(state.bundle().roots, vec![ca.root_der()]);
}

#[tokio::test]
async fn passes_requested_ttl() {
    let ca = FakeCa::new(id("catalog"), Duration::from_secs(3600));
    let state = IdentityState::new();
    let metrics = IdentityMetrics::new(&mut Registry::default());
    let ttl = Some(Duration::from_secs(600));
    let m = IdentityManager::new(ca.clone(), state.clone(), id("catalog"), ttl, metrics);
    m.renew().await.unwrap();
    assert_eq!(ca.last_requested_ttl(), ttl);
    let cert = state.cert().unwrap();
    assert_eq!(cert.not_after_unix - cert.not_before_unix, 600);
}

#[tokio::test]
async fn rejects_cert_for_another_identity() {
    let ca = FakeCa::new(id("reviews"), Duration::from_secs(3600));
    let (m, state) = manager(ca);
    let err = m.renew().await.unwrap_err().to_string();
    assert!(
        err.contains("sa/reviews") && err.contains("sa/catalog"),
        "{err}"
    );
    assert!(!state.has_cert());
}

async fn wait_issued(ca: &FakeCa, n: usize) {
    for _ in 0..10_000 {
        if ca.issued() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never reached {n} certificates");
}

#[tokio::test(start_paused = true)]
async fn renews_at_seventy_percent() {
    let ca = FakeCa::new(id("catalog"), Duration::from_secs(1000));
    let (m, state) = manager(ca.clone());
    let task = tokio::spawn(m.run());
    wait_issued(&ca, 1).await;
    let start = Instant::now();
    let first = state.cert().unwrap().serial_hex.clone();

    // Wall time does not advance with paused time, so the second cert's
    // validity matches the first's; allow a second for the wall clock.
    tokio::time::sleep(Duration::from_secs(690)).await;
    assert_eq!(ca.issued(), 1, "renewed too early");
    wait_issued(&ca, 2).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(698) && waited <= Duration::from_secs(702),
        "{waited:?}"
    );
    assert_ne!(state.cert().unwrap().serial_hex, first);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn retries_with_backoff_and_keeps_old_cert() {
    let ca = FakeCa::new(id("catalog"), Duration::from_secs(100));
    let (m, state) = manager(ca.clone());
    let task = tokio::spawn(m.run());
    wait_issued(&ca, 1).await;
    let first = state.cert().unwrap().serial_hex.clone();
    ca.set_failing(true);

    // Due at 70 s; then retries at growing, jittered intervals.
    for _ in 0..10_000 {
        if ca.calls() >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state.cert().unwrap().serial_hex, first, "old cert kept");
    let times = ca.call_times();
    assert!(times.len() >= 7, "{} calls", times.len());
    let due = times[1] - times[0];
    assert!(
        due >= Duration::from_secs(69) && due <= Duration::from_secs(71),
        "{due:?}"
    );
    for (i, pair) in times[1..].windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let ceiling = CERT_BACKOFF.ceiling(i as u32);
        assert!(
            gap >= ceiling / 2 && gap <= ceiling,
            "gap {i}: {gap:?} vs ceiling {ceiling:?}"
        );
    }

    ca.set_failing(false);
    wait_issued(&ca, 2).await;
    assert_ne!(state.cert().unwrap().serial_hex, first);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn first_cert_retries_until_ca_answers() {
    let ca = FakeCa::new(id("catalog"), Duration::from_secs(100));
    ca.set_failing(true);
    let (m, state) = manager(ca.clone());
    let task = tokio::spawn(m.run());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(ca.calls() >= 2);
    assert!(!state.has_cert());
    ca.set_failing(false);
    wait_issued(&ca, 1).await;
    assert!(state.has_cert());
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn refused_first_certificate_stops_the_manager() {
    for code in [
        tonic::Code::Unauthenticated,
        tonic::Code::PermissionDenied,
        tonic::Code::InvalidArgument,
    ] {
        let ca = FakeCa::new(id("catalog"), Duration::from_secs(100));
        ca.set_refusing(Some(code));
        let (m, state) = manager(ca.clone());
        let err = m.run().await.unwrap_err();
        assert!(err.is_permanent(), "{code:?}: {err}");
        assert_eq!(ca.calls(), 1, "{code:?}: no retry");
        assert!(!state.has_cert());
    }
}

#[tokio::test(start_paused = true)]
async fn refusal_after_the_first_certificate_keeps_retrying() {
    let ca = FakeCa::new(id("catalog"), Duration::from_secs(100));
    let (m, state) = manager(ca.clone());
    let task = tokio::spawn(m.run());
    wait_issued(&ca, 1).await;
    ca.set_refusing(Some(tonic::Code::PermissionDenied));
    for _ in 0..10_000 {
        if ca.calls() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ca.calls() >= 3, "kept retrying");
    assert!(!task.is_finished());
    assert!(state.has_cert(), "old certificate kept");
    task.abort();
}

#[test]
fn unavailable_is_transient() {
    let e = IdentityError::Ca(CaError::Rejected {
        code: tonic::Code::Unavailable,
        message: String::new(),
    });
    assert!(!e.is_permanent());
    let e = IdentityError::Ca(CaError::Token(std::io::Error::from(
        std::io::ErrorKind::NotFound,
    )));
    assert!(e.is_permanent());
}

/// A trust bundle whose first root the current leaf does not chain to (a
/// trust-anchor rotation) makes the proxy renew at once, once.
#[tokio::test(start_paused = true)]
async fn a_new_first_root_triggers_one_early_renewal() {
    let ca = FakeCa::new(id("catalog"), Duration::from_secs(3600));
    let (m, state) = manager(ca.clone());
    let task = tokio::spawn(m.run());
    let mut changes = state.changes();
    while !state.has_cert() {
        changes.changed().await.unwrap();
    }
    assert_eq!(ca.calls(), 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ca.calls(), 1, "no renewal before 70% without a new root");

    let other = FakeCa::new(id("catalog"), Duration::from_secs(3600));
    let mut roots = vec![other.root_der()];
    roots.extend(state.bundle().roots.iter().cloned());
    state.set_bundle(TrustBundle::new(roots));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ca.calls(), 2, "renewed early");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(ca.calls(), 2, "once per bundle, not in a loop");
    task.abort();
}

#[test]
fn chains_to_first_root_table() {
    let ca = FakeCa::new(id("catalog"), Duration::from_secs(3600));
    let other = FakeCa::new(id("catalog"), Duration::from_secs(3600));
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let chain = vec![ca
        .sign(csr.der(), &id("catalog"), Duration::from_secs(60))
        .unwrap()];
    let bundle = |roots: Vec<_>| TrustBundle::new(roots);
    assert!(chains_to_first_root(&chain, &bundle(vec![ca.root_der()])));
    assert!(chains_to_first_root(
        &chain,
        &bundle(vec![ca.root_der(), other.root_der()])
    ));
    assert!(!chains_to_first_root(
        &chain,
        &bundle(vec![other.root_der(), ca.root_der()])
    ));
    assert!(
        chains_to_first_root(&chain, &bundle(vec![])),
        "no bundle: nothing to chase"
    );
}
