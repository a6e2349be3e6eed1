use super::*;

fn cfg(ratio: f64, min_per_second: u32, window_secs: u64) -> RetryBudget {
    RetryBudget {
        ratio,
        min_per_second,
        window: Duration::from_secs(window_secs),
    }
}

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// Every request fails and wants `retries_each` retries; returns the
/// requests and granted retries of each second.
fn run(
    budget: &Budget,
    t0: Instant,
    secs: u64,
    per_sec: u64,
    retries_each: u32,
) -> Vec<(u64, u64)> {
    let mut seconds = Vec::new();
    for s in 0..secs {
        let (mut requests, mut retries) = (0, 0);
        for i in 0..per_sec {
            let now = at(t0, s * 1000 + i * 1000 / per_sec);
            budget.record_request(now);
            requests += 1;
            for _ in 0..retries_each {
                if budget.try_retry(now) {
                    retries += 1;
                }
            }
        }
        seconds.push((requests, retries));
    }
    seconds
}

#[test]
fn failing_service_retries_at_most_ratio_plus_floor() {
    let t0 = Instant::now();
    let budget = Budget::new(&cfg(0.2, 10, 10));
    let seconds = run(&budget, t0, 60, 100, 2);
    for end in 0..seconds.len() {
        let window = &seconds[end.saturating_sub(9)..=end];
        let requests: u64 = window.iter().map(|s| s.0).sum();
        let retries: u64 = window.iter().map(|s| s.1).sum();
        let allowed = 0.2 * requests as f64 + 100.0;
        assert!(
            retries as f64 <= allowed,
            "second {end}: {retries} > {allowed}"
        );
    }
    let requests: u64 = seconds.iter().map(|s| s.0).sum();
    let retries: u64 = seconds.iter().map(|s| s.1).sum();
    // Six windows: at most 20% of 6000 plus six floors of 100; and the
    // budget is really spent, not refused outright.
    assert_eq!(requests, 6000);
    assert!(retries <= 1200 + 600, "{retries}");
    assert!(retries >= 1200, "{retries}");
}

#[test]
fn floor_lets_a_quiet_service_retry() {
    let t0 = Instant::now();
    let budget = Budget::new(&cfg(0.2, 10, 10));
    // One request every other second, each retried twice: all granted.
    for s in 0..30 {
        let now = at(t0, s * 2000);
        budget.record_request(now);
        assert!(budget.try_retry(now), "second {}", s * 2);
        assert!(budget.try_retry(now), "second {}", s * 2);
    }

    // Without a floor the same service gets 20% of its requests.
    let budget = Budget::new(&cfg(0.2, 0, 10));
    let seconds = run(&budget, t0, 30, 1, 1);
    for end in 9..seconds.len() {
        let retries: u64 = seconds[end - 9..=end].iter().map(|s| s.1).sum();
        assert!(retries <= 2, "second {end}: {retries}");
    }
    assert!(seconds.iter().map(|s| s.1).sum::<u64>() >= 5);
}

#[test]
fn spent_budget_returns_as_the_window_slides() {
    let t0 = Instant::now();
    let budget = Budget::new(&cfg(0.0, 1, 3));
    // Floor of 1/s over 3 s: three retries in seconds 0, 1 and 2, then
    // none while they are all in the window.
    for ms in [0, 1000, 2000] {
        assert!(budget.try_retry(at(t0, ms)), "{ms}");
    }
    assert!(!budget.try_retry(at(t0, 2999)));
    // Second 0 leaves the window at second 3: one retry back.
    assert!(budget.try_retry(at(t0, 3000)));
    assert!(!budget.try_retry(at(t0, 3500)));
    // Long idle: the whole floor is back.
    for _ in 0..3 {
        assert!(budget.try_retry(at(t0, 60_000)));
    }
    assert!(!budget.try_retry(at(t0, 60_000)));
    // An instant before the first one counts in the first second.
    let early = Budget::new(&cfg(0.0, 1, 1));
    assert!(early.try_retry(at(t0, 5000)));
    assert!(!early.try_retry(at(t0, 1000)));
}

#[test]
fn odd_configs_stay_safe() {
    let t0 = Instant::now();
    // NaN or negative ratio and no floor: no retries at all.
    for ratio in [f64::NAN, -1.0, f64::INFINITY] {
        let budget = Budget::new(&cfg(ratio, 0, 10));
        budget.record_request(t0);
        assert!(!budget.try_retry(t0), "{ratio}");
    }
    // A zero window is one second; a fractional one rounds up.
    assert_eq!(window_secs(Duration::ZERO), 1);
    assert_eq!(window_secs(Duration::from_millis(1500)), 2);
    assert_eq!(window_secs(Duration::from_secs(u64::MAX)), MAX_WINDOW_SECS);
}

#[test]
fn retries_are_never_granted_twice_under_concurrency() {
    let t0 = Instant::now();
    let budget = Budget::new(&cfg(0.2, 5, 10));
    for _ in 0..1000 {
        budget.record_request(t0);
    }
    let granted = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..100 {
                    if budget.try_retry(t0) {
                        granted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    // 0.2 * 1000 + 5 * 10.
    assert_eq!(granted.into_inner(), 250);
}

#[test]
fn budgets_follow_config_and_stay_bounded() {
    let t0 = Instant::now();
    let budgets = Budgets::new(2);
    let tight = cfg(0.0, 1, 1);
    let a = budgets.get("a.shop", &tight, t0);
    assert!(a.try_retry(t0));
    assert!(!a.try_retry(t0));
    // A wider floor, same window: counts kept, more allowed.
    let wider = cfg(0.0, 3, 1);
    let a2 = budgets.get("a.shop", &wider, at(t0, 10));
    assert!(Arc::ptr_eq(&a, &a2));
    assert!(a.try_retry(at(t0, 10)));
    assert!(a.try_retry(at(t0, 10)));
    assert!(!a.try_retry(at(t0, 10)));

    let b = budgets.get("b.shop", &tight, at(t0, 20));
    let _ = budgets.get("a.shop", &wider, at(t0, 30));
    // Full: c pushes out b, the least recently used.
    let _ = budgets.get("c.shop", &tight, at(t0, 40));
    assert_eq!(budgets.len(), 2);
    assert!(Arc::ptr_eq(&a, &budgets.get("a.shop", &wider, at(t0, 50))));
    assert!(!Arc::ptr_eq(&b, &budgets.get("b.shop", &tight, at(t0, 60))));
    assert_eq!(budgets.len(), 2);
}
