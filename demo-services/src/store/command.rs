//! The pure half of `mycel-demo store`: where each server binary is found,
//! the command lines that run it, and which signal it is stopped with.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use nix::sys::signal::Signal;

use super::StoreKind;

/// A server binary is not installed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{binary} not found ({looked}): install the Debian package {package}")]
pub struct Missing {
    pub binary: &'static str,
    pub package: &'static str,
    looked: &'static str,
}

impl Missing {
    pub fn new(kind: StoreKind, binary: &'static str) -> Self {
        let (package, looked) = match kind {
            StoreKind::Postgres => (
                "postgresql",
                "looked on PATH and in /usr/lib/postgresql/*/bin",
            ),
            StoreKind::Redis => ("redis-server", "looked on PATH"),
            StoreKind::Nats => ("nats-server", "looked on PATH"),
        };
        Missing {
            binary,
            package,
            looked,
        }
    }
}

/// Where binaries are looked for.
#[derive(Clone, Debug, Default)]
pub struct Search {
    /// The directories of PATH, in order.
    pub path: Vec<PathBuf>,
    /// Where Debian installs PostgreSQL versions side by side
    /// (`/usr/lib/postgresql/<version>/bin`, which is not on PATH).
    pub postgres_root: PathBuf,
}

impl Search {
    pub fn system() -> Self {
        Search {
            path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
            postgres_root: PathBuf::from("/usr/lib/postgresql"),
        }
    }

    fn on_path(&self, name: &str) -> Option<PathBuf> {
        self.path
            .iter()
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    }

    /// `<root>/<version>/bin`, newest version first.
    fn postgres_bins(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.postgres_root) else {
            return Vec::new();
        };
        let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                Some((version_key(&name)?, e.path().join("bin")))
            })
            .collect();
        versions.sort_by(|a, b| b.0.cmp(&a.0));
        versions.into_iter().map(|(_, bin)| bin).collect()
    }
}

/// `15` → `[15]`, `9.6` → `[9, 6]`; other names are not versions.
pub fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The binaries one store needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    pub server: PathBuf,
    /// PostgreSQL's cluster maker, from the same directory as its server.
    pub initdb: Option<PathBuf>,
}

/// Finds the binaries of `kind`. PostgreSQL's pair comes from one
/// directory, so a PATH `postgres` is never mixed with another version's
/// `initdb`.
pub fn find(kind: StoreKind, search: &Search) -> Result<Binaries, Missing> {
    match kind {
        StoreKind::Postgres => {
            let dirs = search.path.iter().cloned().chain(search.postgres_bins());
            for dir in dirs {
                let server = dir.join("postgres");
                if is_executable(&server) {
                    let initdb = dir.join("initdb");
                    return Ok(Binaries {
                        server,
                        initdb: is_executable(&initdb).then_some(initdb),
                    });
                }
            }
            Err(Missing::new(kind, "postgres"))
        }
        StoreKind::Redis => search
            .on_path("redis-server")
            .map(|server| Binaries {
                server,
                initdb: None,
            })
            .ok_or(Missing::new(kind, "redis-server")),
        StoreKind::Nats => search
            .on_path("nats-server")
            .map(|server| Binaries {
                server,
                initdb: None,
            })
            .ok_or(Missing::new(kind, "nats-server")),
    }
}

/// The user every demo service connects to PostgreSQL as.
pub const POSTGRES_SUPERUSER: &str = "shop";

/// `initdb`: the cluster's superuser is `shop`, and every local and
/// loopback connection is trusted (the mesh decides who reaches the port).
pub fn initdb_args(dir: &Path) -> Vec<OsString> {
    vec![
        "-D".into(),
        dir.into(),
        "-U".into(),
        POSTGRES_SUPERUSER.into(),
        "--auth=trust".into(),
        "-E".into(),
        "UTF8".into(),
        // The C locale exists everywhere; the shop sorts nothing by language.
        "--locale=C".into(),
    ]
}

/// The server's program and arguments.
pub fn server(
    kind: StoreKind,
    binaries: &Binaries,
    dir: &Path,
    listen: SocketAddr,
) -> (PathBuf, Vec<OsString>) {
    let ip = listen.ip().to_string();
    let port = listen.port().to_string();
    let args: Vec<OsString> = match kind {
        // The unix socket goes in DIR too, not in /var/run/postgresql,
        // which may not exist or belong to another cluster.
        StoreKind::Postgres => vec![
            "-D".into(),
            dir.into(),
            "-h".into(),
            ip.into(),
            "-p".into(),
            port.into(),
            "-k".into(),
            dir.into(),
        ],
        StoreKind::Redis => vec![
            "--bind".into(),
            ip.into(),
            "--port".into(),
            port.into(),
            "--dir".into(),
            dir.into(),
            "--appendonly".into(),
            "yes".into(),
            "--save".into(),
            "".into(),
        ],
        StoreKind::Nats => vec![
            "-a".into(),
            ip.into(),
            "-p".into(),
            port.into(),
            "-js".into(),
            "-sd".into(),
            dir.into(),
        ],
    };
    (binaries.server.clone(), args)
}

/// The signal a store is sent when this process gets `received`.
pub fn forwarded_signal(kind: StoreKind, received: Signal) -> Signal {
    match (kind, received) {
        (StoreKind::Postgres, Signal::SIGTERM) => Signal::SIGINT,
        (_, signal) => signal,
    }
}

/// The status this process exits with for the child's: its code, or
/// 128 + the signal that ended it, as a shell reports it.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args_text(args: &[OsString]) -> String {
        super::super::display_args(args).join(" ")
    }

    #[test]
    fn command_lines() {
        let bins = Binaries {
            server: "/bin/x".into(),
            initdb: None,
        };
        let listen: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let dir = Path::new("/data/db");
        let cases = [
            (
                StoreKind::Postgres,
                "-D /data/db -h 127.0.0.1 -p 7001 -k /data/db",
            ),
            (
                StoreKind::Redis,
                "--bind 127.0.0.1 --port 7001 --dir /data/db --appendonly yes --save ",
            ),
            (StoreKind::Nats, "-a 127.0.0.1 -p 7001 -js -sd /data/db"),
        ];
        for (kind, want) in cases {
            let (program, args) = server(kind, &bins, dir, listen);
            assert_eq!(program, PathBuf::from("/bin/x"));
            assert_eq!(args_text(&args), want, "{kind:?}");
        }
        // `--save ''`: one empty argument, not none.
        let (_, redis) = server(StoreKind::Redis, &bins, dir, listen);
        assert_eq!(redis.last().map(|a| a.is_empty()), Some(true));
        assert_eq!(
            args_text(&initdb_args(dir)),
            "-D /data/db -U shop --auth=trust -E UTF8 --locale=C"
        );
    }

    #[test]
    fn postgres_gets_a_fast_shutdown() {
        use Signal::{SIGINT, SIGTERM};
        let cases = [
            (StoreKind::Postgres, SIGTERM, SIGINT),
            (StoreKind::Postgres, SIGINT, SIGINT),
            (StoreKind::Redis, SIGTERM, SIGTERM),
            (StoreKind::Nats, SIGTERM, SIGTERM),
            (StoreKind::Nats, SIGINT, SIGINT),
        ];
        for (kind, received, want) in cases {
            assert_eq!(
                forwarded_signal(kind, received),
                want,
                "{kind:?} {received}"
            );
        }
    }

    #[test]
    fn version_keys_sort_numerically() {
        assert_eq!(version_key("15"), Some(vec![15]));
        assert_eq!(version_key("9.6"), Some(vec![9, 6]));
        assert_eq!(version_key("common"), None);
        assert!(version_key("15") > version_key("9.6"));
    }

    fn fake_binary(dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn finds_the_newest_postgres_and_names_what_is_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("postgresql");
        let empty = Search {
            path: vec![tmp.path().join("nowhere")],
            postgres_root: root.clone(),
        };
        for (kind, package) in [
            (StoreKind::Postgres, "postgresql"),
            (StoreKind::Redis, "redis-server"),
            (StoreKind::Nats, "nats-server"),
        ] {
            let err = find(kind, &empty).unwrap_err();
            assert_eq!(err.package, package);
            assert!(
                err.to_string()
                    .ends_with(&format!("install the Debian package {package}")),
                "{err}"
            );
        }
        for version in ["9.6", "15", "13"] {
            let bin = root.join(version).join("bin");
            fake_binary(&bin, "postgres");
            fake_binary(&bin, "initdb");
        }
        let found = find(StoreKind::Postgres, &empty).unwrap();
        assert_eq!(found.server, root.join("15/bin/postgres"));
        assert_eq!(found.initdb, Some(root.join("15/bin/initdb")));
        // PATH comes first.
        let on_path = tmp.path().join("path");
        fake_binary(&on_path, "postgres");
        fake_binary(&on_path, "nats-server");
        let search = Search {
            path: vec![on_path.clone()],
            postgres_root: root,
        };
        let found = find(StoreKind::Postgres, &search).unwrap();
        assert_eq!(
            (found.server, found.initdb),
            (on_path.join("postgres"), None)
        );
        let found = find(StoreKind::Nats, &search).unwrap();
        assert_eq!(found.server, on_path.join("nats-server"));
    }
}
