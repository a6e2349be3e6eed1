//! The controller's view of `tokens.json`: an in-memory cache looked up by
//! token hash (Certify with a token) or by token id (renewals, registration
//! admission). Each lookup compares the file's stamp (one `stat`); the file
//! is re-read only when the stamp changed, and at most once per second, so
//! a flood of unknown tokens costs no file reads and no log lines, while a
//! token created a moment ago is found (a miss during the quiet second
//! waits out the rest of it) and a revocation takes effect within a second.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{
    hash_token, is_well_formed, now_unix, read_store, tokens_path, TokenError, TokenRecord,
};

/// The least time between two looks at the file.
pub const UNKNOWN_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Why a caller was not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing join token")]
    Missing,
    #[error("malformed join token: expected mycel.<64 hex digits>")]
    Malformed,
    #[error("unknown join token: it was not created for this controller (create one with `mycelctl token create`)")]
    Unknown,
    #[error("unknown join token id {0}: the certificate was issued for a token this controller does not have")]
    UnknownId(String),
    #[error("join token {id} expired at {at} (unix time): create a new one with `mycelctl token create`")]
    Expired { id: String, at: u64 },
    #[error("join token {0} was revoked")]
    Revoked(String),
    #[error("token store unavailable: {0}")]
    Store(String),
}

/// (modification time, length, inode): a rename-replaced file changes inode.
type Stamp = (SystemTime, u64, u64);

#[derive(Default)]
struct Cache {
    by_hash: HashMap<String, Arc<TokenRecord>>,
    by_id: HashMap<String, Arc<TokenRecord>>,
    stamp: Option<Stamp>,
    last_reload: Option<Instant>,
    reloads: u64,
}

enum Key<'a> {
    Hash(&'a str),
    Id(&'a str),
}

pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<Cache>,
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

impl TokenStore {
    /// Loads the store if it exists; a missing store is an empty one.
    pub fn new(data_dir: &Path) -> Result<Self, TokenError> {
        let store = Self {
            path: tokens_path(data_dir),
            cache: Mutex::new(Cache::default()),
        };
        {
            let mut c = store.lock();
            store.reload(&mut c)?;
        }
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reload(&self, c: &mut Cache) -> Result<(), TokenError> {
        // Stamp first: a write racing the read is then seen next time.
        let stamp = stamp_of(&self.path);
        let file = read_store(&self.path)?;
        c.by_hash.clear();
        c.by_id.clear();
        for t in file.tokens {
            let t = Arc::new(t);
            c.by_id.insert(t.id().to_string(), t.clone());
            c.by_hash.insert(t.sha256.clone(), t);
        }
        c.stamp = stamp;
        c.reloads += 1;
        Ok(())
    }

    /// How many times the file was read (tests).
    #[cfg(test)]
    pub fn reloads(&self) -> u64 {
        self.lock().reloads
    }

    /// Re-reads the file if its stamp changed, unless it was read less
    /// than [`UNKNOWN_RELOAD_INTERVAL`] ago: then returns how long to wait.
    fn check(&self, now: Instant) -> Result<Option<Duration>, AuthError> {
        let mut c = self.lock();
        if stamp_of(&self.path) == c.stamp {
            return Ok(None);
        }
        if let Some(last) = c.last_reload {
            let since = now.saturating_duration_since(last);
            if since < UNKNOWN_RELOAD_INTERVAL {
                return Ok(Some(UNKNOWN_RELOAD_INTERVAL - since));
            }
        }
        c.last_reload = Some(now);
        self.reload(&mut c)
            .map_err(|e| AuthError::Store(e.to_string()))?;
        Ok(None)
    }

    fn get(&self, key: &Key<'_>) -> Option<Arc<TokenRecord>> {
        let c = self.lock();
        match key {
            Key::Hash(h) => c.by_hash.get(*h).cloned(),
            Key::Id(id) => c.by_id.get(*id).cloned(),
        }
    }

    async fn find(&self, key: Key<'_>) -> Result<Option<Arc<TokenRecord>>, AuthError> {
        match self.check(Instant::now())? {
            None => Ok(self.get(&key)),
            Some(wait) => {
                if let Some(found) = self.get(&key) {
                    return Ok(Some(found));
                }
                tokio::time::sleep(wait).await;
                self.check(Instant::now())?;
                Ok(self.get(&key))
            }
        }
    }

    /// The record of a join token that may still be used to join: known,
    /// not revoked, not expired.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<TokenRecord>, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if !is_well_formed(token) {
            return Err(AuthError::Malformed);
        }
        let hash = hash_token(token);
        let t = self
            .find(Key::Hash(&hash))
            .await?
            .ok_or(AuthError::Unknown)?;
        if t.revoked_unix.is_some() {
            return Err(AuthError::Revoked(t.id().to_string()));
        }
        if let Some(at) = t.expires_unix.filter(|_| t.is_expired(now_unix())) {
            return Err(AuthError::Expired {
                id: t.id().to_string(),
                at,
            });
        }
        Ok(t)
    }

    /// The record behind a certificate's token id, unless revoked. Expiry
    /// is not checked: it bounds when a workload may join, not how long a
    /// joined workload may keep renewing.
    pub async fn by_id(&self, id: &str) -> Result<Arc<TokenRecord>, AuthError> {
        let t = self
            .find(Key::Id(id))
            .await?
            .ok_or_else(|| AuthError::UnknownId(id.to_string()))?;
        if t.revoked_unix.is_some() {
            return Err(AuthError::Revoked(t.id().to_string()));
        }
        Ok(t)
    }
}
