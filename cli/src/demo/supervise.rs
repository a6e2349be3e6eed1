//! Child processes of the demo: each in its own process group with its
//! output in a log file, killed by the kernel if `mycelctl` dies, watched
//! for unexpected exits, and stopped (SIGTERM, then SIGKILL) as a whole.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Lines of a log shown when its process dies.
pub const LOG_TAIL_LINES: usize = 20;
/// After SIGKILL, how long to wait for the kernel to report the exits.
const KILL_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot create log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: PathBuf,
        source: std::io::Error,
    },
}

/// A child that ended.
#[derive(Debug)]
pub struct Exited {
    pub name: String,
    /// "exit status: 1", "signal: 9 (SIGKILL)", or why waiting failed.
    pub status: String,
    pub log: PathBuf,
}

impl Exited {
    /// The report shown when this child ended while it should be running.
    pub fn report(&self) -> String {
        format!(
            "{} exited unexpectedly ({}); last lines of {}:\n{}",
            self.name,
            self.status,
            self.log.display(),
            log_tail(&self.log, LOG_TAIL_LINES)
        )
    }
}

struct Child {
    name: String,
    /// Also the process group id (each child leads its own group).
    pid: i32,
    log: PathBuf,
    running: bool,
}

pub struct Supervisor {
    children: Vec<Child>,
    /// Added to every child's environment.
    env: Vec<(String, String)>,
    exits_tx: mpsc::UnboundedSender<(usize, String)>,
    exits_rx: mpsc::UnboundedReceiver<(usize, String)>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        Supervisor {
            children: Vec::new(),
            env: Vec::new(),
            exits_tx,
            exits_rx,
        }
    }

    /// Gives every child started from now on the variable `key`.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Starts `program args` as `name`, stdout and stderr appended to `log`.
    pub fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<(), SuperviseError> {
        let log_err = |source| SuperviseError::Log {
            path: log.to_path_buf(),
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            // Logs go to files: colour codes would only garble them (every
            // binary's tracing honours NO_COLOR).
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // Own group: a terminal's Ctrl-C reaches only mycelctl, which
            // then stops everyone in order, and a signal reaches a child's
            // whole group.
            .process_group(0);
        die_with_parent(&mut command);
        let mut child = command.spawn().map_err(|source| SuperviseError::Spawn {
            name: name.to_string(),
            program: program.to_path_buf(),
            source,
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| SuperviseError::Spawn {
                name: name.to_string(),
                program: program.to_path_buf(),
                source: std::io::Error::other("child has no process id"),
            })?;
        let index = self.children.len();
        self.children.push(Child {
            name: name.to_string(),
            pid,
            log: log.to_path_buf(),
            running: true,
        });
        let tx = self.exits_tx.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => describe(status),
                Err(e) => format!("waiting for it failed: {e}"),
            };
            let _ = tx.send((index, status));
        });
        Ok(())
    }

    pub fn running(&self) -> usize {
        self.children.iter().filter(|c| c.running).count()
    }

    /// The next child to end. Never completes while all children run.
    pub async fn next_exit(&mut self) -> Exited {
        loop {
            // The sender half lives in `self`, so the channel never closes.
            let Some((index, status)) = self.exits_rx.recv().await else {
                std::future::pending::<()>().await;
                continue;
            };
            if let Some(child) = self.children.get_mut(index) {
                child.running = false;
                return Exited {
                    name: child.name.clone(),
                    status,
                    log: child.log.clone(),
                };
            }
        }
    }

    /// SIGTERM to every running group, SIGKILL to those still running after
    /// `grace`. Returns the names of children that had to be killed.
    pub async fn stop_all(&mut self, grace: Duration) -> Vec<String> {
        self.signal_running(Signal::SIGTERM);
        self.collect_exits(Instant::now() + grace).await;
        let stubborn: Vec<String> = self
            .children
            .iter()
            .filter(|c| c.running)
            .map(|c| c.name.clone())
            .collect();
        if !stubborn.is_empty() {
            self.signal_running(Signal::SIGKILL);
            self.collect_exits(Instant::now() + KILL_WAIT).await;
        }
        stubborn
    }

    fn signal_running(&self, signal: Signal) {
        for child in self.children.iter().filter(|c| c.running) {
            if let Err(e) = signal_group(child.pid, signal) {
                tracing::debug!(name = %child.name, error = %e, "signal failed");
            }
        }
    }

    async fn collect_exits(&mut self, deadline: Instant) {
        while self.running() > 0 {
            match tokio::time::timeout_at(deadline, self.next_exit()).await {
                Ok(exited) => {
                    tracing::debug!(name = %exited.name, status = %exited.status, "stopped")
                }
                Err(_) => return,
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    status.to_string()
}

/// The last `n` lines of a log file (or why it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::File::open(path) {
        Ok(file) => {
            let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Sends `signal` to the process group `pgid`.
fn signal_group(pgid: i32, signal: Signal) -> std::io::Result<()> {
    // A non-positive group would mean "every process we may signal".
    if pgid <= 0 {
        return Err(std::io::Error::other(
            "refusing to signal a non-positive group",
        ));
    }
    killpg(Pid::from_raw(pgid), signal).map_err(std::io::Error::from)
}

/// Asks the kernel to SIGKILL the child when its parent (this thread) dies,
/// so a killed `mycelctl` leaves nothing behind.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: `pre_exec` is unsafe because the hook runs in the forked child
    // before exec; it only makes async-signal-safe calls (prctl, getppid,
    // _exit) and neither allocates nor takes locks.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died between fork and prctl.
            if nix::unistd::getppid() != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> PathBuf {
        PathBuf::from("/bin/sh")
    }

    #[tokio::test]
    async fn reports_an_unexpected_exit_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let mut sup = Supervisor::new();
        let script = "for i in $(seq 1 30); do echo line $i; done; exit 3";
        sup.spawn("x", &sh(), &["-c".into(), script.into()], &log)
            .unwrap();
        let exited = tokio::time::timeout(Duration::from_secs(10), sup.next_exit())
            .await
            .unwrap();
        assert_eq!(exited.name, "x");
        assert!(exited.status.contains('3'), "{}", exited.status);
        let report = exited.report();
        assert!(
            report.contains("line 30") && report.contains("line 11"),
            "{report}"
        );
        assert!(!report.contains("line 10\n"), "{report}");
        assert_eq!(sup.running(), 0);
    }

    #[tokio::test]
    async fn stop_all_terminates_and_kills_stubborn_groups() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new();
        sup.spawn(
            "polite",
            &sh(),
            &["-c".into(), "sleep 60".into()],
            &dir.path().join("a.log"),
        )
        .unwrap();
        // Ignores SIGTERM: only SIGKILL ends it.
        let stubborn = "trap '' TERM; while true; do sleep 1; done";
        sup.spawn(
            "stubborn",
            &sh(),
            &["-c".into(), stubborn.into()],
            &dir.path().join("b.log"),
        )
        .unwrap();
        // Let the trap be installed before signalling.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let killed = sup.stop_all(Duration::from_millis(500)).await;
        assert_eq!(killed, ["stubborn"]);
        assert_eq!(sup.running(), 0);
    }

    #[tokio::test]
    async fn missing_program_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new();
        let err = sup
            .spawn(
                "ghost",
                Path::new("/nonexistent/prog"),
                &[],
                &dir.path().join("g.log"),
            )
            .unwrap_err();
        assert!(err.to_string().contains("ghost") && err.to_string().contains("/nonexistent/prog"));
    }

    #[test]
    fn tail_of_short_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        std::fs::write(&p, "a\nb\n").unwrap();
        assert_eq!(log_tail(&p, 20), "a\nb");
        assert!(log_tail(&dir.path().join("none"), 5).contains("cannot read"));
    }
}
