//! The two metric exposition formats an admin port serves: OpenMetrics
//! (what Prometheus asks for first) and, to any client that does not ask
//! for it, the Prometheus text format (0.0.4), which older tools such as
//! `promtool check metrics` read.
//!
//! The metrics are encoded once, as OpenMetrics; the text format differs
//! only in framing: a counter family `x` is described as `x_total` (the
//! name its samples carry), and `# UNIT` lines and the closing `# EOF` do
//! not exist. Sample lines pass through untouched.

use std::collections::BTreeSet;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the request's `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut fields = part.split(';');
            let media = fields.next().unwrap_or_default().trim();
            // `q=0` means "not this one".
            let refused = fields.any(|f| {
                f.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// The content type and body for a client sending `accept`, from the
/// OpenMetrics encoding `om`.
pub fn negotiate(accept: Option<&str>, om: String) -> (&'static str, String) {
    if wants_openmetrics(accept) {
        (OPENMETRICS, om)
    } else {
        (TEXT, to_text_format(&om))
    }
}

/// OpenMetrics to the Prometheus text format (see the module's comment).
pub fn to_text_format(om: &str) -> String {
    let counters: BTreeSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let header = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let (name, rest) = line.strip_prefix(prefix)?.split_once(' ')?;
            Some((prefix, name, rest))
        });
        match header {
            Some((prefix, name, rest)) => {
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(match (prefix, rest) {
                    ("# TYPE ", "unknown") => "untyped",
                    _ => rest,
                });
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_framing_is_dropped() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total{x=\"1\"} 2\n\
                  # HELP d Seconds.\n# TYPE d histogram\n# UNIT d seconds\nd_count 1\n\
                  # HELP u Odd.\n# TYPE u unknown\nu 3\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 2\n\
             # HELP d Seconds.\n# TYPE d histogram\nd_count 1\n\
             # HELP u Odd.\n# TYPE u untyped\nu 3\n"
        );
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        // What Prometheus sends.
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }
}
