//! Token buckets for Certify: one global, one per source IP, so one caller
//! flooding the CA (with unknown tokens, say) is refused quickly without
//! starving everyone else, and the whole controller has a ceiling.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Source IPs remembered at most; beyond it, full (idle) buckets are
/// dropped, and if none is idle the oldest are, so spoofed-looking spread
/// cannot grow memory.
const MAX_TRACKED_IPS: usize = 4096;

/// A rate (per second) and a burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// The Certify limits; see docs/architecture.md for the defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CertifyLimits {
    pub global: Rate,
    pub per_ip: Rate,
}

impl Default for CertifyLimits {
    fn default() -> Self {
        Self {
            global: Rate {
                per_second: 100.0,
                burst: 200,
            },
            per_ip: Rate {
                per_second: 20.0,
                burst: 50,
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.at = now;
    }
}

/// Which limit refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    #[error("too many Certify calls from this address; retry later")]
    PerIp,
    #[error("too many Certify calls to this controller; retry later")]
    Global,
}

pub struct RateLimiter {
    limits: CertifyLimits,
    state: Mutex<(Bucket, HashMap<IpAddr, Bucket>)>,
}

impl RateLimiter {
    pub fn new(limits: CertifyLimits) -> Self {
        Self {
            limits,
            state: Mutex::new((Bucket::full(limits.global, Instant::now()), HashMap::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (Bucket, HashMap<IpAddr, Bucket>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one token from the caller's bucket and the global one.
    pub fn check(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), Limited> {
        let (global_rate, ip_rate) = (self.limits.global, self.limits.per_ip);
        let mut guard = self.lock();
        let (global, per_ip) = &mut *guard;
        if let Some(ip) = ip.map(|ip| ip.to_canonical()) {
            if !per_ip.contains_key(&ip) && per_ip.len() >= MAX_TRACKED_IPS {
                prune(per_ip, ip_rate, now);
            }
            let b = per_ip
                .entry(ip)
                .or_insert_with(|| Bucket::full(ip_rate, now));
            b.refill(ip_rate, now);
            if b.tokens < 1.0 {
                return Err(Limited::PerIp);
            }
            global.refill(global_rate, now);
            if global.tokens < 1.0 {
                return Err(Limited::Global);
            }
            b.tokens -= 1.0;
            global.tokens -= 1.0;
            return Ok(());
        }
        global.refill(global_rate, now);
        if global.tokens < 1.0 {
            return Err(Limited::Global);
        }
        global.tokens -= 1.0;
        Ok(())
    }
}

fn prune(per_ip: &mut HashMap<IpAddr, Bucket>, rate: Rate, now: Instant) {
    let refill_time = Duration::from_secs_f64(f64::from(rate.burst) / rate.per_second.max(1e-3));
    per_ip.retain(|_, b| now.saturating_duration_since(b.at) < refill_time);
    if per_ip.len() >= MAX_TRACKED_IPS {
        let mut ats: Vec<Instant> = per_ip.values().map(|b| b.at).collect();
        ats.sort();
        let cut = ats[ats.len() / 2];
        per_ip.retain(|_, b| b.at > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(g: (f64, u32), p: (f64, u32)) -> CertifyLimits {
        CertifyLimits {
            global: Rate {
                per_second: g.0,
                burst: g.1,
            },
            per_ip: Rate {
                per_second: p.0,
                burst: p.1,
            },
        }
    }

    #[test]
    fn per_ip_burst_then_refill_and_others_unaffected() {
        let now = Instant::now();
        let rl = RateLimiter::new(limits((1000.0, 1000), (2.0, 3)));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(rl.check(Some(a), now), Ok(()));
        }
        assert_eq!(rl.check(Some(a), now), Err(Limited::PerIp));
        assert_eq!(
            rl.check(Some(b), now),
            Ok(()),
            "another caller is not starved"
        );
        let later = now + Duration::from_millis(500);
        assert_eq!(
            rl.check(Some(a), later),
            Ok(()),
            "one token back after 0.5 s"
        );
        assert_eq!(rl.check(Some(a), later), Err(Limited::PerIp));
    }

    #[test]
    fn global_ceiling() {
        let now = Instant::now();
        let rl = RateLimiter::new(limits((1.0, 2), (100.0, 100)));
        assert!(rl.check(Some("10.0.0.1".parse().unwrap()), now).is_ok());
        assert!(rl.check(Some("10.0.0.2".parse().unwrap()), now).is_ok());
        assert_eq!(
            rl.check(Some("10.0.0.3".parse().unwrap()), now),
            Err(Limited::Global)
        );
        assert_eq!(rl.check(None, now), Err(Limited::Global));
    }

    #[test]
    fn tracked_ips_are_bounded() {
        let now = Instant::now();
        let rl = RateLimiter::new(limits((1e9, u32::MAX), (1.0, 5)));
        for i in 0..(MAX_TRACKED_IPS as u32 * 2) {
            let ip = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            let _ = rl.check(Some(ip), now + Duration::from_millis(u64::from(i)));
        }
        assert!(rl.lock().1.len() <= MAX_TRACKED_IPS);
    }
}
