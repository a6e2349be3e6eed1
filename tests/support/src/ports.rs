//! Ports for processes a test or the bench starts and tells where to
//! listen: a block for those that take a base port on their command line
//! (`mycelctl demo --base-port`, the local example's controller), a single
//! port for the rest (etcd, kube-apiserver, the controller's webhook, the
//! bench's proxies, redis-server).
//!
//! Every other socket binds port 0 or connects, and so lands in the kernel's
//! ephemeral range. A port found free there can be taken by an outgoing
//! connection before the process binds it; a block chosen from below that
//! range cannot be. Blocks are handed out from a per-process counter (seeded
//! by the pid, so two test binaries running at once start far apart), and
//! each is checked by binding every port before it is returned.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out (well clear of well-known services).
const LOW: u32 = 10_000;
/// The kernel's default ephemeral range starts here; used when the real one
/// cannot be read.
const DEFAULT_EPHEMERAL_START: u32 = 32_768;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

/// Whether every port of `first..first+span` is free on 127.0.0.1 and
/// 127.0.0.2 (the demo puts a second app on the second loopback address).
fn block_is_free(first: u32, span: u32) -> bool {
    (first..first + span).all(|port| {
        let Ok(port) = u16::try_from(port) else {
            return false;
        };
        [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
    })
}

/// The first port of `span` consecutive ports, all free right now and all
/// below the ephemeral range. Panics if no such block is found, which only a
/// machine with thousands of fixed listeners would cause.
pub fn free_block(span: u16) -> u16 {
    let span = u32::from(span);
    let high = ephemeral_start().max(LOW + span * 4);
    let blocks = (high - LOW) / span;
    let seed = std::process::id() % blocks;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..blocks {
        let block = NEXT.fetch_add(1, Ordering::SeqCst) % blocks;
        let first = LOW + block * span;
        if block_is_free(first, span) {
            return u16::try_from(first).expect("blocks lie below the ephemeral range");
        }
    }
    panic!("no block of {span} free ports between {LOW} and {high}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_distinct_and_below_the_ephemeral_range() {
        let a = free_block(40);
        let b = free_block(40);
        assert_ne!(a, b);
        assert!(u32::from(a) + 40 <= ephemeral_start().max(LOW + 160));
        assert!(u32::from(a) >= LOW);
    }
}
