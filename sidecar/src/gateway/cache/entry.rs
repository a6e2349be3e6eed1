//! What is stored: the checks a response passes to be stored (the module
//! doc of [`super`] says which and why), the [`Entry`] it becomes, and
//! how many bytes that entry is counted as.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, StatusCode};

use super::directives::Directives;
use super::freshness::{self, Timing};
use super::key::{self, Vary, VaryError};
use super::store::Stored;
use super::validate::Validators;
use super::CACHE_STATUS;
use crate::core::http::{strip_hop_by_hop, PROXY_ERROR};

/// What each entry is counted as beyond its key, fields and body: the
/// entry's own structure, its LRU slot and its map slot (a test checks it
/// covers them).
pub const ENTRY_OVERHEAD: usize = 512;
/// What each field is counted as beyond its name and value (RFC 7541 §4.1).
pub const FIELD_OVERHEAD: usize = 32;

/// Statuses cacheable by default (RFC 9110 §15.1), without 206 (partial
/// content is not stored).
const STORABLE_STATUS: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Why a response is not stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotStorable {
    #[error("only responses to GET are stored")]
    Method,
    #[error("status {0} is not cacheable by default")]
    Status(StatusCode),
    #[error("Cache-Control: no-store")]
    NoStore,
    #[error("Cache-Control: private (this is a shared cache)")]
    Private,
    #[error("Set-Cookie (a cookie is one client's)")]
    SetCookie,
    #[error("the request carried Authorization and the response is not public, s-maxage or must-revalidate")]
    Authorization,
    #[error("partial content")]
    Partial,
    #[error("an error the proxy made")]
    ProxyError,
    #[error("{0}")]
    Vary(#[from] VaryError),
    #[error("neither explicit freshness nor a validator")]
    NoFreshnessOrValidator,
    #[error("{size} bytes, more than the entry cap {cap}")]
    TooLarge { size: u64, cap: usize },
}

/// A stored response.
#[derive(Debug)]
pub struct Entry {
    pub key: Arc<str>,
    pub status: StatusCode,
    /// Without hop-by-hop fields, `Age` and `mycel-cache`.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub vary: Vary,
    pub directives: Directives,
    pub validators: Validators,
    pub timing: Timing,
    /// Zero when the response had no explicit freshness.
    pub lifetime: Duration,
    pub size: usize,
}

/// An entry but for its body.
pub struct Head {
    pub key: Arc<str>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub vary: Vary,
    pub directives: Directives,
    pub validators: Validators,
    pub timing: Timing,
    pub lifetime: Duration,
    pub size: usize,
}

impl Head {
    /// The checks every stored response passes, new or refreshed by a 304
    /// (`headers` already [`clean`]).
    pub fn new(
        req: &Parts,
        key: Arc<str>,
        status: StatusCode,
        headers: HeaderMap,
        timing: Timing,
        now: SystemTime,
        cap: usize,
    ) -> Result<Head, NotStorable> {
        let directives = Directives::of(&headers);
        if directives.no_store {
            return Err(NotStorable::NoStore);
        }
        if directives.private {
            return Err(NotStorable::Private);
        }
        if headers.contains_key(header::SET_COOKIE) {
            return Err(NotStorable::SetCookie);
        }
        if headers.contains_key(PROXY_ERROR) {
            return Err(NotStorable::ProxyError);
        }
        if req.headers.contains_key(header::AUTHORIZATION) && !allows_authorization(&directives) {
            return Err(NotStorable::Authorization);
        }
        let vary = Vary::capture(key::vary_names(&headers)?, &req.headers);
        let lifetime = freshness::lifetime(&directives, &headers, now);
        let validators = Validators::of(&headers);
        if lifetime.is_none() && !validators.any() {
            return Err(NotStorable::NoFreshnessOrValidator);
        }
        let size = ENTRY_OVERHEAD + key.len() + header_bytes(&headers) + vary.size(FIELD_OVERHEAD);
        if size > cap {
            return Err(NotStorable::TooLarge {
                size: size as u64,
                cap,
            });
        }
        Ok(Head {
            key,
            status,
            headers,
            vary,
            directives,
            validators,
            timing,
            lifetime: lifetime.unwrap_or(Duration::ZERO),
            size,
        })
    }

    pub fn into_entry(self, body: Bytes) -> Entry {
        Entry {
            size: self.size + body.len(),
            key: self.key,
            status: self.status,
            headers: self.headers,
            body,
            vary: self.vary,
            directives: self.directives,
            validators: self.validators,
            timing: self.timing,
            lifetime: self.lifetime,
        }
    }
}

impl Stored for Entry {
    fn key(&self) -> &Arc<str> {
        &self.key
    }

    fn size(&self) -> usize {
        self.size
    }

    fn same_variant(&self, newer: &Self) -> bool {
        self.vary == newer.vary
    }
}

/// Whether a response may be used for requests with `Authorization`
/// (RFC 9111 §3.5).
pub fn allows_authorization(d: &Directives) -> bool {
    d.public || d.s_maxage.is_some() || d.must_revalidate
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + FIELD_OVERHEAD)
        .sum()
}

pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The entry a backend response to `req` would be stored as, or why it
/// is not stored.
pub fn storable(
    req: &Parts,
    key: Arc<str>,
    res: &http::response::Parts,
    request_time: SystemTime,
    now: SystemTime,
    cap: usize,
) -> Result<Head, NotStorable> {
    if req.method != Method::GET {
        return Err(NotStorable::Method);
    }
    if !STORABLE_STATUS.contains(&res.status.as_u16()) {
        return Err(NotStorable::Status(res.status));
    }
    if res.headers.contains_key(header::CONTENT_RANGE) {
        return Err(NotStorable::Partial);
    }
    if let Some(size) = content_length(&res.headers).filter(|l| *l > cap as u64) {
        return Err(NotStorable::TooLarge { size, cap });
    }
    let timing = Timing::of(&res.headers, request_time, now);
    Head::new(
        req,
        key,
        res.status,
        clean(res.headers.clone()),
        timing,
        now,
        cap,
    )
}

/// Fields as stored: without those about one connection, the `Age` the
/// cache computes anew and the [`CACHE_STATUS`] it sets itself.
pub fn clean(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AGE);
    headers.remove(CACHE_STATUS);
    headers
}
