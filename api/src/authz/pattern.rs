//! The string patterns of authorization rules, and the path form they are
//! matched against.

use std::borrow::Cow;

/// Exact, `prefix*`, `*suffix`, or `*` alone (any value, empty included).
pub fn value_matches(pattern: &str, value: &str) -> bool {
    bytes_match(pattern, value.as_bytes())
}

/// [`value_matches`] on raw bytes: a header value need not be UTF-8, and
/// one that is not must still meet a DENY rule on its readable part.
pub fn bytes_match(pattern: &str, value: &[u8]) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix.as_bytes());
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix.as_bytes());
    }
    pattern.as_bytes() == value
}

/// The path as an app would most likely read it, so a rule on `/admin/*`
/// cannot be stepped around with `/%61dmin/x`, `//admin/x`, `/a/../admin/x`
/// or `\admin\x`: percent-escapes decoded (all of them, `%2F` included:
/// an app that decodes it sees a slash), backslashes as slashes, repeated
/// slashes merged, `.` and `..` segments resolved (never above the root).
/// Borrowed when there is nothing to change, the common case.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let clean = !path.contains(['%', '\\'])
        && !path.contains("//")
        && !path.split('/').any(|seg| seg == "." || seg == "..");
    if clean {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| (c as char).to_digit(16);
        match (b, bytes.get(i + 1).copied(), bytes.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                decoded.push(v as u8);
                i += 3;
            }
            (b'\\', _, _) => {
                decoded.push(b'/');
                i += 1;
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    // A trailing slash (or a trailing dot segment) names a directory.
    if out.is_empty()
        || decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
    {
        out.push('/');
    }
    Cow::Owned(out)
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
