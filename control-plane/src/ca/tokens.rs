//! Local join tokens: `mycel.<64 hex>`, each bound to one (namespace,
//! service account). Only SHA-256 hashes are stored, in
//! `<data-dir>/tokens.json` (0600), so the file does not hand out
//! identities to whoever reads it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mycel_api::spiffe::SpiffeId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::files::{ensure_private_dir, write_private};

pub const TOKENS_FILE: &str = "tokens.json";
pub const TOKEN_PREFIX: &str = "mycel.";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "invalid {what} {value:?}: lowercase letters, digits, '-' and '.', at most 253 characters"
    )]
    InvalidName { what: &'static str, value: String },
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not a valid token store: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Why a caller was not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing join token")]
    Missing,
    #[error("malformed join token: expected mycel.<64 hex digits>")]
    Malformed,
    #[error("unknown join token: it was not created for this controller (create one with `mycelctl token create`)")]
    Unknown,
    #[error("token store unavailable: {0}")]
    Store(String),
}

/// Turns a credential into the (namespace, service account) it stands for.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, token: &str) -> Result<(String, String), AuthError>;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenEntry {
    sha256: String,
    namespace: String,
    service_account: String,
    created_unix: u64,
}

pub fn tokens_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKENS_FILE)
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a token has the shape `mycel.<64 lowercase hex>`.
pub fn is_well_formed(token: &str) -> bool {
    token.strip_prefix(TOKEN_PREFIX).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn read_store(path: &Path) -> Result<TokenFile, TokenError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TokenError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
        Err(cause) => Err(TokenError::Read {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

fn validate_names(namespace: &str, service_account: &str) -> Result<(), TokenError> {
    // Any trust domain works here: only the name rules of SpiffeId matter.
    SpiffeId::new("cluster.local", namespace, service_account)
        .map(|_| ())
        .map_err(|e| match e {
            mycel_api::spiffe::SpiffeIdError::Name(e) => TokenError::InvalidName {
                what: e.kind.as_str(),
                value: e.value,
            },
            other => TokenError::InvalidName {
                what: "identity",
                value: other.to_string(),
            },
        })
}

/// Creates a join token for `namespace`/`service_account`, records its hash
/// in `<data_dir>/tokens.json` and returns the token (shown once).
pub fn create_token(
    data_dir: &Path,
    namespace: &str,
    service_account: &str,
) -> Result<String, TokenError> {
    validate_names(namespace, service_account)?;
    ensure_private_dir(data_dir).map_err(|cause| TokenError::Write {
        path: data_dir.to_path_buf(),
        cause,
    })?;
    let path = tokens_path(data_dir);
    let mut store = read_store(&path)?;
    let secret: [u8; 32] = rand::random();
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    store.tokens.push(TokenEntry {
        sha256: hash_token(&token),
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    });
    let json = serde_json::to_vec_pretty(&store).map_err(|e| TokenError::Parse {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_private(&path, &json).map_err(|cause| TokenError::Write { path, cause })?;
    Ok(token)
}

/// Authenticates against `<data-dir>/tokens.json`, re-reading it when a
/// token is not known yet, so tokens created while the controller runs work.
pub struct LocalAuthenticator {
    path: PathBuf,
    known: Mutex<HashMap<String, (String, String)>>,
}

impl LocalAuthenticator {
    /// Loads the store if it exists; a missing store is an empty one.
    pub fn new(data_dir: &Path) -> Result<Self, TokenError> {
        let auth = Self {
            path: tokens_path(data_dir),
            known: Mutex::new(HashMap::new()),
        };
        auth.reload()?;
        Ok(auth)
    }

    fn reload(&self) -> Result<(), TokenError> {
        let store = read_store(&self.path)?;
        let map = store
            .tokens
            .into_iter()
            .map(|t| (t.sha256, (t.namespace, t.service_account)))
            .collect();
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }

    fn lookup(&self, hash: &str) -> Option<(String, String)> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
            .cloned()
    }
}

impl Authenticator for LocalAuthenticator {
    fn authenticate(&self, token: &str) -> Result<(String, String), AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if !is_well_formed(token) {
            return Err(AuthError::Malformed);
        }
        let hash = hash_token(token);
        if let Some(found) = self.lookup(&hash) {
            return Ok(found);
        }
        self.reload().map_err(|e| AuthError::Store(e.to_string()))?;
        self.lookup(&hash).ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_token_authenticates_to_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        let t = create_token(dir.path(), "shop", "catalog").unwrap();
        assert!(is_well_formed(&t), "{t}");
        let auth = LocalAuthenticator::new(dir.path()).unwrap();
        assert_eq!(
            auth.authenticate(&t).unwrap(),
            ("shop".into(), "catalog".into())
        );
    }

    #[test]
    fn store_holds_hashes_only_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let t = create_token(dir.path(), "shop", "catalog").unwrap();
        let path = tokens_path(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&t));
        assert!(!text.contains(t.trim_start_matches(TOKEN_PREFIX)));
        assert!(text.contains(&hash_token(&t)));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn token_created_after_start_is_found_by_reload() {
        let dir = tempfile::tempdir().unwrap();
        let auth = LocalAuthenticator::new(dir.path()).unwrap();
        let t1 = create_token(dir.path(), "a", "one").unwrap();
        let t2 = create_token(dir.path(), "b", "two").unwrap();
        assert_eq!(auth.authenticate(&t2).unwrap(), ("b".into(), "two".into()));
        assert_eq!(auth.authenticate(&t1).unwrap(), ("a".into(), "one".into()));
    }

    #[test]
    fn rejections() {
        let dir = tempfile::tempdir().unwrap();
        create_token(dir.path(), "shop", "catalog").unwrap();
        let auth = LocalAuthenticator::new(dir.path()).unwrap();
        let unknown = format!("mycel.{}", "ab".repeat(32));
        for (token, want) in [
            ("", AuthError::Missing),
            ("nope", AuthError::Malformed),
            ("mycel.xyz", AuthError::Malformed),
            (&*format!("mycel.{}", "AB".repeat(32)), AuthError::Malformed),
            (&*unknown, AuthError::Unknown),
        ] {
            assert_eq!(auth.authenticate(token).unwrap_err(), want, "{token}");
        }
    }

    #[test]
    fn invalid_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = create_token(dir.path(), "Shop", "catalog").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid namespace \"Shop\": lowercase letters, digits, '-' and '.', at most 253 characters"
        );
        let e = create_token(dir.path(), "shop", "").unwrap_err();
        assert!(
            e.to_string().starts_with("invalid service account \"\""),
            "{e}"
        );
        assert!(!tokens_path(dir.path()).exists());
    }

    #[test]
    fn corrupt_store_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(tokens_path(dir.path()), "{not json").unwrap();
        let e = create_token(dir.path(), "a", "b").unwrap_err();
        assert!(
            e.to_string()
                .contains("tokens.json is not a valid token store"),
            "{e}"
        );
        assert!(LocalAuthenticator::new(dir.path()).is_err());
    }
}
