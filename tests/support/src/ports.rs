//! Ports for processes a test or the bench starts and tells where to
//! listen: a block for those that take a base port on their command line
//! (`mycelctl demo --base-port`, the local example's controller), a single
//! port for the rest (etcd, kube-apiserver, the controller's webhook, the
//! bench's proxies, redis-server).
//!
//! Every other socket binds port 0 or connects, and so lands in the kernel's
//! ephemeral range. A port found free there can be taken by an outgoing
//! connection before the process binds it; a block chosen from below that
//! range cannot be.
//!
//! Two processes handing out ports at once (test binaries, or the bench
//! runs one test starts beside another's) must not hand out the same one:
//! between the hand-out and the bind, the port is free to both. So each port
//! handed out is first claimed, machine-wide, by creating a file named after
//! it in a shared directory; a claim older than [`CLAIM_TTL`] is stale (its
//! port was bound long ago, or never will be) and can be taken again. Within
//! a process, blocks come from a counter whose start is spread by the pid,
//! so processes seldom even contend for a claim.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The lowest port handed out (well clear of well-known services).
const LOW: u32 = 10_000;
/// The kernel's default ephemeral range starts here; used when the real one
/// cannot be read.
const DEFAULT_EPHEMERAL_START: u32 = 32_768;
/// How long a claim keeps a port from other processes: far longer than any
/// process takes to bind the port it was given.
const CLAIM_TTL: Duration = Duration::from_secs(600);

/// Hands out ports from `LOW` up to the ephemeral range, claiming each in
/// `claims`.
struct Allocator {
    /// The pid, hashed: where in the range this process starts its walk.
    hash: u32,
    /// How many blocks this process has tried.
    count: AtomicU32,
    /// Where the walk ends: read from the kernel once.
    ephemeral_start: u32,
    /// `None` when the shared directory cannot be made (a read-only temp
    /// dir): the bind check alone decides, as it did before claims.
    claims: Option<PathBuf>,
}

impl Allocator {
    fn new(seed: u32, claims: PathBuf) -> Allocator {
        Allocator {
            hash: seed.wrapping_mul(GOLDEN),
            count: AtomicU32::new(0),
            ephemeral_start: ephemeral_start(),
            claims: std::fs::create_dir_all(&claims).is_ok().then_some(claims),
        }
    }

    fn free_block(&self, span: u16) -> u16 {
        let span = u32::from(span);
        let high = self.ephemeral_start.max(LOW + span * 4);
        let blocks = (high - LOW) / span;
        for _ in 0..blocks {
            let step = self.count.fetch_add(1, Ordering::SeqCst);
            let block = (start_block(self.hash, blocks) + step) % blocks;
            let first = LOW + block * span;
            if block_is_free(first, span) && self.claim(first, span) {
                return u16::try_from(first).expect("blocks lie below the ephemeral range");
            }
        }
        panic!("no block of {span} free ports between {LOW} and {high}");
    }

    /// Claims every port of the block, or none: a port another process
    /// claimed lately is skipped even though nothing listens on it yet.
    fn claim(&self, first: u32, span: u32) -> bool {
        let Some(claims) = &self.claims else {
            return true;
        };
        let mut taken = Vec::new();
        for port in first..first + span {
            let path = claims.join(port.to_string());
            if claim_file(&path) {
                taken.push(path);
            } else {
                for path in taken {
                    let _ = std::fs::remove_file(path);
                }
                return false;
            }
        }
        true
    }
}

/// 2^32 divided by the golden ratio.
const GOLDEN: u32 = 0x9E37_79B9;

/// The block of `blocks` a walk starts at, for a hashed seed: the hash's
/// share of 2^32 taken of `blocks`, so that consecutive pids (test binaries
/// started one after another) start far apart, whatever the block size.
fn start_block(hash: u32, blocks: u32) -> u32 {
    ((u64::from(hash) * u64::from(blocks)) >> 32) as u32
}

/// Creates `path` if no process holds it, or takes it over if its claim is
/// stale.
fn claim_file(path: &Path) -> bool {
    let create = || OpenOptions::new().write(true).create_new(true).open(path);
    match create() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let stale = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| at.elapsed().ok())
                .is_some_and(|age| age > CLAIM_TTL);
            // Of two processes that both found it stale, only one creates
            // it anew.
            stale && std::fs::remove_file(path).is_ok() && create().is_ok()
        }
        Err(_) => true,
    }
}

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

/// The first port of `span` consecutive ports, all free right now, below
/// the ephemeral range and handed to no other caller on this machine in the
/// last ten minutes. Panics if no such block is found, which only a machine
/// with thousands of fixed listeners would cause.
pub fn free_block(span: u16) -> u16 {
    static ALLOCATOR: OnceLock<Allocator> = OnceLock::new();
    ALLOCATOR
        .get_or_init(|| {
            Allocator::new(
                std::process::id(),
                std::env::temp_dir().join("mycel-test-ports"),
            )
        })
        .free_block(span)
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

    /// The CI failure of this change's first try: two bench runs started
    /// at once walked the same ports (their pids, and so their counters,
    /// were close), and a controller found its admin port taken. Here the
    /// two walks start at the very same place.
    #[test]
    fn two_processes_handing_out_ports_at_once_never_hand_out_the_same_one() {
        let claims = tempfile::tempdir().expect("claims dir");
        let first = Allocator::new(4242, claims.path().to_path_buf());
        let second = Allocator::new(4242, claims.path().to_path_buf());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            for allocator in [&first, &second] {
                let port = allocator.free_block(1);
                assert!(seen.insert(port), "port {port} handed out twice");
            }
        }
        let mixed = [first.free_block(3), second.free_block(3)];
        assert!(mixed[0].abs_diff(mixed[1]) >= 3, "blocks {mixed:?} overlap");
    }

    #[test]
    fn without_a_claims_directory_ports_are_still_handed_out() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").expect("file");
        let allocator = Allocator::new(7, file.join("claims"));
        assert!(allocator.claims.is_none());
        let (a, b) = (allocator.free_block(1), allocator.free_block(1));
        assert_ne!(a, b);
    }

    #[test]
    fn a_stale_claim_is_taken_over_and_a_fresh_one_is_not() {
        let claims = tempfile::tempdir().expect("claims dir");
        let fresh = claims.path().join("fresh");
        let stale = claims.path().join("stale");
        assert!(claim_file(&fresh));
        assert!(!claim_file(&fresh), "a fresh claim is another's");
        let file = std::fs::File::create(&stale).expect("stale claim");
        let old = std::time::SystemTime::now() - CLAIM_TTL - Duration::from_secs(60);
        file.set_modified(old).expect("age the claim");
        assert!(claim_file(&stale), "a stale claim is free");
        assert!(!claim_file(&stale), "and now claimed again");
    }

    #[test]
    fn consecutive_pids_start_their_walks_far_apart() {
        for span in [1, 40] {
            let blocks = (ephemeral_start() - LOW) / span;
            let start = |pid: u32| start_block(pid.wrapping_mul(GOLDEN), blocks);
            for pid in 15_000..15_032 {
                let gap = start(pid).abs_diff(start(pid + 1));
                let gap = gap.min(blocks - gap);
                assert!(
                    gap > blocks / 5,
                    "span {span}, pid {pid} and the next: {gap} blocks apart"
                );
            }
        }
    }
}
