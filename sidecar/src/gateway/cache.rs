//! The gateway's HTTP response cache: a shared cache (RFC 9111) for
//! responses to GET, kept in memory and bounded by bytes.
//!
//! The cache does no I/O. The gateway asks it about each request before
//! forwarding ([`Cache::lookup`]) and hands it the backend's response
//! afterwards ([`Cache::complete`]):
//!
//! - [`Lookup::Hit`]: a fresh stored response answers (`Age` and
//!   `mycel-cache: hit` added; a 304 when the client's `If-None-Match` or
//!   `If-Modified-Since` matches it). HEAD is answered from a stored GET.
//! - [`Lookup::Revalidate`]: a stored response needs the backend's
//!   confirmation (stale, `no-cache`, or the client asked with `no-cache`
//!   or `max-age=0`). The request goes with the conditional headers given;
//!   a 304 refreshes the stored response, which then answers
//!   (`mycel-cache: revalidated`); a new response replaces it; a 5xx passes
//!   through and the stored response stays (serving it stale on errors,
//!   `stale-if-error`, is not done).
//! - [`Lookup::Miss`]: forward; the response comes back with
//!   `mycel-cache: miss` and, if storable, is copied while it streams and
//!   stored once its body ends (`record`).
//! - [`Lookup::Bypass`]: the cache has nothing to do with this request
//!   (not GET or HEAD, `Cache-Control: no-store`, a precondition such as
//!   `If-Match`, no usable host). The caller forwards it and never calls
//!   the cache again, so its response carries no `mycel-cache` header.
//!
//! Unsafe methods (POST, PUT, DELETE, PATCH...) come back as `Miss`: a
//! success or redirect then invalidates what is stored for the URL (RFC
//! 9111 §4.4); their responses get no `mycel-cache` header.
//!
//! What is stored, being a cache shared by every client of the gateway:
//! responses to GET with a status cacheable by default (200, 203, 204, 300,
//! 301, 308, 404, 405, 410, 414, 501) and either explicit freshness
//! (`freshness`) or a validator (`ETag`, `Last-Modified`) to revalidate
//! with. Never: `no-store`, `private`, `Vary: *`, partial content,
//! responses to requests with `Authorization` unless the response allows
//! it (`public`, `s-maxage`, `must-revalidate`, RFC 9111 §3.5), errors the
//! proxy made itself (`mycel-proxy-error`), and responses with
//! `Set-Cookie`. RFC 9111 allows storing the last, but a cookie is almost
//! always one user's (a session), and a backend that forgets `private` on
//! its login response would otherwise hand that session to everyone who
//! asks next. Any `mycel-cache` header from the backend is replaced, so it
//! cannot claim a hit.
//!
//! Lookups find a response by primary key and `Vary` values (`key`).
//! Memory is bounded (`store`): at most `max_bytes` stored, counted as
//! key, fields and body (each field 32 bytes more, as HPACK counts them,
//! RFC 7541 §4.1, and each entry [`ENTRY_OVERHEAD`] more); at most
//! `max_entry_bytes` per entry; at most [`MAX_VARIANTS`] variants per URL;
//! at most `max_bytes` more being copied from responses in flight.
//! Least recently used entries are evicted first.
//!
//! Not done (each would be a deliberate addition): heuristic freshness,
//! `stale-while-revalidate` and `stale-if-error`, request `max-stale`,
//! `min-fresh` and `only-if-cached`, collapsing concurrent misses of one
//! URL into one backend request, storing a HEAD response or updating from
//! one, and invalidating `Location`/`Content-Location` URLs.
//!
//! Times are the caller's `SystemTime`s (`now`), so tests pass their own.

mod directives;
mod entry;
mod freshness;
mod key;
mod record;
mod store;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::core::http::{empty, Body};
use directives::Directives;
use entry::{allows_authorization, clean, content_length, Entry, Head};
use freshness::Timing;
use record::{record, Capture, InFlight};
use store::Store;
use validate::Validators;

pub use entry::{NotStorable, ENTRY_OVERHEAD};
pub use key::{KeyError, VaryError, MAX_VARY_FIELDS};
pub use store::MAX_VARIANTS;

/// Set on every response to a GET or HEAD the cache took part in: `hit`,
/// `revalidated` or `miss` ([`CacheStatus`]).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("mycel-cache");

/// Default [`CacheConfig::max_bytes`]: room for thousands of typical API
/// responses, small next to the gateway's other memory.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
/// Default [`CacheConfig::max_entry_bytes`]: large responses (downloads,
/// media) are better served from a CDN or the backend than copied here.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1 << 20;
/// Smallest per-entry cap accepted: below it few responses' fields alone
/// would fit.
pub const MIN_ENTRY_BYTES: usize = 4 << 10;

/// Request preconditions the cache does not evaluate: such requests go to
/// the backend, which does.
const PRECONDITIONS: [HeaderName; 3] = [
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// How a response came about, as [`CACHE_STATUS`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// From the cache, without asking the backend.
    Hit,
    /// From the cache, after the backend answered 304.
    Revalidated,
    /// From the backend.
    Miss,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Miss => "miss",
        }
    }

    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// Size of a [`Cache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most bytes stored in all (see the module doc for how entries are
    /// counted).
    pub max_bytes: usize,
    /// Most bytes one entry may be counted as; a larger response passes
    /// through unstored.
    pub max_entry_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        }
    }
}

/// Why a [`CacheConfig`] is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("max_entry_bytes is {0}, less than the minimum {MIN_ENTRY_BYTES}")]
    EntryTooSmall(usize),
    #[error("max_entry_bytes ({entry}) is more than max_bytes ({max})")]
    EntryLargerThanCache { entry: usize, max: usize },
}

/// Counters for metrics; each read is a few atomic loads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups of GET and HEAD with nothing usable stored.
    pub misses: u64,
    /// Lookups answered with [`Lookup::Revalidate`].
    pub revalidations: u64,
    /// Revalidations the backend answered 304 (served from the cache).
    pub not_modified: u64,
    /// Lookups answered with [`Lookup::Bypass`].
    pub bypasses: u64,
    /// Responses stored.
    pub stores: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Entries removed after an unsafe request succeeded.
    pub invalidations: u64,
    /// Entries stored now.
    pub entries: u64,
    /// Bytes stored now, as entries are counted.
    pub bytes: u64,
    /// Bytes copied from responses still streaming, to be stored when
    /// they end.
    pub recording_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    revalidations: AtomicU64,
    not_modified: AtomicU64,
    bypasses: AtomicU64,
    stores: AtomicU64,
    invalidations: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The response cache. Cheap to clone (the clones share the entries).
#[derive(Clone, Debug)]
pub struct Cache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: CacheConfig,
    store: Store<Entry>,
    in_flight: Arc<InFlight>,
    counters: Counters,
}

/// What the cache can do for a request ([`Cache::lookup`]).
pub enum Lookup {
    /// The response, from the cache.
    Hit(Response<Body>),
    /// Forward the request and do not call the cache again.
    Bypass,
    /// Forward the request and hand the response to [`Cache::complete`].
    Miss(Pending),
    /// Forward the request made conditional with [`make_conditional`] and
    /// hand the response to [`Cache::complete`].
    Revalidate {
        conditional: HeaderMap,
        pending: Pending,
    },
}

impl fmt::Debug for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::Hit(res) => f.debug_tuple("Hit").field(&res.status()).finish(),
            Lookup::Bypass => f.write_str("Bypass"),
            Lookup::Miss(p) => f.debug_tuple("Miss").field(p).finish(),
            Lookup::Revalidate {
                conditional,
                pending,
            } => f
                .debug_struct("Revalidate")
                .field("conditional", conditional)
                .field("pending", pending)
                .finish(),
        }
    }
}

/// A lookup waiting for the backend's response.
pub struct Pending {
    key: Arc<str>,
    request_time: SystemTime,
    kind: PendingKind,
}

enum PendingKind {
    Miss,
    Revalidate(Arc<Entry>),
    Invalidate,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PendingKind::Miss => "miss",
            PendingKind::Revalidate(_) => "revalidate",
            PendingKind::Invalidate => "invalidate",
        };
        f.debug_struct("Pending")
            .field("key", &self.key)
            .field("kind", &kind)
            .finish()
    }
}

fn full(body: Bytes) -> Body {
    Full::new(body).map_err(|never| match never {}).boxed()
}

impl Cache {
    pub fn new(config: CacheConfig) -> Result<Cache, ConfigError> {
        if config.max_entry_bytes < MIN_ENTRY_BYTES {
            return Err(ConfigError::EntryTooSmall(config.max_entry_bytes));
        }
        if config.max_entry_bytes > config.max_bytes {
            return Err(ConfigError::EntryLargerThanCache {
                entry: config.max_entry_bytes,
                max: config.max_bytes,
            });
        }
        Ok(Cache {
            inner: Arc::new(Inner {
                config,
                store: Store::new(config.max_bytes, config.max_entry_bytes),
                in_flight: Arc::new(InFlight::new(config.max_bytes)),
                counters: Counters::default(),
            }),
        })
    }

    pub fn config(&self) -> CacheConfig {
        self.inner.config
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let store = &self.inner.store;
        CacheStats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            revalidations: load(&c.revalidations),
            not_modified: load(&c.not_modified),
            bypasses: load(&c.bypasses),
            stores: load(&c.stores),
            evictions: store.evictions(),
            invalidations: load(&c.invalidations),
            entries: store.entries() as u64,
            bytes: store.bytes() as u64,
            recording_bytes: self.inner.in_flight.used() as u64,
        }
    }

    /// Before forwarding: what the cache can do for the request `req`
    /// (after the gateway normalized its path and set
    /// `x-forwarded-proto`).
    pub fn lookup(&self, req: &Parts, now: SystemTime) -> Lookup {
        let counters = &self.inner.counters;
        if req.method != Method::GET && req.method != Method::HEAD {
            if !is_safe(&req.method) {
                if let Ok(key) = key::primary(req) {
                    return Lookup::Miss(Pending {
                        key: key.into(),
                        request_time: now,
                        kind: PendingKind::Invalidate,
                    });
                }
            }
            count(&counters.bypasses);
            return Lookup::Bypass;
        }
        let asked = Directives::of_request(&req.headers);
        let key = match key::primary(req) {
            Ok(key)
                if !asked.no_store
                    && !PRECONDITIONS.iter().any(|h| req.headers.contains_key(h)) =>
            {
                Arc::<str>::from(key)
            }
            _ => {
                count(&counters.bypasses);
                return Lookup::Bypass;
            }
        };
        let authorized = req.headers.contains_key(header::AUTHORIZATION);
        let found = self.inner.store.get(&key, |e| {
            e.vary.matches(&req.headers) && (!authorized || allows_authorization(&e.directives))
        });
        let pending = |kind| Pending {
            key: key.clone(),
            request_time: now,
            kind,
        };
        let Some(entry) = found else {
            count(&counters.misses);
            return Lookup::Miss(pending(PendingKind::Miss));
        };
        let age = entry.timing.current_age(now);
        let usable = age < entry.lifetime
            && !entry.directives.no_cache
            && !asked.no_cache
            && asked.max_age.is_none_or(|m| !m.is_zero() && age <= m);
        if usable {
            count(&counters.hits);
            return Lookup::Hit(serve(&entry, req, age, CacheStatus::Hit));
        }
        if entry.validators.any() {
            count(&counters.revalidations);
            return Lookup::Revalidate {
                conditional: entry.validators.conditional(),
                pending: pending(PendingKind::Revalidate(entry)),
            };
        }
        if age >= entry.lifetime {
            // Stale for good with nothing to revalidate it with: its room
            // is better used now than when it reaches the LRU's tail.
            self.inner.store.remove(&entry);
        }
        count(&counters.misses);
        Lookup::Miss(pending(PendingKind::Miss))
    }

    /// After the backend answered a request that was a [`Lookup::Miss`] or
    /// [`Lookup::Revalidate`]: the response for the client. `req` is the
    /// client's request as it was looked up (without the conditional
    /// headers), `res` the backend's response as it arrived, `now` the time
    /// it arrived.
    pub fn complete(
        &self,
        req: &Parts,
        pending: Pending,
        res: Response<Body>,
        now: SystemTime,
    ) -> Response<Body> {
        let Pending {
            key,
            request_time,
            kind,
        } = pending;
        match kind {
            PendingKind::Invalidate => {
                if res.status().is_success() || res.status().is_redirection() {
                    let removed = self.inner.store.remove_key(&key) as u64;
                    self.inner
                        .counters
                        .invalidations
                        .fetch_add(removed, Ordering::Relaxed);
                }
                return res;
            }
            PendingKind::Revalidate(stored) => {
                if res.status() == StatusCode::NOT_MODIFIED {
                    if stored.validators.confirmed_by(res.headers()) {
                        return self.refresh(req, &stored, res.headers(), request_time, now);
                    }
                    // The backend confirmed a validator the cache did not
                    // send (a backend bug): the stored response is not
                    // known good any more, and there is nothing to serve
                    // but what came.
                    self.inner.store.remove(&stored);
                    return mark(res, CacheStatus::Miss);
                }
                // An error says nothing about the stored response; a HEAD
                // response cannot replace a stored GET's body.
                if res.status().is_server_error() || req.method == Method::HEAD {
                    return mark(res, CacheStatus::Miss);
                }
                self.inner.store.remove(&stored);
            }
            PendingKind::Miss => {}
        }
        self.store_response(req, key, request_time, res, now)
    }

    /// A response from the backend: passed on marked as a miss, recorded
    /// on the way when storable.
    fn store_response(
        &self,
        req: &Parts,
        key: Arc<str>,
        request_time: SystemTime,
        res: Response<Body>,
        now: SystemTime,
    ) -> Response<Body> {
        let (mut parts, body) = res.into_parts();
        let cap = self.inner.config.max_entry_bytes;
        let body = match entry::storable(req, key.clone(), &parts, request_time, now, cap) {
            Err(reason) => {
                tracing::debug!(%key, %reason, "cache: response not stored");
                body
            }
            Ok(head) => {
                let expected = content_length(&parts.headers);
                let limit = cap - head.size;
                if http_body::Body::is_end_stream(&body) {
                    // An empty body (a 204) is never polled: stored now.
                    if expected.unwrap_or(0) == 0 {
                        self.inner.insert(head.into_entry(Bytes::new()));
                    }
                    body
                } else {
                    let inner = self.inner.clone();
                    let capture = Capture::new(
                        limit,
                        expected,
                        self.inner.in_flight.clone(),
                        Box::new(move |body| inner.insert(head.into_entry(body))),
                    );
                    record(body, capture)
                }
            }
        };
        parts
            .headers
            .insert(CACHE_STATUS, CacheStatus::Miss.header_value());
        Response::from_parts(parts, body)
    }

    /// A 304 confirmed `stored`: its fields are updated from the 304's,
    /// it is stored again (unless the update made it unstorable) and
    /// answers.
    fn refresh(
        &self,
        req: &Parts,
        stored: &Arc<Entry>,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        now: SystemTime,
    ) -> Response<Body> {
        count(&self.inner.counters.not_modified);
        let headers = clean(validate::merge_not_modified(&stored.headers, not_modified));
        // The 304 is the response just received: its Date and Age time
        // the refreshed entry.
        let timing = Timing::of(not_modified, request_time, now);
        self.inner.store.remove(stored);
        let cap = self.inner.config.max_entry_bytes;
        let head = Head::new(
            req,
            stored.key.clone(),
            stored.status,
            headers.clone(),
            timing,
            now,
            cap,
        );
        let refreshed = match head {
            Ok(head) if head.size + stored.body.len() <= cap => {
                let entry = Arc::new(head.into_entry(stored.body.clone()));
                self.inner.store.insert(entry.clone());
                entry
            }
            // Not kept, but it still answers this request: the 304 says
            // the stored response is current.
            _ => Arc::new(Entry {
                key: stored.key.clone(),
                status: stored.status,
                validators: Validators::of(&headers),
                headers,
                body: stored.body.clone(),
                vary: stored.vary.clone(),
                directives: stored.directives,
                timing,
                lifetime: Duration::ZERO,
                size: 0,
            }),
        };
        let age = refreshed.timing.current_age(now);
        serve(&refreshed, req, age, CacheStatus::Revalidated)
    }
}

impl Inner {
    fn insert(&self, entry: Entry) {
        if self.store.insert(Arc::new(entry)) {
            count(&self.counters.stores);
        }
    }
}

/// Makes the forwarded request of a [`Lookup::Revalidate`] conditional on
/// the stored response: the client's own `If-None-Match` and
/// `If-Modified-Since` are replaced by `conditional`, even where it has no
/// field of that name, since a 304 must confirm the stored response and
/// not whatever copy the client holds.
pub fn make_conditional(forwarded: &mut HeaderMap, conditional: HeaderMap) {
    forwarded.remove(header::IF_NONE_MATCH);
    forwarded.remove(header::IF_MODIFIED_SINCE);
    forwarded.extend(conditional);
}

/// Safe methods (RFC 9110 §9.2.1): they change nothing, so they invalidate
/// nothing.
fn is_safe(method: &Method) -> bool {
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(method)
}

fn mark(mut res: Response<Body>, status: CacheStatus) -> Response<Body> {
    res.headers_mut()
        .insert(CACHE_STATUS, status.header_value());
    res
}

/// The response `entry` gives to `req`: a 304 when the client's own
/// conditional matches it (for 2xx responses only, RFC 9110 §13.2.1), the
/// stored response otherwise (without its body for HEAD).
fn serve(entry: &Entry, req: &Parts, age: Duration, status: CacheStatus) -> Response<Body> {
    let mut res = if entry.status.is_success() && entry.validators.not_modified_for(&req.headers) {
        let mut res = Response::new(empty());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        *res.headers_mut() = validate::not_modified_headers(&entry.headers);
        res
    } else {
        let body = if req.method == Method::HEAD {
            empty()
        } else {
            full(entry.body.clone())
        };
        let mut res = Response::new(body);
        *res.status_mut() = entry.status;
        *res.headers_mut() = entry.headers.clone();
        res
    };
    res.headers_mut()
        .insert(header::AGE, freshness::age_header(age));
    mark(res, status)
}
