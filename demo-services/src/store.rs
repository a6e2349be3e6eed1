//! `mycel-demo store <postgres|redis|nats> --dir DIR --listen IP:PORT`: runs
//! one of the shop's stores in the foreground, so that how each is started
//! is known in one place (the launcher, `mycelctl demo`, only names them).
//!
//! The server is this process's child: SIGTERM and SIGINT are passed on
//! (PostgreSQL gets SIGINT for either, its "fast" shutdown, since the
//! "smart" one SIGTERM asks for waits for every client to leave, and the
//! shop's services never leave), and this process exits with the server's
//! status (128 + the signal when a signal ended it). A server binary that
//! is not installed ends it with status [`MISSING_EXIT`] and one line
//! naming the Debian package; `--check` only says which binary would run.
//!
//! Durability is a demo's: PostgreSQL as configured by initdb; Redis with
//! an append-only file fsynced every second and no snapshots; NATS
//! JetStream's file store. Each keeps its data in `--dir` across runs.

pub mod command;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use clap::ValueEnum;

use command::{Binaries, Missing};

/// Exit status when the server binary is not installed.
pub const MISSING_EXIT: i32 = 3;

/// Which store to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Postgres,
    Redis,
    Nats,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Postgres => "postgres",
            StoreKind::Redis => "redis",
            StoreKind::Nats => "nats",
        }
    }
}

/// `mycel-demo store KIND (--dir DIR --listen IP:PORT | --check)`.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct StoreArgs {
    /// Which store to run.
    #[arg(value_enum, value_name = "KIND")]
    pub kind: StoreKind,
    /// Where the store keeps its data (made if missing; kept across runs).
    #[arg(long, value_name = "DIR", required_unless_present = "check")]
    pub dir: Option<PathBuf>,
    /// The address to serve on: an IP address (a loopback one in the demo) and a port.
    #[arg(long, value_name = "IP:PORT", required_unless_present = "check")]
    pub listen: Option<SocketAddr>,
    /// Print the server binary that would run and exit 0, or say what is missing and exit 3;
    /// start nothing.
    #[arg(long, conflicts_with_all = ["dir", "listen"])]
    pub check: bool,
}

/// Why a store could not be run (after its binary was found).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Missing(#[from] Missing),
    #[error("cannot make {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "PostgreSQL refuses to run as root and there is no `postgres` system user to run it as \
         (install the Debian package postgresql, or run mycel-demo as another user)"
    )]
    NoPostgresUser,
    #[error(
        "the postgres user cannot reach {dir}: {blocker} is not searchable by others \
         (chmod o+x it, or choose a --dir elsewhere)"
    )]
    Unreachable { dir: PathBuf, blocker: PathBuf },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("initdb failed ({status}):\n{output}")]
    Initdb { status: String, output: String },
}

/// Runs the store until it exits; the status to exit with.
pub async fn run(args: &StoreArgs) -> Result<i32, StoreError> {
    let binaries = command::find(args.kind, &command::Search::system())?;
    if args.check {
        println!("{}", binaries.server.display());
        return Ok(0);
    }
    // clap requires both without --check.
    let (Some(dir), Some(listen)) = (args.dir.as_deref(), args.listen) else {
        return Ok(2);
    };
    let dir = absolute(dir);
    std::fs::create_dir_all(&dir).map_err(|source| StoreError::Dir {
        dir: dir.clone(),
        source,
    })?;
    let user = match args.kind {
        StoreKind::Postgres => postgres_user(&dir)?,
        _ => None,
    };
    if args.kind == StoreKind::Postgres && !dir.join("PG_VERSION").exists() {
        initdb(&binaries, &dir, user.clone()).await?;
    }
    let (program, argv) = command::server(args.kind, &binaries, &dir, listen);
    tracing::info!(store = args.kind.name(), program = %program.display(), args = ?argv, "starting");
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv).stdin(Stdio::null()).kill_on_drop(true);
    as_user(&mut cmd, user);
    let mut child = cmd.spawn().map_err(|source| StoreError::Spawn {
        program: program.clone(),
        source,
    })?;
    forward_signals_until_exit(args.kind, &mut child).await
}

fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Waits for the child, passing on SIGTERM and SIGINT.
async fn forward_signals_until_exit(
    kind: StoreKind,
    child: &mut tokio::process::Child,
) -> Result<i32, StoreError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    loop {
        let received = tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|source| StoreError::Spawn {
                    program: PathBuf::from(kind.name()),
                    source,
                })?;
                return Ok(command::exit_code(status));
            }
            Some(()) = recv(&mut term) => nix::sys::signal::Signal::SIGTERM,
            Some(()) = recv(&mut int) => nix::sys::signal::Signal::SIGINT,
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let sent = command::forwarded_signal(kind, received);
            tracing::info!(store = kind.name(), received = %received, sent = %sent, "stopping");
            if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sent) {
                tracing::warn!(error = %e, "cannot signal the store");
            }
        }
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Whom PostgreSQL runs as: `None` for this process's user, the `postgres`
/// system user when this process is root (PostgreSQL refuses root). Then
/// DIR is handed to that user, who must be able to reach it.
fn postgres_user(dir: &Path) -> Result<Option<nix::unistd::User>, StoreError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or(StoreError::NoPostgresUser)?;
    for ancestor in dir.ancestors().skip(1) {
        if let Ok(meta) = std::fs::metadata(ancestor) {
            use std::os::unix::fs::MetadataExt;
            let searchable = meta.uid() == user.uid.as_raw()
                || meta.mode() & 0o001 != 0
                || (meta.gid() == user.gid.as_raw() && meta.mode() & 0o010 != 0);
            if !searchable {
                return Err(StoreError::Unreachable {
                    dir: dir.to_path_buf(),
                    blocker: ancestor.to_path_buf(),
                });
            }
        }
    }
    let dir_error = |source| StoreError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
        .map_err(dir_error)?;
    Ok(Some(user))
}

fn as_user(cmd: &mut tokio::process::Command, user: Option<nix::unistd::User>) {
    if let Some(user) = user {
        // std drops the supplementary groups too when switching from root.
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        cmd.env("HOME", &user.dir).env("USER", &user.name);
    }
}

/// Makes a new cluster in `dir`; its chatter is shown only if it fails.
async fn initdb(
    binaries: &Binaries,
    dir: &Path,
    user: Option<nix::unistd::User>,
) -> Result<(), StoreError> {
    let Some(program) = binaries.initdb.clone() else {
        return Err(Missing::new(StoreKind::Postgres, "initdb").into());
    };
    tracing::info!(dir = %dir.display(), "initdb: a new PostgreSQL cluster");
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(command::initdb_args(dir)).stdin(Stdio::null());
    as_user(&mut cmd, user);
    let out = cmd.output().await.map_err(|source| StoreError::Spawn {
        program: program.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(StoreError::Initdb {
        status: out.status.to_string(),
        output,
    })
}

/// The line a missing binary is reported with, and its exit status.
pub fn report_missing(missing: &Missing) -> i32 {
    eprintln!("error: {missing}");
    MISSING_EXIT
}

/// The argument list of a command as text, for logs and tests.
pub fn display_args(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}
