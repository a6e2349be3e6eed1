//! The verification keys of one issuer: a JWKS (RFC 7517) read from a file
//! or fetched over HTTP, kept by `kid`, refreshed in the background and,
//! rate-limited, when a token names a `kid` the set does not have (the
//! issuer rotated its keys).
//!
//! A refresh that fails (the server is down, answers 500, sends a body
//! over the cap or a set with no usable key) keeps the keys already held:
//! an issuer's outage never leaves the gateway with fewer keys than it had.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

/// Largest JWKS body accepted: real sets are a few KiB; the cap bounds
/// what a misbehaving endpoint can make the gateway hold.
pub const DEFAULT_MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Largest RSA modulus accepted, in bytes (8192 bits, the most the RSA
/// implementation verifies with).
const MAX_RSA_MODULUS_BYTES: usize = 1024;

/// Most keys kept from one set. Issuers publish a handful; a token
/// without a `kid` is tried against each key of its algorithm, so the cap
/// bounds that work too.
pub const MAX_KEYS: usize = 64;

/// Where a JWKS comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    /// An `http://` URL; `https://` is refused until the fetch has TLS.
    Url(http::Uri),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(p) => write!(f, "{}", p.display()),
            JwksSource::Url(u) => write!(f, "{u}"),
        }
    }
}

/// Why a JWKS could not be read or used; names the source.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS {source_name}: {reason}")]
    Read { source_name: String, reason: String },
    #[error("JWKS {source_name}: answered HTTP {status}")]
    Status { source_name: String, status: u16 },
    #[error("JWKS {source_name}: larger than {max} bytes")]
    TooLarge { source_name: String, max: usize },
    #[error("JWKS {source_name}: no answer within {timeout:?}")]
    Timeout {
        source_name: String,
        timeout: Duration,
    },
    #[error("JWKS {source_name}: not a JWK set: {reason}")]
    Parse { source_name: String, reason: String },
    #[error("JWKS {source_name}: no usable key (of {total} entries; see the log for why each was skipped)")]
    NoUsableKey { source_name: String, total: usize },
    #[error("JWKS URL {url}: only http:// is supported for now (TLS to JWKS endpoints is not built yet)")]
    UnsupportedScheme { url: String },
    #[error("JWKS URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
}

/// The bytes of a JWKS, however they are got; behind a trait so tests can
/// count fetches or fail on demand.
pub trait JwksFetch: Send + Sync + 'static {
    /// What to call the source in errors and logs.
    fn name(&self) -> String;
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Bytes, JwksError>> + Send + '_>>;
}

/// Reads a JWKS file, at most `max_bytes`.
#[derive(Debug)]
pub struct FileFetch {
    pub path: PathBuf,
    pub max_bytes: usize,
}

impl JwksFetch for FileFetch {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Bytes, JwksError>> + Send + '_>> {
        Box::pin(async move {
            let read_err = |e: std::io::Error| JwksError::Read {
                source_name: self.name(),
                reason: e.to_string(),
            };
            let meta = tokio::fs::metadata(&self.path).await.map_err(read_err)?;
            if meta.len() > self.max_bytes as u64 {
                return Err(JwksError::TooLarge {
                    source_name: self.name(),
                    max: self.max_bytes,
                });
            }
            let body = tokio::fs::read(&self.path).await.map_err(read_err)?;
            // The file may have grown between the two calls.
            if body.len() > self.max_bytes {
                return Err(JwksError::TooLarge {
                    source_name: self.name(),
                    max: self.max_bytes,
                });
            }
            Ok(Bytes::from(body))
        })
    }
}

/// GETs a JWKS over plain HTTP/1.1, one connection per fetch, within
/// `timeout` for the whole exchange and at most `max_bytes` of body.
/// Only a 200 answer is a set: redirects are not followed (the URL to
/// configure is the final one), and no proxy is used.
#[derive(Debug)]
pub struct HttpFetch {
    url: http::Uri,
    host: String,
    port: u16,
    timeout: Duration,
    max_bytes: usize,
}

impl HttpFetch {
    pub fn new(url: http::Uri, timeout: Duration, max_bytes: usize) -> Result<Self, JwksError> {
        let (host, port) = check_url(&url)?;
        Ok(HttpFetch {
            url,
            host,
            port,
            timeout,
            max_bytes,
        })
    }

    async fn get(&self) -> Result<Bytes, JwksError> {
        let read_err = |reason: String| JwksError::Read {
            source_name: self.name(),
            reason,
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| read_err(format!("connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| read_err(format!("HTTP handshake: {e}")))?;
        // The connection lives only as long as this fetch.
        let conn = tokio::spawn(conn);
        let result = async {
            let path = self
                .url
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let authority = self.url.authority().map_or("", |a| a.as_str()).to_string();
            let req = http::Request::get(path)
                .header(http::header::HOST, authority)
                .header(http::header::ACCEPT, "application/json")
                .body(Empty::<Bytes>::new())
                .map_err(|e| read_err(format!("request: {e}")))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| read_err(format!("request: {e}")))?;
            if resp.status() != http::StatusCode::OK {
                return Err(JwksError::Status {
                    source_name: self.name(),
                    status: resp.status().as_u16(),
                });
            }
            // A Content-Length over the cap is refused before reading.
            let declared = resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > self.max_bytes as u64) {
                return Err(JwksError::TooLarge {
                    source_name: self.name(),
                    max: self.max_bytes,
                });
            }
            match Limited::new(resp.into_body(), self.max_bytes)
                .collect()
                .await
            {
                Ok(body) => Ok(body.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(JwksError::TooLarge {
                    source_name: self.name(),
                    max: self.max_bytes,
                }),
                Err(e) => Err(read_err(format!("body: {e}"))),
            }
        }
        .await;
        conn.abort();
        result
    }
}

/// Host and port of an `http://` JWKS URL.
fn check_url(url: &http::Uri) -> Result<(String, u16), JwksError> {
    let bad = |reason: &str| JwksError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    match url.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(JwksError::UnsupportedScheme {
                url: url.to_string(),
            })
        }
        _ => return Err(bad("needs http://host[:port]/path")),
    }
    let authority = url.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host.to_string(), authority.port_u16().unwrap_or(80)))
}

impl JwksFetch for HttpFetch {
    fn name(&self) -> String {
        self.url.to_string()
    }

    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Bytes, JwksError>> + Send + '_>> {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.get())
                .await
                .map_err(|_| JwksError::Timeout {
                    source_name: self.name(),
                    timeout: self.timeout,
                })?
        })
    }
}

/// What a key is, which decides the algorithms it may verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind may verify `alg`. Never true for HS*:
    /// a public key is never an HMAC secret (the HS/RS confusion attack).
    pub fn allows(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::P256, ES256)
                | (KeyKind::P384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }
}

/// One usable verification key.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's `alg`, when it names one: the only algorithm it verifies.
    pub alg: Option<Algorithm>,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.kind.allows(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// The keys of one fetched set.
#[derive(Debug, Default)]
pub struct Keys {
    by_kid: HashMap<String, Arc<Key>>,
    /// Every key, in the set's order: tokens without a `kid` try these.
    all: Vec<Arc<Key>>,
}

impl Keys {
    /// Parses a JWKS. Entries that are not usable verification keys are
    /// skipped with a warning (one bad entry must not take the issuer's
    /// other keys down); a set with none left is an error.
    pub fn parse(source_name: &str, body: &[u8]) -> Result<Keys, JwksError> {
        #[derive(serde::Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet = serde_json::from_slice(body).map_err(|e| JwksError::Parse {
            source_name: source_name.to_string(),
            reason: e.to_string(),
        })?;
        let total = raw.keys.len();
        let mut keys = Keys::default();
        for (i, entry) in raw.keys.into_iter().enumerate() {
            if keys.all.len() == MAX_KEYS {
                tracing::warn!(
                    jwks = source_name,
                    kept = MAX_KEYS,
                    total,
                    "JWKS: too many keys, the rest skipped"
                );
                break;
            }
            match key_of(entry) {
                Ok(key) => {
                    let key = Arc::new(key);
                    if let Some(kid) = &key.kid {
                        if keys.by_kid.contains_key(kid) {
                            tracing::warn!(
                                jwks = source_name,
                                kid,
                                "JWKS: duplicate kid, first kept"
                            );
                            continue;
                        }
                        keys.by_kid.insert(kid.clone(), key.clone());
                    }
                    keys.all.push(key);
                }
                Err(reason) => {
                    tracing::warn!(jwks = source_name, entry = i, reason, "JWKS: key skipped")
                }
            }
        }
        if keys.all.is_empty() {
            return Err(JwksError::NoUsableKey {
                source_name: source_name.to_string(),
                total,
            });
        }
        Ok(keys)
    }

    pub fn by_kid(&self, kid: &str) -> Option<&Arc<Key>> {
        self.by_kid.get(kid)
    }

    pub fn all(&self) -> &[Arc<Key>] {
        &self.all
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// One JWKS entry as a verification key, or why it is not one.
fn key_of(entry: serde_json::Value) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(entry).map_err(|e| format!("not a JWK: {e}"))?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("\"use\" is not \"sig\"".into());
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = b64url(&p.n).ok_or("RSA n is not base64url")?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if !(MIN_RSA_MODULUS_BYTES..=MAX_RSA_MODULUS_BYTES).contains(&significant) {
                return Err(format!(
                    "RSA key of {} bits; 2048 to 8192 are accepted",
                    significant * 8
                ));
            }
            b64url(&p.e).ok_or("RSA e is not base64url")?;
            KeyKind::Rsa
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (kind, len) = match p.curve {
                EllipticCurve::P256 => (KeyKind::P256, 32),
                EllipticCurve::P384 => (KeyKind::P384, 48),
                ref c => return Err(format!("EC curve {c:?} is not supported")),
            };
            for c in [&p.x, &p.y] {
                if b64url(c).map(|b| b.len()) != Some(len) {
                    return Err("EC x or y is not a coordinate of the curve".into());
                }
            }
            kind
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Err(format!("OKP curve {:?} is not supported", p.curve));
            }
            if b64url(&p.x).map(|b| b.len()) != Some(32) {
                return Err("Ed25519 x is not 32 bytes".into());
            }
            KeyKind::Ed25519
        }
        // A symmetric key in a public key set would let anyone who reads
        // the set sign tokens.
        AlgorithmParameters::OctetKey(_) => return Err("symmetric (oct) keys are refused".into()),
        _ => return Err("unsupported key type".into()),
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => {
            let alg = algorithm_of(a).ok_or_else(|| {
                format!("\"alg\" {a:?} is not a signature algorithm this gateway verifies")
            })?;
            if !kind.allows(alg) {
                return Err(format!("\"alg\" {alg:?} does not fit a {kind:?} key"));
            }
            Some(alg)
        }
    };
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok(Key {
        kid: jwk.common.key_id,
        kind,
        alg,
        decoding,
    })
}

/// Base64url without padding, as JOSE writes it (RFC 7515 section 2).
pub(super) fn b64url(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// The signature algorithms a JWK's `alg` may name.
fn algorithm_of(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Timing of refreshes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshSettings {
    /// Background refresh period.
    pub every: Duration,
    /// At most one refresh for an unknown `kid` per this much time, so a
    /// flood of tokens with made-up `kid`s cannot make the gateway hammer
    /// the issuer.
    pub unknown_kid_gap: Duration,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            every: Duration::from_secs(300),
            unknown_kid_gap: Duration::from_secs(30),
        }
    }
}

/// The keys held for a source, without the keys themselves.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeySetSummary {
    pub source: String,
    pub kids: Vec<String>,
    /// Usable keys, with or without a `kid`.
    pub keys: usize,
}

/// The keys of one issuer, swapped whole on refresh.
pub struct KeySet {
    fetch: Box<dyn JwksFetch>,
    settings: RefreshSettings,
    current: ArcSwap<Keys>,
    /// Held during a fetch: concurrent refreshes wait for the one running
    /// and then look at its result instead of fetching again.
    fetching: tokio::sync::Mutex<()>,
    last_unknown_kid_refresh: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("source", &self.fetch.name())
            .field("keys", &self.current.load().len())
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// A set with no keys yet: every token fails as `UnknownKey` until a
    /// refresh succeeds. For a gateway that must start while the issuer
    /// is unreachable.
    pub fn empty(fetch: Box<dyn JwksFetch>, settings: RefreshSettings) -> Arc<KeySet> {
        Arc::new(KeySet {
            fetch,
            settings,
            current: ArcSwap::from_pointee(Keys::default()),
            fetching: tokio::sync::Mutex::new(()),
            last_unknown_kid_refresh: Mutex::new(None),
        })
    }

    /// A set loaded once; fails when the first fetch does.
    pub async fn load(
        fetch: Box<dyn JwksFetch>,
        settings: RefreshSettings,
    ) -> Result<Arc<KeySet>, JwksError> {
        let set = KeySet::empty(fetch, settings);
        set.refresh().await?;
        Ok(set)
    }

    /// The fetcher for a source, with the fetch limits.
    pub fn fetcher(
        source: &JwksSource,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Box<dyn JwksFetch>, JwksError> {
        Ok(match source {
            JwksSource::File(path) => Box::new(FileFetch {
                path: path.clone(),
                max_bytes,
            }),
            JwksSource::Url(url) => Box::new(HttpFetch::new(url.clone(), timeout, max_bytes)?),
        })
    }

    pub fn source_name(&self) -> String {
        self.fetch.name()
    }

    pub fn keys(&self) -> Arc<Keys> {
        self.current.load_full()
    }

    /// What `/config_dump` can show of the set.
    pub fn summary(&self) -> KeySetSummary {
        let keys = self.current.load();
        KeySetSummary {
            source: self.fetch.name(),
            kids: keys.all().iter().filter_map(|k| k.kid.clone()).collect(),
            keys: keys.len(),
        }
    }

    /// Fetches the set again; on any error the keys held stay. Returns the
    /// number of usable keys.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _one = self.fetching.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Result<usize, JwksError> {
        let body = self.fetch.fetch().await?;
        let keys = Keys::parse(&self.fetch.name(), &body)?;
        let n = keys.len();
        self.current.store(Arc::new(keys));
        Ok(n)
    }

    /// Called when a token names `kid` and the set lacks it: refreshes
    /// once if no such refresh ran within the gap, and returns the key if
    /// the set now has it.
    pub async fn refresh_for_kid(&self, kid: &str) -> Option<Arc<Key>> {
        let _one = self.fetching.lock().await;
        // Another request's refresh may have brought the key meanwhile.
        if let Some(k) = self.current.load().by_kid(kid) {
            return Some(k.clone());
        }
        {
            let mut last = self
                .last_unknown_kid_refresh
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < self.settings.unknown_kid_gap) {
                return None;
            }
            *last = Some(now);
        }
        match self.refresh_locked().await {
            Ok(n) => {
                tracing::info!(jwks = %self.fetch.name(), keys = n, "JWKS refreshed for an unknown kid")
            }
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keys kept"),
        }
        self.current.load().by_kid(kid).cloned()
    }

    /// Refreshes every `settings.every` until the task is dropped;
    /// `refreshed` is told each outcome.
    pub async fn run_refresh(self: Arc<Self>, refreshed: impl Fn(bool)) {
        let mut tick = tokio::time::interval(self.settings.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: skipped when the set was loaded
        // just before, taken when it starts empty.
        if !self.current.load().is_empty() {
            tick.tick().await;
        }
        loop {
            tick.tick().await;
            match self.refresh().await {
                Ok(_) => refreshed(true),
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS refresh failed; keys kept");
                    refreshed(false);
                }
            }
        }
    }
}
