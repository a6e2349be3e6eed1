//! Skipping tests whose requirements this machine lacks, loudly; and never
//! in CI, where `MYCEL_REQUIRE_ALL=1` turns every skip into a failure.

/// Returns true when the test should go on. Prints why when it should not.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("MYCEL_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("MYCEL_REQUIRE_ALL=1 but this test cannot run: {what}");
    }
    eprintln!("SKIPPED: {what}");
    false
}
