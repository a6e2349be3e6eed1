//! HTTPS at the gateway: the certificates it serves, chosen by SNI, from
//! two sources: the `--tls-cert` PEM files (reloaded when they change) and
//! the certificates of the followed Gateway's HTTPS listeners, pushed by
//! the controller (replaced whole when the Gateway's set changes). The
//! files come first, so a name both hold is served from the file. Also the
//! rustls server configuration (TLS 1.2 and 1.3, ALPN h2 and http/1.1,
//! client certificates from partners when a CA is given).
//!
//! A reload that fails (a half-written file, a key that does not match)
//! keeps the certificates already served: the gateway never ends up with
//! fewer certificates than it had because of a bad edit. Pushed sets were
//! checked by discovery (a bad one is NACKed, the last good set stays).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde::Serialize;

use crate::core::directory::gateway_certs::GatewayCertificates;
use crate::core::pem_files::{read_certs, read_key, PemFileError};
use crate::core::server_cert::{ServerCert, ServerCertError};

/// ALPN protocols offered to clients, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One certificate and its private key, as files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why certificates could not be loaded; names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error(transparent)]
    Pem(#[from] PemFileError),
    /// `path` is the file at fault: the key file for a key that is
    /// unusable, else the certificate file.
    #[error("{path}: {problem}")]
    Cert {
        path: PathBuf,
        problem: ServerCertError,
    },
    #[error("{key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: no usable CA certificate: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// Where a served certificate came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSource {
    /// The certificate file of a `--tls-cert`.
    File(PathBuf),
    /// `<namespace>/<name>` of the Secret a listener of the Gateway names.
    Gateway(String),
}

impl std::fmt::Display for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertSource::File(path) => write!(f, "{}", path.display()),
            CertSource::Gateway(secret) => write!(f, "Secret {secret}"),
        }
    }
}

/// One certificate in the served set.
#[derive(Clone, Debug)]
struct Entry {
    source: CertSource,
    cert: ServerCert,
}

/// The certificates being served, by host name.
#[derive(Debug)]
struct Certs {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the part after `*.`: `example.com` for `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For clients that send no SNI or a name no certificate has: the
    /// first certificate of all. None when there is none at all (the
    /// handshake then fails).
    default: Option<Arc<CertifiedKey>>,
    summary: Vec<CertSummary>,
}

/// What is shown of a served certificate: never its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertSummary {
    pub source: CertSource,
    pub names: Vec<String>,
    pub not_after_unix: i64,
}

impl Certs {
    /// `entries` in the order they take names: the first certificate given
    /// for a name keeps it (the order of the flags, then of the Gateway's
    /// listeners, not the order of reloads).
    fn build<'a>(entries: impl Iterator<Item = &'a Entry>) -> Certs {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut summary = Vec::new();
        let mut default = None;
        for entry in entries {
            let key = &entry.cert.key;
            for name in &entry.cert.names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard
                        .entry(parent.to_string())
                        .or_insert_with(|| key.clone()),
                    None => exact.entry(name.clone()).or_insert_with(|| key.clone()),
                };
            }
            default.get_or_insert_with(|| key.clone());
            summary.push(CertSummary {
                source: entry.source.clone(),
                names: entry.cert.names.clone(),
                not_after_unix: entry.cert.not_after_unix,
            });
        }
        Certs {
            exact,
            wildcard,
            default,
            summary,
        }
    }

    fn for_name(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        // A wildcard covers exactly one label.
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }
}

fn load_pair(f: &CertFiles) -> Result<Entry, TlsFileError> {
    let chain = read_certs(&f.cert)?;
    let key = read_key(&f.key)?;
    let cert = ServerCert::from_der(chain, key).map_err(|problem| match problem {
        ServerCertError::KeyMismatch => TlsFileError::KeyMismatch {
            cert: f.cert.clone(),
            key: f.key.clone(),
        },
        problem => TlsFileError::Cert {
            path: if problem.is_key() { &f.key } else { &f.cert }.clone(),
            problem,
        },
    })?;
    if cert.expired() {
        // Served anyway, as a gateway with an expired certificate still
        // answers and clients say why they refuse; the log says it first.
        tracing::warn!(cert = %f.cert.display(), "gateway: certificate has expired");
    }
    Ok(Entry {
        source: CertSource::File(f.cert.clone()),
        cert,
    })
}

fn load_files(files: &[CertFiles]) -> Result<Vec<Entry>, TlsFileError> {
    files.iter().map(load_pair).collect()
}

/// The two sources of the served set, each replaced on its own.
#[derive(Debug, Default)]
struct Held {
    files: Vec<Entry>,
    pushed: Vec<Entry>,
}

/// The certificates the HTTPS listener serves, swapped whole whenever the
/// files or the Gateway's certificates change: a new set applies to new
/// handshakes, open connections keep the certificate they got.
#[derive(Debug)]
pub struct CertStore {
    files: Vec<CertFiles>,
    /// Both sources, so that replacing one rebuilds the set with the
    /// other as it is. Locked only to rebuild (never across an await):
    /// the file watcher and the Gateway follower may update at once, and
    /// neither may lose the other's change.
    held: Mutex<Held>,
    current: ArcSwap<Certs>,
}

impl CertStore {
    /// Loads every certificate in `files`; the first is the default for
    /// clients without SNI or with a name no certificate has. No files is
    /// a store that waits for certificates from a Gateway.
    pub fn load(files: Vec<CertFiles>) -> Result<Arc<CertStore>, TlsFileError> {
        let held = Held {
            files: load_files(&files)?,
            pushed: Vec::new(),
        };
        let certs = Certs::build(held.files.iter());
        Ok(Arc::new(CertStore {
            files,
            held: Mutex::new(held),
            current: ArcSwap::from_pointee(certs),
        }))
    }

    fn update(&self, change: impl FnOnce(&mut Held)) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut held);
        let certs = Certs::build(held.files.iter().chain(&held.pushed));
        self.current.store(Arc::new(certs));
    }

    /// Reads the files again; on any error the served certificates stay.
    pub fn reload(&self) -> Result<(), TlsFileError> {
        let files = load_files(&self.files)?;
        self.update(|held| held.files = files);
        Ok(())
    }

    /// Replaces the Gateway's certificates with `pushed`, whole; the files
    /// keep their names and their place before them.
    pub fn set_pushed(&self, pushed: &GatewayCertificates) {
        let entries: Vec<Entry> = pushed
            .certificates
            .iter()
            .map(|c| {
                if c.cert.expired() {
                    tracing::warn!(source = %c.source, "gateway: certificate from the Gateway has expired");
                }
                Entry {
                    source: CertSource::Gateway(c.source.clone()),
                    cert: c.cert.clone(),
                }
            })
            .collect();
        self.update(|held| held.pushed = entries);
    }

    /// Every served certificate, files first: source, names, expiry.
    pub fn summary(&self) -> Vec<CertSummary> {
        self.current.load().summary.clone()
    }

    /// True while there is no certificate to serve at all.
    pub fn is_empty(&self) -> bool {
        self.current.load().default.is_none()
    }

    /// Size and modification time of every file, to notice changes.
    fn stamps(&self) -> Vec<Option<(u64, SystemTime)>> {
        self.files
            .iter()
            .flat_map(|f| [&f.cert, &f.key])
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.len(), m.modified().ok()?))
            })
            .collect()
    }

    /// Reloads whenever a file changes, checking every `every`, until
    /// the task is dropped. `reloaded` is told each outcome. Without files
    /// there is nothing to watch, and it waits until dropped.
    pub async fn watch(self: Arc<Self>, every: Duration, reloaded: impl Fn(bool)) {
        if self.files.is_empty() {
            return std::future::pending().await;
        }
        let mut seen = self.stamps();
        // The stamps of the last failed attempt, so a bad file is reported
        // once, not at every tick.
        let mut failed = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = self.stamps();
            if now == seen {
                continue;
            }
            // Tried at every tick until it works: files are often replaced
            // one after the other (certificate, then key), and the first
            // attempt may see a new certificate beside the old key.
            match self.reload() {
                Ok(()) => {
                    tracing::info!("gateway: certificates reloaded");
                    seen = now;
                    failed = None;
                    reloaded(true);
                }
                Err(e) if failed.as_ref() != Some(&now) => {
                    tracing::warn!(error = %e, "gateway: certificate reload failed; still serving the previous certificates");
                    failed = Some(now);
                    reloaded(false);
                }
                Err(_) => {}
            }
        }
    }
}

#[derive(Debug)]
struct BySni(Arc<CertStore>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // None fails the handshake: there is no certificate at all yet.
        self.0.current.load().for_name(hello.server_name())
    }
}

/// The HTTPS listener's TLS configuration. With `client_ca`, every client
/// must present a certificate chaining to it (partners' mTLS).
pub fn server_config(
    store: Arc<CertStore>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsFileError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsFileError::Config)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certs = read_certs(path).map_err(|e| TlsFileError::ClientCa {
                path: path.to_path_buf(),
                reason: e.reason,
            })?;
            for cert in certs {
                roots.add(cert).map_err(|e| TlsFileError::ClientCa {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsFileError::ClientCa {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(BySni(store)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, name: &str, hosts: &[&str]) -> CertFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn leaf_names(k: Option<Arc<CertifiedKey>>) -> Vec<String> {
        crate::core::server_cert::names_of(&k.expect("a certificate").cert[0])
            .unwrap()
            .0
    }

    /// What the controller would push: a set of certificates by Secret.
    fn pushed(certs: &[(&str, &[&str])]) -> GatewayCertificates {
        use crate::core::directory::gateway_certs::GatewayCertificate;
        GatewayCertificates {
            certificates: certs
                .iter()
                .map(|(source, hosts)| {
                    let key = rcgen::KeyPair::generate().unwrap();
                    let params = rcgen::CertificateParams::new(
                        hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                    )
                    .unwrap();
                    let cert = params.self_signed(&key).unwrap();
                    GatewayCertificate {
                        source: source.to_string(),
                        cert: ServerCert::from_pem(
                            cert.pem().as_bytes(),
                            key.serialize_pem().as_bytes(),
                        )
                        .unwrap(),
                    }
                })
                .collect(),
        }
    }

    /// The source of the certificate a client sending `sni` gets.
    fn served_source(store: &CertStore, sni: Option<&str>) -> Option<String> {
        let certs = store.current.load();
        let key = certs.for_name(sni)?;
        let held = store.held.lock().unwrap();
        let at = held
            .files
            .iter()
            .chain(&held.pushed)
            .find(|e| Arc::ptr_eq(&e.cert.key, &key))
            .map(|e| e.source.to_string());
        at
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let shop = write_cert(dir.path(), "shop", &["shop.example"]);
        let wild = write_cert(dir.path(), "wild", &["*.api.example"]);
        let store = CertStore::load(vec![shop, wild]).unwrap();
        let certs = store.current.load();
        let pick = |sni| leaf_names(certs.for_name(sni));
        assert_eq!(pick(Some("shop.example")), ["shop.example"]);
        assert_eq!(pick(Some("SHOP.example.")), ["shop.example"], "case, dot");
        assert_eq!(pick(Some("v1.api.example")), ["*.api.example"]);
        // One label only, as browsers match wildcards.
        assert_eq!(pick(Some("a.v1.api.example")), ["shop.example"]);
        assert_eq!(pick(Some("other.example")), ["shop.example"]);
        assert_eq!(pick(None), ["shop.example"]);
    }

    #[test]
    fn bad_files_are_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_cert(dir.path(), "good", &["shop.example"]);
        let other = write_cert(dir.path(), "other", &["other.example"]);
        let missing = CertFiles {
            cert: dir.path().join("absent.crt"),
            key: good.key.clone(),
        };
        let e = CertStore::load(vec![missing]).unwrap_err().to_string();
        assert!(e.contains("absent.crt"), "{e}");

        let swapped = CertFiles {
            cert: good.cert.clone(),
            key: other.key.clone(),
        };
        let e = CertStore::load(vec![swapped]).unwrap_err().to_string();
        assert!(
            e.contains("other.key") && e.contains("does not belong"),
            "{e}"
        );

        let key_as_cert = CertFiles {
            cert: good.key.clone(),
            key: good.key.clone(),
        };
        let e = CertStore::load(vec![key_as_cert]).unwrap_err().to_string();
        assert!(e.contains("no CERTIFICATE"), "{e}");

        let garbage = dir.path().join("garbage.key");
        std::fs::write(
            &garbage,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = CertStore::load(vec![CertFiles {
            cert: good.cert.clone(),
            key: garbage,
        }])
        .unwrap_err()
        .to_string();
        assert!(e.contains("garbage.key"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_served_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_cert(dir.path(), "shop", &["shop.example"]);
        let store = CertStore::load(vec![files.clone()]).unwrap();
        std::fs::write(&files.cert, "half a file").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.summary()[0].names, ["shop.example"]);

        // A new certificate for new names replaces it whole.
        let fresh = write_cert(dir.path(), "fresh", &["new.example"]);
        std::fs::copy(&fresh.cert, &files.cert).unwrap();
        std::fs::copy(&fresh.key, &files.key).unwrap();
        store.reload().unwrap();
        assert_eq!(store.summary()[0].names, ["new.example"]);
    }

    #[test]
    fn files_keep_their_names_before_pushed_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_cert(dir.path(), "shop", &["shop.example"]);
        let store = CertStore::load(vec![file.clone()]).unwrap();
        store.set_pushed(&pushed(&[
            ("shop/same-name", &["shop.example", "a.test"]),
            ("shop/wild", &["*.api.test"]),
        ]));
        let file_source = file.cert.display().to_string();
        let pick = |sni| served_source(&store, Some(sni));
        assert_eq!(pick("shop.example"), Some(file_source.clone()), "files win");
        assert_eq!(pick("a.test"), Some("Secret shop/same-name".into()));
        assert_eq!(pick("v1.api.test"), Some("Secret shop/wild".into()));
        assert_eq!(
            pick("a.v1.api.test"),
            Some(file_source.clone()),
            "one label"
        );
        assert_eq!(
            pick("other.test"),
            Some(file_source.clone()),
            "the first of all"
        );
        assert_eq!(served_source(&store, None), Some(file_source.clone()));

        // A file reload keeps the pushed set.
        store.reload().unwrap();
        assert_eq!(pick("a.test"), Some("Secret shop/same-name".into()));
    }

    #[test]
    fn a_pushed_set_is_replaced_whole_and_summarised_without_keys() {
        let store = CertStore::load(vec![]).unwrap();
        assert!(store.is_empty());
        assert_eq!(
            served_source(&store, Some("a.test")),
            None,
            "nothing to serve"
        );

        store.set_pushed(&pushed(&[("shop/a", &["a.test"]), ("shop/b", &["b.test"])]));
        assert!(!store.is_empty());
        assert_eq!(
            served_source(&store, Some("b.test")),
            Some("Secret shop/b".into())
        );
        // Without files, the first pushed certificate is the default.
        assert_eq!(served_source(&store, None), Some("Secret shop/a".into()));

        store.set_pushed(&pushed(&[("shop/c", &["*.c.test"])]));
        assert_eq!(
            served_source(&store, Some("b.test")),
            Some("Secret shop/c".into()),
            "b is gone: the default now"
        );
        assert_eq!(
            served_source(&store, Some("x.c.test")),
            Some("Secret shop/c".into())
        );
        let summary = store.summary();
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].source, CertSource::Gateway("shop/c".into()));
        assert_eq!(summary[0].names, ["*.c.test"]);
        assert!(summary[0].not_after_unix > 0);
        let json = serde_json::to_string(&summary).unwrap();
        assert_eq!(
            json,
            format!(
                r#"[{{"source":{{"gateway":"shop/c"}},"names":["*.c.test"],"not_after_unix":{}}}]"#,
                summary[0].not_after_unix
            )
        );

        store.set_pushed(&GatewayCertificates::default());
        assert!(store.is_empty(), "an empty set: none again");
    }

    #[test]
    fn a_client_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_cert(dir.path(), "shop", &["shop.example"]);
        let store = CertStore::load(vec![files.clone()]).unwrap();
        let e = server_config(store.clone(), Some(&files.key))
            .unwrap_err()
            .to_string();
        assert!(e.contains("shop.key") && e.contains("CA"), "{e}");
        let config = server_config(store, Some(&files.cert)).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
