//! The string patterns of authorization rules.

/// Exact, `prefix*`, `*suffix`, or `*` alone (any value, empty included).
pub fn value_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    pattern == value
}

/// Exact, `*` (any host), or `*.suffix` (any host below `suffix`, not
/// `suffix` itself). Case-insensitive, as hosts are.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            host.len() > suffix.len()
                && host.as_bytes()[host.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// A path pattern: a trailing `*` matches anything that follows (more
/// segments included); an inner `*` segment matches exactly one non-empty
/// segment. Without `*` the path must be equal.
pub fn glob_path(pattern: &str, path: &str) -> bool {
    let (body, prefix) = match pattern.strip_suffix('*') {
        Some(body) => (body, true),
        None => (pattern, false),
    };
    if !body.contains('*') {
        return if prefix {
            path.starts_with(body)
        } else {
            path == body
        };
    }
    // Segment by segment; the validator only lets `*` stand for a whole
    // segment.
    let mut want = body.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (Some(w), Some(h)) => {
                let last = prefix && want.clone().next().is_none();
                if last {
                    // The partial segment before the trailing `*`.
                    return h.starts_with(w);
                }
                if w == "*" {
                    if h.is_empty() {
                        return false;
                    }
                } else if w != h {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}
