//! CPU time and memory of a process (and its children) from `/proc`.
//!
//! The parsers are pure functions over the file text so they are tested on
//! fixed samples; the readers add the file access.

use std::path::Path;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: String, reason: String },
}

/// `utime + stime` in clock ticks, from the text of `/proc/<pid>/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself; fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Parent pid, from the text of `/proc/<pid>/stat`.
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`.
pub fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if name != field {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Memory and CPU of one process tree at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// utime + stime of every process in the tree, seconds.
    pub cpu_s: f64,
    /// Sum of VmRSS, kB.
    pub rss_kb: u64,
    /// Sum of VmHWM (peak RSS), kB.
    pub hwm_kb: u64,
    pub processes: usize,
}

fn read(path: &Path) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on
/// every Linux this runs on, used when getconf is missing).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// `pid` and all its descendants (nginx and HAProxy fork workers).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
                if let Some(pp) = parse_stat_ppid(&stat) {
                    parents.push((p, pp));
                }
            }
        }
    }
    descendants(pid, &parents)
}

/// `root` and every pid whose parent chain reaches it, from (pid, ppid) pairs.
pub fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    // Each pid is added at most once, so this ends after |parents| steps.
    while i < out.len() {
        let p = out[i];
        for &(child, pp) in parents {
            if pp == p && !out.contains(&child) {
                out.push(child);
            }
        }
        i += 1;
    }
    out
}

/// Samples the process tree of `pid`.
pub fn sample(pid: u32, ticks_per_s: u64) -> Result<Sample, ProcError> {
    let mut s = Sample::default();
    for p in tree(pid) {
        let base = Path::new("/proc").join(p.to_string());
        let stat_path = base.join("stat");
        let stat = match read(&stat_path) {
            Ok(t) => t,
            // A worker that exited between the scan and now.
            Err(_) if p != pid => continue,
            Err(e) => return Err(e),
        };
        let ticks = parse_stat_ticks(&stat).ok_or_else(|| ProcError::Parse {
            path: stat_path.display().to_string(),
            reason: "no utime/stime fields".into(),
        })?;
        let status = read(&base.join("status")).unwrap_or_default();
        s.cpu_s += ticks as f64 / ticks_per_s.max(1) as f64;
        s.rss_kb += parse_status_kb(&status, "VmRSS").unwrap_or(0);
        s.hwm_kb += parse_status_kb(&status, "VmHWM").unwrap_or(0);
        s.processes += 1;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 4 0 100 123456789 2000 18446744073709551615";

    #[test]
    fn stat_fields_after_a_command_with_parentheses() {
        assert_eq!(parse_stat_ticks(STAT), Some(175));
        assert_eq!(parse_stat_ppid(STAT), Some(1));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_kb_fields() {
        let status = "Name:\tmycel-proxy\nVmHWM:\t    9876 kB\nVmRSS:\t    5432 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(5432));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(9876));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn descendants_follow_the_parent_chain() {
        let pairs = [(10, 1), (11, 10), (12, 10), (13, 11), (20, 1), (21, 20)];
        let mut d = descendants(10, &pairs);
        d.sort_unstable();
        assert_eq!(d, vec![10, 11, 12, 13]);
        assert_eq!(descendants(99, &pairs), vec![99]);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let s = sample(std::process::id(), clock_ticks()).unwrap();
        assert!(s.rss_kb > 0 && s.hwm_kb >= s.rss_kb && s.processes >= 1);
    }
}
