//! Child processes the harness starts (controller, proxies, nginx, HAProxy):
//! output to a log file, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("create log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct ChildProc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProc {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<ChildProc, ChildError> {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(|source| ChildError::Log {
            path: log.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| ChildError::Log {
            path: log.clone(),
            source,
        })?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|source| ChildError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
        Ok(ChildProc {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last part of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text[start..].to_string()
    }

    /// Whether the process has exited (and so failed to start or crashed).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for ChildProc {
    /// SIGTERM first, so nginx's master stops its workers (SIGKILL would
    /// orphan them on their ports); SIGKILL (kill_on_drop) after 3 s.
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        for _ in 0..150 {
            if self.exited() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
