//! Policy durations as Gateway API writes them: one to four
//! `<number><unit>` pairs, units `h`, `m`, `s`, `ms` (`250ms`, `1m30s`).

use std::time::Duration;

/// The schema pattern every policy duration field carries.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// A string the pattern refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration such as 250ms, 5s, 1m or 1h30m")]
pub struct PolicyDurationError(String);

/// The pairs of `raw`, or None when it does not match [`DURATION_PATTERN`].
fn pairs(raw: &str) -> Option<Vec<(u64, u64)>> {
    let b = raw.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = raw[start..i].parse().ok()?;
        let millis_per = match (b.get(i), b.get(i + 1)) {
            (Some(b'm'), Some(b's')) => {
                i += 2;
                1
            }
            (Some(b'h'), _) => {
                i += 1;
                3_600_000
            }
            (Some(b'm'), _) => {
                i += 1;
                60_000
            }
            (Some(b's'), _) => {
                i += 1;
                1_000
            }
            _ => return None,
        };
        out.push((n, millis_per));
    }
    (!out.is_empty() && out.len() <= 4).then_some(out)
}

/// Whether `raw` matches [`DURATION_PATTERN`].
pub fn matches_pattern(raw: &str) -> bool {
    pairs(raw).is_some()
}

/// Parses a policy duration; the pairs add up, in any order, as the API
/// server's CEL `duration()` reads them.
pub fn parse_duration(raw: &str) -> Result<Duration, PolicyDurationError> {
    let pairs = pairs(raw).ok_or_else(|| PolicyDurationError(raw.to_string()))?;
    // Four pairs of at most 99999 hours fit in u64 milliseconds.
    let millis: u64 = pairs.iter().map(|(n, per)| n * per).sum();
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_durations() {
        for (raw, ms) in [
            ("250ms", 250),
            ("5s", 5_000),
            ("1m", 60_000),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
            ("1s500ms", 1_500),
            ("0s", 0),
            ("99999h", 99_999 * 3_600_000),
        ] {
            assert_eq!(parse_duration(raw), Ok(Duration::from_millis(ms)), "{raw}");
        }
        for bad in [
            "",
            "s",
            "5",
            "1d",
            "1.5s",
            "-1s",
            "1 s",
            "123456s",
            "1s1s1s1s1s",
            "5sec",
            "ms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
            assert!(!matches_pattern(bad), "{bad}");
        }
    }
}
