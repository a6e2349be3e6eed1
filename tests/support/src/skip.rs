//! Skipping tests whose requirements this machine lacks, loudly; and never
//! in CI, where `MYCEL_REQUIRE_ALL=1` turns every skip into a failure.
//!
//! A skipped test still shows `ok` in libtest's report, so the reason must
//! be seen elsewhere: it is written straight to the process's stderr (not
//! through `eprintln!`, which libtest captures for passing tests) and
//! appended to `target/<profile>/mycel-skipped.txt`, which `tests/run.sh`
//! prints as a summary at the end.

use std::io::Write;

/// File (next to the binaries) collecting one line per skipped test.
pub fn summary_path() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test-binary> → target/<profile>/
    exe.parent()
        .and_then(std::path::Path::parent)
        .map(|dir| dir.join("mycel-skipped.txt"))
        .unwrap_or_else(|| std::path::PathBuf::from("mycel-skipped.txt"))
}

/// Returns true when the test should go on. Reports why when it should not.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("MYCEL_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("MYCEL_REQUIRE_ALL=1 but this test cannot run: {what}");
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    let line = format!("SKIPPED {test}: {what}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(summary_path())
    {
        let _ = f.write_all(line.as_bytes());
    }
    false
}
