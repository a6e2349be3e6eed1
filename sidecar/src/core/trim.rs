//! Gives freed heap memory back to the system now and then.
//!
//! glibc's allocator keeps what a burst freed: after 1,000 kept-alive
//! connections had each made a request and closed, a sidecar still held
//! about 50 MB of anonymous memory it no longer used (docs/benchmarks.md,
//! "memory of a sidecar"), since freed chunks in the middle of its heaps
//! are not returned on their own. `malloc_trim` returns every whole free
//! page. A timer (`--memory-release-interval`, 30 s) is simpler than
//! knowing when a burst ended, and costs one walk over the free lists per
//! interval.

use std::time::Duration;

/// Returns freed memory every `period`, for ever.
pub async fn release_freed_memory(period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; nothing was freed yet.
    tick.tick().await;
    loop {
        tick.tick().await;
        trim();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // an FFI call without arguments to check
fn trim() {
    // SAFETY: malloc_trim takes no pointers and may be called from any
    // thread at any time; 0 keeps no extra padding at the top of the heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
