//! Child processes and the loopback ports they use.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Path of a workspace binary, next to the test executable's target dir.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (tests/run.sh does)",
        path.display()
    );
    path
}

/// Lines of each child's log printed when a test fails.
const TAIL_LINES: usize = 40;

/// A running child process; killed on drop. Output goes to a log file that
/// is printed when a test asks for it (see [`Proc::log`]), and whose tail is
/// printed when the test fails (panics) while the child is alive.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
    /// Opened at spawn, so the tail can still be read when a test's temporary
    /// directory is removed before this handle drops.
    tail: Option<std::fs::File>,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Proc {
        Self::spawn_env(name, program, args, log_dir, &[])
    }

    /// As [`Proc::spawn`], with variables added to the child's environment.
    pub fn spawn_env(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        env: &[(String, String)],
    ) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let child = Command::new(program)
            .args(args)
            .env("MYCEL_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({}): {e}", program.display()));
        Proc {
            name: name.to_string(),
            tail: std::fs::File::open(&log).ok(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a line of the log that starts with `prefix` (such as a
    /// binary's ready line, which names the ports it bound) and returns it.
    /// Fails early, with the log, if the process exits first.
    pub async fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Only whole lines: stderr is unbuffered, so a line can be read
            // while its later pieces are still being written.
            let log = self.log();
            let whole = log.split_inclusive('\n').filter(|l| l.ends_with('\n'));
            if let Some(line) = whole.map(str::trim_end).find(|l| l.starts_with(prefix)) {
                return Ok(line.to_string());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                anyhow::bail!("{} exited with {status}; log:\n{}", self.name, self.log());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "{} printed no line starting with {prefix:?} within {limit:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How the process ended, if it already has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics with the log if the process already exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early with {status}; log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            signal(pid, Signal::SIGTERM as i32);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        }
    }

    /// Sends a signal (e.g. SIGINT) without waiting.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.child.id() {
            signal(pid, sig);
        }
    }

    pub async fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Written to the test's captured output: libtest shows it with the
        // failure and drops it for a passing test.
        if std::thread::panicking() {
            eprintln!(
                "--- last {TAIL_LINES} lines of {} ({}) ---\n{}",
                self.name,
                self.log.display(),
                self.tail.as_mut().map(read_tail).unwrap_or_default()
            );
        }
    }
}

/// The last [`TAIL_LINES`] lines of an open log file.
fn read_tail(file: &mut std::fs::File) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if file.seek(SeekFrom::Start(0)).is_err() {
        return text;
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    text.push_str(&String::from_utf8_lossy(&bytes));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Processes (other than this one) whose command line mentions `needle`:
/// what a test left running.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

fn signal(pid: u32, sig: i32) {
    let (Ok(pid), Ok(sig)) = (i32::try_from(pid), Signal::try_from(sig)) else {
        return;
    };
    // The child may already be gone; the caller waits and sees that.
    let _ = kill(Pid::from_raw(pid), sig);
}
