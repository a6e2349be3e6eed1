use std::sync::Mutex as StdMutex;

use tokio::sync::Barrier;

use super::*;

fn cfg(max_requests: u32, per_endpoint: u32) -> CircuitBreaker {
    CircuitBreaker {
        max_connections: 2,
        max_pending_requests: 3,
        max_requests,
        max_requests_per_endpoint: per_endpoint,
    }
}

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 15008))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_hold_exactly_under_concurrency() {
    let breakers = Arc::new(Breakers::default());
    let cfg = cfg(10, 0);
    let tasks = 64;
    // Every task tries while all the others hold what they got: exactly
    // max_requests succeed.
    let tried = Arc::new(Barrier::new(tasks));
    let held = Arc::new(StdMutex::new(Vec::new()));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (breakers, cfg, tried, held) =
            (breakers.clone(), cfg.clone(), tried.clone(), held.clone());
        handles.push(tokio::spawn(async move {
            let permit = breakers.request("catalog.shop", &cfg, addr(1));
            let ok = permit.is_ok();
            tried.wait().await;
            held.lock().unwrap().push(permit);
            ok
        }));
    }
    let mut granted = 0;
    for h in handles {
        granted += usize::from(h.await.unwrap());
    }
    assert_eq!(granted, 10);
    let refused: Vec<Overflow> = held
        .lock()
        .unwrap()
        .drain(..)
        .filter_map(Result::err)
        .collect();
    assert_eq!(refused.len(), 54);
    assert_eq!(
        refused[0].to_string(),
        "max_requests 10 reached for catalog.shop"
    );
    // Every permit is back: the full limit is free again.
    let again: Vec<_> = (0..10)
        .map(|_| breakers.request("catalog.shop", &cfg, addr(1)).unwrap())
        .collect();
    assert!(breakers.request("catalog.shop", &cfg, addr(1)).is_err());
    drop(again);
}

#[test]
fn permits_are_returned_on_drop() {
    let breakers = Breakers::default();
    let cfg = cfg(1, 0);
    let first = breakers.request("a.shop", &cfg, addr(1)).unwrap();
    assert!(breakers.request("a.shop", &cfg, addr(2)).is_err());
    // Other services have their own counts.
    let other = breakers.request("b.shop", &cfg, addr(1)).unwrap();
    drop(first);
    let second = breakers.request("a.shop", &cfg, addr(2)).unwrap();
    drop((second, other));

    let pending: Vec<_> = (0..3)
        .map(|_| breakers.pending("a.shop", &cfg).unwrap())
        .collect();
    let err = breakers.pending("a.shop", &cfg).unwrap_err();
    assert_eq!(err.to_string(), "max_pending_requests 3 reached for a.shop");
    drop(pending);
    assert!(breakers.pending("a.shop", &cfg).is_ok());

    let tunnels: Vec<_> = (0..2)
        .map(|_| breakers.connection("a.shop", &cfg).unwrap())
        .collect();
    let err = breakers.connection("a.shop", &cfg).unwrap_err();
    assert_eq!(err.limit, Limit::MaxConnections);
    assert_eq!(err.to_string(), "max_connections 2 reached for a.shop");
    drop(tunnels);
    assert!(breakers.connection("a.shop", &cfg).is_ok());
}

#[test]
fn per_endpoint_limits_are_independent() {
    let breakers = Breakers::default();
    let cfg = cfg(100, 2);
    let on_1: Vec<_> = (0..2)
        .map(|_| breakers.request("a.shop", &cfg, addr(1)).unwrap())
        .collect();
    let err = breakers.request("a.shop", &cfg, addr(1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "max_requests_per_endpoint 2 reached for a.shop at 10.0.0.1:15008"
    );
    let on_2: Vec<_> = (0..2)
        .map(|_| breakers.request("a.shop", &cfg, addr(2)).unwrap())
        .collect();
    // A refusal by the endpoint limit gives the service count back (and
    // leaves the endpoint's alone): with four out of max_requests 5,
    // after three refusals on endpoint 1 a fifth request still fits
    // elsewhere, and only a sixth hits the service limit.
    let tight = CircuitBreaker {
        max_requests: 5,
        ..cfg.clone()
    };
    for _ in 0..3 {
        let r = breakers.request("a.shop", &tight, addr(1));
        assert!(r.is_err(), "{r:?}");
    }
    let fifth = breakers.request("a.shop", &tight, addr(3)).unwrap();
    assert_eq!(
        breakers
            .request("a.shop", &tight, addr(4))
            .unwrap_err()
            .limit,
        Limit::MaxRequests
    );
    drop(on_1);
    assert!(breakers.request("a.shop", &cfg, addr(1)).is_ok());
    drop((on_2, fifth));
}

#[test]
fn lowered_limit_applies_to_new_requests() {
    let breakers = Breakers::default();
    let held: Vec<_> = (0..5)
        .map(|_| breakers.request("a.shop", &cfg(10, 0), addr(1)).unwrap())
        .collect();
    // Now 3: the five in flight stay, new ones wait for the count to fall.
    let lower = cfg(3, 0);
    assert!(breakers.request("a.shop", &lower, addr(1)).is_err());
    let mut held = held;
    held.truncate(3);
    assert!(breakers.request("a.shop", &lower, addr(1)).is_err());
    held.truncate(2);
    let one = breakers.request("a.shop", &lower, addr(1)).unwrap();
    assert!(breakers.request("a.shop", &lower, addr(1)).is_err());
    // Raised again: room at once.
    assert!(breakers.request("a.shop", &cfg(10, 0), addr(1)).is_ok());
    drop((held, one));
    // Zero per endpoint is no limit; zero elsewhere sheds everything.
    let many: Vec<_> = (0..50)
        .map(|_| breakers.request("a.shop", &cfg(100, 0), addr(1)).unwrap())
        .collect();
    assert!(breakers.request("a.shop", &cfg(0, 0), addr(2)).is_err());
    drop(many);
}

#[test]
fn idle_services_are_forgotten_when_full() {
    let breakers = Breakers::new(2);
    let cfg = cfg(1, 1);
    let busy = breakers.request("a.shop", &cfg, addr(1)).unwrap();
    drop(breakers.request("b.shop", &cfg, addr(1)).unwrap());
    // Full: b is idle and goes, a keeps its count.
    let _c = breakers.request("c.shop", &cfg, addr(1)).unwrap();
    assert_eq!(breakers.len(), 2);
    assert!(breakers.request("a.shop", &cfg, addr(1)).is_err());
    // All busy: the map grows rather than lose a count.
    let _d = breakers.request("d.shop", &cfg, addr(1)).unwrap();
    assert_eq!(breakers.len(), 3);
    drop(busy);
    assert!(breakers.request("a.shop", &cfg, addr(1)).is_ok());
}
