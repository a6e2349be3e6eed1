//! Running commands, inside a network namespace or not, with bounded time
//! and output kept for the failure message.

use std::process::{Command, Output};
use std::time::Duration;

/// A finished command: exit success and its output, lossily decoded.
#[derive(Debug)]
pub struct Ran {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(o: Output) -> Ran {
        Ran {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `program args` with a time limit (`timeout(1)` ends it), without
/// panicking; a command that cannot even start counts as failed.
pub fn run(limit: Duration, program: &str, args: &[&str]) -> Ran {
    let secs = format!("{}", limit.as_secs().max(1));
    let mut full = vec!["--kill-after=2", &secs, program];
    full.extend_from_slice(args);
    match Command::new("timeout").args(&full).output() {
        Ok(o) => o.into(),
        Err(e) => Ran {
            ok: false,
            code: None,
            stdout: String::new(),
            stderr: format!("cannot run {program}: {e}"),
        },
    }
}

/// Like [`run`], but a failure panics with the command and its output.
pub fn must(limit: Duration, program: &str, args: &[&str]) -> Ran {
    let r = run(limit, program, args);
    assert!(
        r.ok,
        "`{program} {}` failed ({:?}): {}{}",
        args.join(" "),
        r.code,
        r.stdout,
        r.stderr
    );
    r
}

/// Whether `program` is found on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether this process runs as root (uid 0), read from /proc so no unsafe
/// code is needed.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
