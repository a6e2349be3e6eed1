//! CPU time and memory of a process (and its children), read from `/proc`
//! with the `procfs` crate.

use procfs::process::Process;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {pid}: {source}")]
    Process {
        pid: u32,
        #[source]
        source: procfs::ProcError,
    },
    #[error("process id {0} is out of range")]
    Pid(u32),
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
    /// Sum of RssAnon (heap and stacks, not the shared code), kB.
    pub anon_kb: u64,
    pub processes: usize,
}

/// Clock ticks per second for `utime`/`stime` (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> u64 {
    procfs::ticks_per_second().max(1)
}

/// Total memory of the machine, kB (0 when `/proc/meminfo` is unreadable).
pub fn mem_total_kb() -> u64 {
    use procfs::Current;
    procfs::Meminfo::current()
        .map(|m| m.mem_total / 1024)
        .unwrap_or(0)
}

/// The calling thread's id (from `/proc/thread-self`).
pub fn current_tid() -> Option<i32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// CPU seconds (utime + stime) thread `tid` of this process has used.
pub fn thread_cpu_s(tid: i32, ticks_per_s: u64) -> Option<f64> {
    let stat = Process::myself()
        .ok()?
        .task_from_tid(tid)
        .ok()?
        .stat()
        .ok()?;
    Some((stat.utime + stat.stime) as f64 / ticks_per_s.max(1) as f64)
}

/// `pid` and all its descendants (nginx and HAProxy fork workers).
pub fn tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = procfs::process::all_processes()
        .into_iter()
        .flatten()
        // A process that exits during the scan is simply not there.
        .filter_map(|p| {
            let stat = p.ok()?.stat().ok()?;
            Some((
                u32::try_from(stat.pid).ok()?,
                u32::try_from(stat.ppid).ok()?,
            ))
        })
        .collect();
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

/// CPU ticks (utime + stime) and (VmRSS, VmHWM, RssAnon) in kB of one
/// process.
fn one(pid: u32) -> Result<(u64, u64, u64, u64), ProcError> {
    let id = i32::try_from(pid).map_err(|_| ProcError::Pid(pid))?;
    let err = |source| ProcError::Process { pid, source };
    let p = Process::new(id).map_err(err)?;
    let stat = p.stat().map_err(err)?;
    // Kernel threads and zombies have no memory lines: counted as 0.
    let (rss, hwm, anon) = p
        .status()
        .map(|s| {
            (
                s.vmrss.unwrap_or(0),
                s.vmhwm.unwrap_or(0),
                s.rssanon.unwrap_or(0),
            )
        })
        .unwrap_or((0, 0, 0));
    Ok((stat.utime + stat.stime, rss, hwm, anon))
}

/// Samples the process tree of `pid`.
pub fn sample(pid: u32, ticks_per_s: u64) -> Result<Sample, ProcError> {
    let mut s = Sample::default();
    for p in tree(pid) {
        let (ticks, rss, hwm, anon) = match one(p) {
            Ok(v) => v,
            // A worker that exited between the scan and now.
            Err(_) if p != pid => continue,
            Err(e) => return Err(e),
        };
        s.cpu_s += ticks as f64 / ticks_per_s.max(1) as f64;
        s.rss_kb += rss;
        s.hwm_kb += hwm;
        s.anon_kb += anon;
        s.processes += 1;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_follow_the_parent_chain() {
        let pairs = [(10, 1), (11, 10), (12, 10), (13, 11), (20, 1), (21, 20)];
        let mut d = descendants(10, &pairs);
        d.sort_unstable();
        assert_eq!(d, vec![10, 11, 12, 13]);
        assert_eq!(descendants(99, &pairs), vec![99]);
    }

    #[test]
    fn own_process_and_its_child_are_sampled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id();
        let found = tree(me);
        let s = sample(me, clock_ticks());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
        let s = s.unwrap();
        assert!(
            s.rss_kb > 0 && s.hwm_kb >= s.rss_kb && s.processes >= 2,
            "{s:?}"
        );
    }

    #[test]
    fn a_missing_process_is_an_error_naming_it() {
        // Above the kernel's pid_max (at most 2^22), so never a live pid.
        let e = sample(1 << 30, clock_ticks()).unwrap_err();
        assert!(e.to_string().contains("1073741824"), "{e}");
    }

    #[test]
    fn a_thread_of_this_process_is_sampled() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let tid = current_tid();
            // Burn some CPU so the thread has ticks to show.
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < std::time::Duration::from_millis(60) {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            let cpu = tid.and_then(|t| thread_cpu_s(t, clock_ticks()));
            tx.send((tid, cpu, x)).unwrap();
        });
        let (tid, cpu, _) = rx.recv().unwrap();
        t.join().unwrap();
        assert!(tid.is_some_and(|t| t > 0), "{tid:?}");
        assert!(cpu.is_some_and(|c| c > 0.0), "{cpu:?}");
    }

    #[test]
    fn machine_memory_is_known() {
        assert!(mem_total_kb() > 0);
    }
}
