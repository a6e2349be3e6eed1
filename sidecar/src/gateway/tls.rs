//! HTTPS at the gateway: the certificates it serves, chosen by SNI, read
//! from PEM files and reloaded when the files change; the rustls server
//! configuration (TLS 1.2 and 1.3, ALPN h2 and http/1.1, client
//! certificates from partners when a CA is given).
//!
//! A reload that fails (a half-written file, a key that does not match)
//! keeps the certificates already served: the gateway never ends up with
//! fewer certificates than it had because of a bad edit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde::Serialize;

use crate::core::pem_files::{read_certs, read_key, PemFileError};

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
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(transparent)]
    Pem(#[from] PemFileError),
    #[error("{path}: unusable private key: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: certificate does not parse: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: the certificate names no DNS host (subjectAltName dNSName)")]
    NoNames { path: PathBuf },
    #[error("{path}: no usable CA certificate: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// One loaded certificate and what it answers for.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// Lower-case DNS names; `*.example.com` for a wildcard.
    names: Vec<String>,
    not_after_unix: i64,
}

/// The certificates being served, by host name.
#[derive(Debug)]
struct Certs {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the part after `*.`: `example.com` for `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For clients that send no SNI or a name no certificate has.
    default: Arc<CertifiedKey>,
    summary: Vec<CertSummary>,
}

/// What `/config_dump` shows of a served certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertSummary {
    pub cert: PathBuf,
    pub names: Vec<String>,
    pub not_after_unix: i64,
}

impl Certs {
    fn build(files: &[CertFiles]) -> Result<Certs, TlsFileError> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut summary = Vec::with_capacity(files.len());
        let mut default = None;
        for f in files {
            let loaded = load_pair(f)?;
            for name in &loaded.names {
                // The first certificate given for a name keeps it: the
                // order of the flags decides, not the order of reloads.
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard
                        .entry(parent.to_string())
                        .or_insert_with(|| loaded.key.clone()),
                    None => exact
                        .entry(name.clone())
                        .or_insert_with(|| loaded.key.clone()),
                };
            }
            default.get_or_insert_with(|| loaded.key.clone());
            summary.push(CertSummary {
                cert: f.cert.clone(),
                names: loaded.names,
                not_after_unix: loaded.not_after_unix,
            });
        }
        let default = default.ok_or_else(|| TlsFileError::File {
            path: PathBuf::new(),
            reason: "no certificate given".into(),
        })?;
        Ok(Certs {
            exact,
            wildcard,
            default,
            summary,
        })
    }

    fn for_name(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        // A wildcard covers exactly one label.
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return k.clone();
            }
        }
        self.default.clone()
    }
}

fn load_pair(f: &CertFiles) -> Result<Loaded, TlsFileError> {
    let chain = read_certs(&f.cert)?;
    let leaf = chain.first().ok_or_else(|| TlsFileError::File {
        path: f.cert.clone(),
        reason: "no CERTIFICATE block found".into(),
    })?;
    let (names, not_after_unix) = names_of(&f.cert, leaf)?;
    let key = read_key(&f.key)?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| {
        TlsFileError::Key {
            path: f.key.clone(),
            source,
        }
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|_| TlsFileError::KeyMismatch {
            cert: f.cert.clone(),
            key: f.key.clone(),
        })?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if not_after_unix < now {
        // Served anyway, as a gateway with an expired certificate still
        // answers and clients say why they refuse; the log says it first.
        tracing::warn!(cert = %f.cert.display(), "gateway: certificate has expired");
    }
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        not_after_unix,
    })
}

/// The DNS names of a leaf certificate, lower-case, and its expiry.
fn names_of(path: &Path, der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), TlsFileError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsFileError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        return Err(TlsFileError::NoNames {
            path: path.to_path_buf(),
        });
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

/// The certificates the HTTPS listener serves, swapped whole on reload.
#[derive(Debug)]
pub struct CertStore {
    files: Vec<CertFiles>,
    current: ArcSwap<Certs>,
}

impl CertStore {
    /// Loads every certificate in `files`; the first is the default for
    /// clients without SNI or with a name no certificate has.
    pub fn load(files: Vec<CertFiles>) -> Result<Arc<CertStore>, TlsFileError> {
        let certs = Certs::build(&files)?;
        Ok(Arc::new(CertStore {
            files,
            current: ArcSwap::from_pointee(certs),
        }))
    }

    /// Reads the files again; on any error the served certificates stay.
    pub fn reload(&self) -> Result<(), TlsFileError> {
        let certs = Certs::build(&self.files)?;
        self.current.store(Arc::new(certs));
        Ok(())
    }

    pub fn summary(&self) -> Vec<CertSummary> {
        self.current.load().summary.clone()
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
    /// the task is dropped. `reloaded` is told each outcome.
    pub async fn watch(self: Arc<Self>, every: Duration, reloaded: impl Fn(bool)) {
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
        Some(self.0.current.load().for_name(hello.server_name()))
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

    fn leaf_names(k: &CertifiedKey) -> Vec<String> {
        names_of(Path::new("x"), &k.cert[0]).unwrap().0
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let shop = write_cert(dir.path(), "shop", &["shop.example"]);
        let wild = write_cert(dir.path(), "wild", &["*.api.example"]);
        let store = CertStore::load(vec![shop, wild]).unwrap();
        let certs = store.current.load();
        let pick = |sni| leaf_names(&certs.for_name(sni));
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
