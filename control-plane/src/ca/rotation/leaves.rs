//! Which root each proxy's current leaf chains to. A proxy's discovery
//! stream was opened with one leaf, and renewals happen over `Certify`
//! without reopening it; each renewal is authenticated by the leaf it
//! replaces, so recording "leaf A was renewed into leaf B (root R)" lets the
//! controller follow a stream's leaf to the proxy's newest one.

use std::collections::HashMap;
use std::sync::Mutex;

/// Renewal chains longer than this are cut (a cycle cannot occur with
/// random serials, but the walk must stay bounded whatever is recorded).
const MAX_HOPS: usize = 64;
/// Entries kept at most; the oldest expiries go first beyond it.
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, Debug)]
struct Entry {
    /// The leaf this one was renewed into.
    next: Option<String>,
    /// The root the leaf chains to, when this controller issued it.
    root: Option<String>,
    not_after_unix: i64,
}

#[derive(Debug, Default)]
pub struct LeafTracker {
    leaves: Mutex<HashMap<String, Entry>>,
}

/// A certificate's serial number, lower-case hex, as the registry and the
/// tracker name leaves.
pub fn serial_hex(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(hex::encode(cert.raw_serial()))
}

impl LeafTracker {
    /// Records that `issued` (serial, root fingerprint, expiry) was signed,
    /// renewing `presented` when the caller authenticated with a leaf.
    pub fn record(
        &self,
        presented: Option<&str>,
        issued: &str,
        root: &str,
        not_after_unix: i64,
        now_unix: i64,
    ) {
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if leaves.len() >= MAX_ENTRIES {
            leaves.retain(|_, e| e.not_after_unix > now_unix);
        }
        if leaves.len() >= MAX_ENTRIES {
            return;
        }
        leaves.insert(
            issued.to_string(),
            Entry {
                next: None,
                root: Some(root.to_string()),
                not_after_unix,
            },
        );
        if let Some(old) = presented.filter(|p| *p != issued) {
            let entry = leaves.entry(old.to_string()).or_insert(Entry {
                next: None,
                root: None,
                not_after_unix,
            });
            entry.next = Some(issued.to_string());
        }
    }

    /// The root of the newest leaf `serial` was renewed into (itself when
    /// never renewed), if this controller issued it.
    pub fn current_root(&self, serial: &str) -> Option<String> {
        let leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        let mut at = leaves.get(serial)?;
        for _ in 0..MAX_HOPS {
            match at.next.as_ref().and_then(|n| leaves.get(n)) {
                Some(next) => at = next,
                None => break,
            }
        }
        at.root.clone()
    }

    /// Whether `serial` was renewed by this controller (so a root read
    /// from the stream's own chain would be stale).
    pub fn was_renewed(&self, serial: &str) -> bool {
        let leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        leaves.get(serial).is_some_and(|e| e.next.is_some())
    }

    pub fn len(&self) -> usize {
        self.leaves.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_renewals_to_the_newest_leaf() {
        let t = LeafTracker::default();
        // Leaf "a" came from a controller before a restart: unknown root.
        assert_eq!(t.current_root("a"), None);
        t.record(Some("a"), "b", "old", 100, 0);
        assert!(t.was_renewed("a"));
        assert_eq!(t.current_root("a").as_deref(), Some("old"));
        t.record(Some("b"), "c", "new", 200, 0);
        assert_eq!(t.current_root("a").as_deref(), Some("new"));
        assert_eq!(t.current_root("b").as_deref(), Some("new"));
        assert_eq!(t.current_root("c").as_deref(), Some("new"));
        assert!(!t.was_renewed("c"));
        // A first certificate (no presented leaf) links nothing.
        t.record(None, "d", "new", 200, 0);
        assert_eq!(t.current_root("d").as_deref(), Some("new"));
    }

    #[test]
    fn a_cycle_is_bounded() {
        let t = LeafTracker::default();
        t.record(Some("x"), "y", "r1", 100, 0);
        t.record(Some("y"), "x", "r2", 100, 0);
        assert!(t.current_root("x").is_some());
    }
}
