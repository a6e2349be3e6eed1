//! The global limiter against a real `redis-server` (skipped, loudly, when
//! it is not installed), and against fake servers for what Redis does not
//! do on demand (hang).

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::*;
use crate::gateway::ratelimit::testing::RedisServer;

fn limit(requests: u32, per_ms: u64, burst: Option<u32>) -> Limit {
    Limit::new(requests, Duration::from_millis(per_ms), burst).unwrap()
}

fn policy(name: &str, limit: Limit, on_failure: FailureMode) -> GlobalPolicy {
    GlobalPolicy::new(name, limit, on_failure).unwrap()
}

/// A limiter whose connection is up (bounded wait).
async fn connected(config: RedisConfig) -> GlobalLimiter {
    let limiter = GlobalLimiter::new(config);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Reply::Simple(pong)) = limiter.raw(&[b"PING"]).await {
            assert_eq!(pong, "PONG");
            return limiter;
        }
        assert!(Instant::now() < deadline, "no Redis connection within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_limit_within_5_percent() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Two replicas: two limiters, two connections. A generous timeout: this
    // test is about accuracy, and a decision that timed out may still have
    // been counted by Redis without the test seeing it.
    let config = RedisConfig {
        timeout: Duration::from_secs(2),
        ..RedisConfig::new(redis.addr())
    };
    let replicas = [connected(config.clone()).await, connected(config).await];
    let p = Arc::new(policy(
        "accuracy",
        limit(100, 1000, None),
        FailureMode::Closed,
    ));
    let run_for = Duration::from_secs(3);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (replica, limiter) in replicas.iter().enumerate() {
        for _ in 0..4 {
            let (limiter, p) = (limiter.clone(), p.clone());
            tasks.spawn(async move {
                let (mut allowed, mut errors, mut sent) = (0u64, 0u64, 0u64);
                // Bounded in time and count; about 8 × 700 requests/s
                // offered against 100/s allowed.
                while start.elapsed() < run_for && sent < 20_000 {
                    sent += 1;
                    match limiter.try_check(&p, "one-client").await {
                        Ok(d) if d.is_allowed() => allowed += 1,
                        Ok(_) => {}
                        Err(e) => {
                            errors += 1;
                            eprintln!("replica {replica}: {e}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                (replica, allowed, errors, sent)
            });
        }
    }
    let (mut allowed, mut errors, mut sent) = ([0u64; 2], 0, 0);
    while let Some(r) = tasks.join_next().await {
        let (replica, a, e, s) = r.unwrap();
        allowed[replica] += a;
        errors += e;
        sent += s;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total = allowed[0] + allowed[1];
    // A full bucket at the start, then 100 per second.
    let expected = 100.0 + 100.0 * elapsed;
    let ratio = total as f64 / expected;
    eprintln!(
        "accuracy: {total} allowed ({} + {}) of {sent} sent in {elapsed:.3} s; \
         expected {expected:.1}; ratio {ratio:.4}",
        allowed[0], allowed[1]
    );
    assert_eq!(errors, 0);
    assert!(
        sent > 10 * total,
        "the limit was not exceeded enough to test it"
    );
    // Both replicas were limited by the shared count, not each by its own.
    assert!(allowed[0] > 0 && allowed[1] > 0, "{allowed:?}");
    assert!((0.95..=1.05).contains(&ratio), "ratio {ratio:.4}");
}

#[tokio::test]
async fn redis_down_fails_by_policy_and_counts_then_limiting_resumes() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let limiter = connected(RedisConfig::new(redis.addr())).await;
    let open = policy("open", limit(1000, 1000, None), FailureMode::Open);
    let closed = policy("closed", limit(1000, 1000, None), FailureMode::Closed);
    assert!(matches!(
        limiter.check(&open, "c").await,
        Outcome::Decided(Decision::Allowed { .. })
    ));
    assert!(matches!(
        limiter.check(&closed, "c").await,
        Outcome::Decided(Decision::Allowed { .. })
    ));
    assert_eq!(limiter.failures().snapshot(), FailureCounts::default());

    // Killed mid-way through a load: every decision in flight or sent
    // after is answered, within its deadline, by the policy.
    let (open, closed) = (Arc::new(open), Arc::new(closed));
    let mut load = JoinSet::new();
    for i in 0..4 {
        let (limiter, p) = (
            limiter.clone(),
            [open.clone(), closed.clone()][i % 2].clone(),
        );
        load.spawn(async move {
            let (mut decided, mut failed, mut slowest) = (0u32, 0u32, Duration::ZERO);
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(600) && decided + failed < 50_000 {
                let t = Instant::now();
                let outcome = limiter.check(&p, "c").await;
                slowest = slowest.max(t.elapsed());
                match outcome {
                    Outcome::Decided(_) => decided += 1,
                    Outcome::FailedOpen | Outcome::FailedClosed => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (decided, failed, slowest)
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.kill();
    while let Some(r) = load.join_next().await {
        let (decided, failed, slowest) = r.unwrap();
        assert!(
            decided > 0 && failed > 0,
            "{decided} decided, {failed} failed"
        );
        assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    }
    let before = limiter.failures().snapshot();
    assert!(before.total() > 0);
    for _ in 0..20 {
        let started = Instant::now();
        let o = limiter.check(&open, "c").await;
        assert_eq!(o, Outcome::FailedOpen);
        assert!(o.is_allowed());
        assert_eq!(o.refusal(), None);
        let c = limiter.check(&closed, "c").await;
        assert_eq!(c, Outcome::FailedClosed);
        assert_eq!(c.refusal(), Some(StatusCode::SERVICE_UNAVAILABLE));
        // Each decision within its timeout (and then some for a busy
        // machine), never stuck on the dead server.
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    let counts = limiter.failures().snapshot();
    eprintln!("failures while Redis was down: {counts:?}");
    assert_eq!(counts.total() - before.total(), 40);
    assert_eq!(counts.allowed_open - before.allowed_open, 20);
    assert_eq!(counts.refused_closed - before.refused_closed, 20);

    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Outcome::Decided(_) = limiter.check(&closed, "c").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "limiting did not resume within 5 s of Redis coming back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let small = policy("small", limit(3, 10_000, None), FailureMode::Open);
    for _ in 0..3 {
        assert!(limiter.check(&small, "c").await.is_allowed());
    }
    let refused = limiter.check(&small, "c").await;
    assert!(matches!(
        refused,
        Outcome::Decided(Decision::Limited { .. })
    ));
    assert_eq!(refused.refusal(), Some(StatusCode::TOO_MANY_REQUESTS));
}

#[tokio::test]
async fn decisions_match_the_local_limiter_and_keys_expire() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let limiter = connected(RedisConfig::new(redis.addr())).await;
    // 3 at once, one back every 100 ms.
    let p = policy("expiry", limit(3, 300, None), FailureMode::Closed);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        match limiter.try_check(&p, "client").await.unwrap() {
            Decision::Allowed {
                remaining: r,
                reset,
            } => {
                assert!(reset <= Duration::from_millis(300), "{reset:?}");
                remaining.push(r);
            }
            d => panic!("{d:?}"),
        }
    }
    assert_eq!(remaining, [2, 1, 0]);
    match limiter.try_check(&p, "client").await.unwrap() {
        Decision::Limited { retry_after, reset } => {
            assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}");
            assert!(reset <= Duration::from_millis(300), "{reset:?}");
        }
        d => panic!("{d:?}"),
    }
    let key = p.redis_key("client");
    assert_eq!(key, "mycel:rl:expiry:client");
    match limiter.raw(&[b"PTTL", key.as_bytes()]).await.unwrap() {
        Reply::Integer(ms) => assert!((1..=300).contains(&ms), "PTTL {ms}"),
        r => panic!("{r:?}"),
    }
    // A huge client key makes a short Redis key.
    let huge = "h".repeat(100_000);
    assert!(limiter.try_check(&p, &huge).await.unwrap().is_allowed());
    let huge_key = p.redis_key(&huge);
    assert!(huge_key.len() < 100, "{huge_key}");
    // Idle keys vanish once their bucket is full again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for k in [&key, &huge_key] {
        assert_eq!(
            limiter.raw(&[b"EXISTS", k.as_bytes()]).await.unwrap(),
            Reply::Integer(0),
            "{k}"
        );
    }
    assert!(limiter.try_check(&p, "client").await.unwrap().is_allowed());
}

#[tokio::test]
async fn a_flushed_script_is_sent_again() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let limiter = connected(RedisConfig::new(redis.addr())).await;
    let p = policy("noscript", limit(10, 1000, None), FailureMode::Closed);
    assert!(limiter.try_check(&p, "c").await.unwrap().is_allowed());
    assert_eq!(
        limiter.raw(&[b"SCRIPT", b"FLUSH"]).await.unwrap(),
        Reply::Simple("OK".into())
    );
    // EVALSHA misses once, EVAL runs and caches it, EVALSHA hits again.
    for _ in 0..3 {
        assert!(limiter.try_check(&p, "c").await.unwrap().is_allowed());
    }
    let Reply::Bulk(Some(stats)) = limiter.raw(&[b"INFO", b"commandstats"]).await.unwrap() else {
        panic!("INFO did not answer a bulk string");
    };
    let stats = String::from_utf8_lossy(&stats);
    assert!(stats.contains("cmdstat_eval:calls=1,"), "{stats}");
    assert!(stats.contains("cmdstat_evalsha:calls="), "{stats}");
}

#[tokio::test]
async fn nothing_listening_fails_at_once() {
    // A port just freed: connection refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let limiter = GlobalLimiter::new(RedisConfig {
        timeout: Duration::from_secs(2),
        ..RedisConfig::new(addr.to_string())
    });
    let closed = policy("closed", limit(10, 1000, None), FailureMode::Closed);
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(limiter.check(&closed, "c").await, Outcome::FailedClosed);
        // Refused by the connection task at once, not waited out.
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let counts = limiter.failures().snapshot();
    assert_eq!(counts.refused_closed, 5);
    assert_eq!(counts.total(), 5);
}

/// A server that answers `SCRIPT LOAD` and then nothing: every decision
/// times out, by its deadline.
#[tokio::test]
async fn a_hung_server_times_out_by_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        // Bounded: the test aborts this task at its end.
        while !seen.windows(4).any(|w| w == b"LOAD") || !seen.ends_with(b"\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
        let sha = "0".repeat(40);
        s.write_all(format!("$40\r\n{sha}\r\n").as_bytes())
            .await
            .unwrap();
        loop {
            if s.read(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        }
    });
    let limiter = GlobalLimiter::new(RedisConfig::new(addr.to_string()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while limiter.conn.script_sha().is_none() {
        assert!(Instant::now() < deadline, "no connection within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let open = policy("open", limit(10, 1000, None), FailureMode::Open);
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(limiter.check(&open, "c").await, Outcome::FailedOpen);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_millis(500),
            "{took:?}"
        );
    }
    let counts = limiter.failures().snapshot();
    assert_eq!(counts.timeout, 3);
    assert_eq!(counts.allowed_open, 3);
    server.abort();
}

#[test]
fn policy_names_are_checked() {
    let l = limit(1, 1000, None);
    assert_eq!(
        GlobalPolicy::new("", l, FailureMode::Open),
        Err(PolicyNameError::Empty)
    );
    assert_eq!(
        GlobalPolicy::new(&"p".repeat(65), l, FailureMode::Open),
        Err(PolicyNameError::TooLong(65))
    );
    assert_eq!(
        GlobalPolicy::new("a:b", l, FailureMode::Open),
        Err(PolicyNameError::Character("a:b".into()))
    );
    let p = GlobalPolicy::new("shop/checkout-api_v1.2", l, FailureMode::Open).unwrap();
    assert_eq!(
        p.redis_key("10.0.0.1"),
        "mycel:rl:shop/checkout-api_v1.2:10.0.0.1"
    );
    // The script's arguments: whole microseconds.
    let p = GlobalPolicy::new("p", limit(3, 1000, Some(2)), FailureMode::Open).unwrap();
    assert_eq!(p.interval_us, "333333");
    assert_eq!(p.capacity_us, "666666");
}

#[test]
fn script_replies_are_checked() {
    let ints = |v: &[i64]| Reply::Array(Some(v.iter().map(|i| Reply::Integer(*i)).collect()));
    assert_eq!(
        decision(ints(&[1, 4, 2000])),
        Ok(Decision::Allowed {
            remaining: 4,
            reset: Duration::from_millis(2)
        })
    );
    assert_eq!(
        decision(ints(&[0, 1500, 9000])),
        Ok(Decision::Limited {
            retry_after: Duration::from_micros(1500),
            reset: Duration::from_millis(9)
        })
    );
    for bad in [
        ints(&[1, 4]),
        ints(&[2, 4, 5]),
        ints(&[1, -4, 5]),
        ints(&[1, 4, 5, 6]),
        Reply::Array(Some(vec![
            Reply::Integer(1),
            Reply::Bulk(None),
            Reply::Integer(1),
        ])),
        Reply::Integer(1),
        Reply::Array(None),
    ] {
        assert!(
            matches!(decision(bad.clone()), Err(RedisError::Protocol(_))),
            "{bad:?}"
        );
    }
    assert_eq!(
        decision(Reply::Error("ERR boom".into())),
        Err(RedisError::Server("ERR boom".into()))
    );
}
