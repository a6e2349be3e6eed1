//! Tracing for tests: code that runs inside the test process (an in-process
//! proxy or controller) logs through libtest's capture, so its log is shown
//! with a failing test and hidden for a passing one.

use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// Installs a test-writer subscriber once per process. The filter comes from
/// `MYCEL_LOG`, else `RUST_LOG`, else `info`. Safe to call from every test;
/// a subscriber installed by someone else first is left in place.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = ["MYCEL_LOG", "RUST_LOG"]
            .iter()
            .find_map(|var| std::env::var(var).ok())
            .and_then(|spec| EnvFilter::try_new(spec).ok())
            .unwrap_or_else(|| EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .with_ansi(false)
            .try_init();
    });
}
