//! The local mesh config cause: polls mesh.yaml and applies each valid new
//! version to the index as a whole. An invalid file is logged with the
//! document and field at fault, and the last good config stays in force.

mod parse;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use parse::{is_dns_label, is_service_name, parse_mesh_config, MeshConfig, ParseError};

use crate::index::{DuplicateService, SharedIndex};

/// How often the file is checked; cheap, because an unchanged stamp skips
/// reading it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("mesh config {path}: cannot read: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("mesh config {path}: {cause}")]
    Invalid { path: PathBuf, cause: ParseError },
}

/// Reads and validates a mesh config file.
pub fn load(path: &Path) -> Result<MeshConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|cause| LoadError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    parse_mesh_config(&text).map_err(|cause| LoadError::Invalid {
        path: path.to_path_buf(),
        cause,
    })
}

/// What one poll found.
#[derive(Debug)]
pub enum Poll {
    Unchanged,
    Changed(Result<MeshConfig, LoadError>),
}

/// Tracks the file's modification stamp and content hash between polls.
#[derive(Debug)]
pub struct MeshConfigWatcher {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    hash: Option<[u8; 32]>,
}

impl MeshConfigWatcher {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            stamp: None,
            hash: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the file once. A change of content (not just of mtime) yields
    /// the parse result; the same bad content is reported only once.
    pub fn poll(&mut self) -> Poll {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(cause) => {
                if self.stamp.take().is_some() || self.hash.is_some() {
                    self.hash = None;
                    return Poll::Changed(Err(LoadError::Read {
                        path: self.path.clone(),
                        cause,
                    }));
                }
                return Poll::Unchanged;
            }
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if self.stamp == Some(stamp) {
            return Poll::Unchanged;
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(cause) => {
                return Poll::Changed(Err(LoadError::Read {
                    path: self.path.clone(),
                    cause,
                }))
            }
        };
        self.stamp = Some(stamp);
        let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if self.hash == Some(hash) {
            return Poll::Unchanged;
        }
        self.hash = Some(hash);
        Poll::Changed(
            parse_mesh_config(&text).map_err(|cause| LoadError::Invalid {
                path: self.path.clone(),
                cause,
            }),
        )
    }
}

/// What was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    pub services: usize,
    pub policies: usize,
    /// Route objects (HTTPRoute, GRPCRoute).
    pub routes: usize,
    pub gateways: usize,
    pub authorization_policies: usize,
    pub peer_authentications: usize,
}

/// Applies a parsed config to the index (services, then their policies
/// and routes, under one lock), or says why the index refused it; a refused config
/// changes nothing.
pub fn apply(index: &SharedIndex, config: MeshConfig) -> Result<Applied, DuplicateService> {
    let applied = Applied {
        services: config.services.len(),
        policies: config.policies.len(),
        routes: config.route_count(),
        gateways: config.gateways.len(),
        authorization_policies: config.authz.len(),
        peer_authentications: config.peer_auth.len(),
    };
    let mut index = index.lock();
    index.apply_services(config.services)?;
    index.apply_policies(config.policies);
    index.apply_routes(config.routes);
    index.apply_gateways(config.gateways);
    index.apply_gateway_certificates(config.gateway_certificates);
    let mut authz = index.authorization().clone();
    authz.policies = config.authz;
    authz.peer = config.peer_auth;
    index.set_authorization(authz);
    Ok(applied)
}

/// Polls until `shutdown` turns true (or its sender is dropped).
pub async fn run(
    mut watcher: MeshConfigWatcher,
    index: SharedIndex,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
        match watcher.poll() {
            Poll::Unchanged => {}
            Poll::Changed(Ok(config)) => match apply(&index, config) {
                Ok(n) => {
                    tracing::info!(path = %watcher.path().display(), services = n.services, policies = n.policies, routes = n.routes, gateways = n.gateways, authorization_policies = n.authorization_policies, peer_authentications = n.peer_authentications, "mesh config applied")
                }
                Err(e) => {
                    tracing::error!(path = %watcher.path().display(), error = %e, "mesh config rejected; keeping the last good one")
                }
            },
            Poll::Changed(Err(e)) => {
                tracing::error!(error = %e, "mesh config rejected; keeping the last good one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {selector: {app: a}, ports: [{port: 80}]}\n";
    const TWO: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: x}\nspec: {selector: {app: b}, ports: [{port: 81}]}\n";

    fn changed_ok(p: Poll) -> Vec<crate::model::Service> {
        match p {
            Poll::Changed(Ok(s)) => s.services,
            other => panic!("expected a valid change, got {other:?}"),
        }
    }

    #[test]
    fn polls_changes_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, ONE).unwrap();
        let mut w = MeshConfigWatcher::new(&path);
        assert_eq!(changed_ok(w.poll()).len(), 1);
        assert!(matches!(w.poll(), Poll::Unchanged));
        std::fs::write(&path, format!("{ONE}---\n{TWO}")).unwrap();
        assert_eq!(changed_ok(w.poll()).len(), 2);
        assert!(matches!(w.poll(), Poll::Unchanged));
    }

    #[test]
    fn bad_file_is_reported_with_its_path_then_recovery_applies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, "apiVersion: v1\nkind: Pod\n").unwrap();
        let mut w = MeshConfigWatcher::new(&path);
        match w.poll() {
            Poll::Changed(Err(e)) => {
                let msg = e.to_string();
                assert!(msg.contains("mesh.yaml"), "{msg}");
                assert!(msg.contains("document 1"), "{msg}");
                assert!(msg.contains("\"Pod\""), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(w.poll(), Poll::Unchanged));
        std::fs::write(&path, ONE).unwrap();
        assert_eq!(changed_ok(w.poll()).len(), 1);
    }

    #[test]
    fn removed_file_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, ONE).unwrap();
        let mut w = MeshConfigWatcher::new(&path);
        changed_ok(w.poll());
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            w.poll(),
            Poll::Changed(Err(LoadError::Read { .. }))
        ));
        assert!(matches!(w.poll(), Poll::Unchanged));
        std::fs::write(&path, ONE).unwrap();
        assert_eq!(changed_ok(w.poll()).len(), 1);
    }

    #[test]
    fn load_names_missing_file() {
        let e = load(Path::new("/nonexistent/mesh.yaml")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("mesh config /nonexistent/mesh.yaml: cannot read"));
    }

    #[test]
    fn apply_keeps_last_good_in_index() {
        let index = SharedIndex::default();
        apply(&index, parse_mesh_config(ONE).unwrap()).unwrap();
        assert_eq!(index.lock().service_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn run_applies_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, ONE).unwrap();
        let index = SharedIndex::default();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(MeshConfigWatcher::new(&path), index.clone(), rx));
        tokio::time::sleep(POLL_INTERVAL * 2).await;
        assert_eq!(index.lock().service_count(), 1);
        std::fs::write(&path, "kind: Nope\n").unwrap();
        tokio::time::sleep(POLL_INTERVAL * 2).await;
        assert_eq!(index.lock().service_count(), 1, "last good config kept");
        tx.send(true).unwrap();
        task.await.unwrap();
    }
}
