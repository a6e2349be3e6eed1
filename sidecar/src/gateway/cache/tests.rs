//! The cache as the gateway drives it: requests looked up, a fake backend
//! answering, real bodies streamed through `http_body_util` and read to
//! their end (which is when a recorded response is stored).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::executor::block_on;
use futures::stream;
use http::{HeaderMap, Request};
use http_body::Frame;
use http_body_util::StreamBody;

use super::*;
use crate::core::http::{boxed, BoxError};

/// Header fields as name and value.
type Fields<'a> = &'a [(&'a str, &'a str)];

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

fn cache() -> Cache {
    Cache::new(CacheConfig::default()).unwrap()
}

fn sized(max_bytes: usize, max_entry_bytes: usize) -> Cache {
    Cache::new(CacheConfig {
        max_bytes,
        max_entry_bytes,
    })
    .unwrap()
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "shop.example");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn get(uri: &str, headers: &[(&str, &str)]) -> Parts {
    req("GET", uri, headers)
}

fn response(status: u16, headers: &[(&str, &str)], body: Body) -> Response<Body> {
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        res.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    res
}

fn backend(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Body> {
    response(status, headers, full(Bytes::from(body.to_string())))
}

/// A body of `chunks`, then `Err` when `fail`.
fn streamed(chunks: &[&str], fail: bool) -> Body {
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from(c.to_string()))))
        .collect();
    if fail {
        frames.push(Err("backend reset".into()));
    }
    boxed(StreamBody::new(stream::iter(frames)))
}

/// What the client got and how.
#[derive(Debug)]
struct Served {
    via: &'static str,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The conditional headers the backend was asked with.
    conditional: Option<HeaderMap>,
}

impl Served {
    fn cache_status(&self) -> Option<&str> {
        self.headers.get(CACHE_STATUS).and_then(|v| v.to_str().ok())
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn read(res: Response<Body>) -> (StatusCode, HeaderMap, Result<Bytes, BoxError>) {
    let (parts, body) = res.into_parts();
    let body = block_on(body.collect()).map(|c| c.to_bytes());
    (parts.status, parts.headers, body)
}

/// One request through the cache as the gateway runs it; the backend
/// answers with `answer` when it is asked.
fn exchange(
    cache: &Cache,
    req: &Parts,
    now: SystemTime,
    answer: impl FnOnce() -> Response<Body>,
) -> Served {
    let (via, conditional, res) = match cache.lookup(req, now) {
        Lookup::Hit(res) => ("hit", None, res),
        Lookup::Bypass => ("bypass", None, answer()),
        Lookup::Miss(pending) => ("miss", None, cache.complete(req, pending, answer(), now)),
        Lookup::Revalidate {
            conditional,
            pending,
        } => (
            "revalidate",
            Some(conditional),
            cache.complete(req, pending, answer(), now),
        ),
    };
    let (status, headers, body) = read(res);
    Served {
        via,
        status,
        headers,
        body: body.unwrap(),
        conditional,
    }
}

fn never() -> Response<Body> {
    panic!("the backend was asked")
}

#[test]
fn a_fresh_hit_carries_its_age_and_the_hit_header() {
    let c = cache();
    let a = get("/a", &[]);
    let first = exchange(&c, &a, t(0), || {
        backend(
            200,
            &[("cache-control", "max-age=60"), ("date", &date(t(0)))],
            "hello",
        )
    });
    assert_eq!(
        (first.via, first.cache_status(), &first.body[..]),
        ("miss", Some("miss"), &b"hello"[..])
    );
    let hit = exchange(&c, &a, t(10), never);
    assert_eq!(hit.via, "hit");
    assert_eq!(hit.status, StatusCode::OK);
    assert_eq!(hit.cache_status(), Some("hit"));
    assert_eq!(hit.header("age"), Some("10"));
    assert_eq!(hit.header("cache-control"), Some("max-age=60"));
    assert_eq!(&hit.body[..], b"hello");
    // Stale, and nothing to revalidate with: asked again.
    let stale = exchange(&c, &a, t(60), || backend(200, &[], "again"));
    assert_eq!((stale.via, &stale.body[..]), ("miss", &b"again"[..]));
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.stores, s.entries), (1, 2, 1, 0));
}

#[test]
fn s_maxage_beats_max_age() {
    let c = cache();
    let short = get("/short", &[]);
    exchange(&c, &short, t(0), || {
        backend(200, &[("cache-control", "max-age=1000, s-maxage=5")], "x")
    });
    assert_eq!(
        exchange(&c, &short, t(6), || backend(200, &[], "")).via,
        "miss"
    );
    let long = get("/long", &[]);
    exchange(&c, &long, t(0), || {
        backend(200, &[("cache-control", "s-maxage=1000, max-age=5")], "x")
    });
    assert_eq!(exchange(&c, &long, t(6), never).via, "hit");
}

#[test]
fn expires_minus_date_gives_the_lifetime() {
    let c = cache();
    let a = get("/a", &[]);
    // The backend's clock is 1000 s behind: Expires - Date still gives 100 s.
    exchange(&c, &a, t(1000), || {
        backend(
            200,
            &[("date", &date(t(0))), ("expires", &date(t(100)))],
            "x",
        )
    });
    // ... but the apparent age (arrival - Date) counts: stale already.
    assert_eq!(
        exchange(&c, &a, t(1001), || backend(200, &[], "")).via,
        "miss"
    );

    let b = get("/b", &[]);
    exchange(&c, &b, t(0), || {
        backend(
            200,
            &[("date", &date(t(0))), ("expires", &date(t(100)))],
            "x",
        )
    });
    let hit = exchange(&c, &b, t(99), never);
    assert_eq!((hit.via, hit.header("age")), ("hit", Some("99")));
    assert_eq!(
        exchange(&c, &b, t(100), || backend(200, &[], "")).via,
        "miss"
    );
}

#[test]
fn an_upstream_age_counts_toward_staleness() {
    let c = cache();
    let a = get("/a", &[]);
    exchange(&c, &a, t(0), || {
        backend(200, &[("cache-control", "max-age=60"), ("age", "50")], "x")
    });
    let hit = exchange(&c, &a, t(5), never);
    assert_eq!(hit.header("age"), Some("55"));
    assert_eq!(
        exchange(&c, &a, t(10), || backend(200, &[], "")).via,
        "miss"
    );
}

#[test]
fn storability_table() {
    let cap = DEFAULT_MAX_ENTRY_BYTES;
    let fresh = ("cache-control", "max-age=60");
    type Case<'a> = (u16, Fields<'a>, Fields<'a>, Result<(), NotStorable>);
    let cases: &[Case] = &[
        (200, &[fresh], &[], Ok(())),
        (404, &[fresh], &[], Ok(())),
        (501, &[fresh], &[], Ok(())),
        (200, &[("etag", "\"v1\"")], &[], Ok(())),
        (200, &[("last-modified", &date(t(0)))], &[], Ok(())),
        (200, &[("expires", &date(t(10)))], &[], Ok(())),
        (
            200,
            &[("content-type", "text/plain")],
            &[],
            Err(NotStorable::NoFreshnessOrValidator),
        ),
        (
            302,
            &[fresh],
            &[],
            Err(NotStorable::Status(StatusCode::FOUND)),
        ),
        (
            500,
            &[fresh],
            &[],
            Err(NotStorable::Status(StatusCode::INTERNAL_SERVER_ERROR)),
        ),
        (
            206,
            &[fresh, ("content-range", "bytes 0-1/10")],
            &[],
            Err(NotStorable::Status(StatusCode::PARTIAL_CONTENT)),
        ),
        (
            200,
            &[fresh, ("content-range", "bytes 0-1/10")],
            &[],
            Err(NotStorable::Partial),
        ),
        (
            200,
            &[("cache-control", "max-age=60, no-store")],
            &[],
            Err(NotStorable::NoStore),
        ),
        (
            200,
            &[("cache-control", "private, max-age=60")],
            &[],
            Err(NotStorable::Private),
        ),
        (
            200,
            &[("cache-control", "max-age=60, private=\"x-user\"")],
            &[],
            Err(NotStorable::Private),
        ),
        (
            200,
            &[fresh, ("set-cookie", "session=secret")],
            &[],
            Err(NotStorable::SetCookie),
        ),
        (
            200,
            &[fresh, ("vary", "accept, *")],
            &[],
            Err(NotStorable::Vary(VaryError::Star)),
        ),
        (
            200,
            &[fresh, ("mycel-proxy-error", "no-endpoints")],
            &[],
            Err(NotStorable::ProxyError),
        ),
        (
            200,
            &[fresh],
            &[("authorization", "Bearer alice")],
            Err(NotStorable::Authorization),
        ),
        (
            200,
            &[("cache-control", "public, max-age=60")],
            &[("authorization", "Bearer alice")],
            Ok(()),
        ),
        (
            200,
            &[("cache-control", "s-maxage=60")],
            &[("authorization", "Bearer alice")],
            Ok(()),
        ),
        (
            200,
            &[("cache-control", "must-revalidate"), ("etag", "\"v\"")],
            &[("authorization", "Bearer alice")],
            Ok(()),
        ),
        (
            200,
            &[fresh, ("content-length", "2000000")],
            &[],
            Err(NotStorable::TooLarge {
                size: 2_000_000,
                cap: DEFAULT_MAX_ENTRY_BYTES,
            }),
        ),
    ];
    for (status, res_headers, req_headers, want) in cases {
        let request = get("/a", req_headers);
        let res = backend(*status, res_headers, "");
        let (parts, _) = res.into_parts();
        let got = entry::storable(&request, "k".into(), &parts, t(0), t(0), cap).map(|_| ());
        assert_eq!(&got, want, "{status} {res_headers:?} {req_headers:?}");
    }
    let head = req("HEAD", "/a", &[]);
    let (parts, _) = backend(200, &[fresh], "").into_parts();
    assert_eq!(
        entry::storable(&head, "k".into(), &parts, t(0), t(0), cap).err(),
        Some(NotStorable::Method)
    );
}

#[test]
fn what_a_shared_cache_must_not_keep_is_served_but_never_stored() {
    let cases: [&[(&str, &str)]; 4] = [
        &[("cache-control", "no-store, max-age=60")],
        &[("cache-control", "private, max-age=60")],
        &[
            ("cache-control", "max-age=60"),
            ("set-cookie", "session=alice"),
        ],
        &[("cache-control", "max-age=60"), ("vary", "*")],
    ];
    for headers in cases {
        let c = cache();
        let a = get("/a", &[]);
        let first = exchange(&c, &a, t(0), || backend(200, headers, "alice's page"));
        assert_eq!(
            (first.cache_status(), &first.body[..]),
            (Some("miss"), &b"alice's page"[..])
        );
        let second = exchange(&c, &a, t(1), || backend(200, &[], "fresh page"));
        assert_eq!(second.via, "miss", "{headers:?}");
        assert_eq!(c.stats().stores, 0);
    }
}

#[test]
fn a_request_with_authorization_is_not_answered_from_a_response_that_does_not_allow_it() {
    let c = cache();
    let anonymous = get("/profile", &[]);
    let alice = get("/profile", &[("authorization", "Bearer alice")]);
    exchange(&c, &anonymous, t(0), || {
        backend(200, &[("cache-control", "max-age=60")], "anonymous")
    });
    let got = exchange(&c, &alice, t(1), || {
        backend(200, &[("cache-control", "max-age=60")], "alice")
    });
    assert_eq!((got.via, &got.body[..]), ("miss", &b"alice"[..]));
    // Alice's answer was not stored; the anonymous one still answers.
    let again = exchange(&c, &anonymous, t(2), never);
    assert_eq!(&again.body[..], b"anonymous");
    let bob = get("/profile", &[("authorization", "Bearer bob")]);
    assert_eq!(
        exchange(&c, &bob, t(3), || backend(500, &[], "")).via,
        "miss"
    );
}

#[test]
fn a_public_response_to_an_authorized_request_is_shared() {
    let c = cache();
    let alice = get("/catalog", &[("authorization", "Bearer alice")]);
    exchange(&c, &alice, t(0), || {
        backend(200, &[("cache-control", "public, max-age=60")], "catalog")
    });
    let bob = get("/catalog", &[("authorization", "Bearer bob")]);
    let got = exchange(&c, &bob, t(1), never);
    assert_eq!((got.via, &got.body[..]), ("hit", &b"catalog"[..]));
}

#[test]
fn vary_keeps_accept_encoding_variants_apart() {
    let c = cache();
    let gzip = get("/a", &[("accept-encoding", "gzip")]);
    let br = get("/a", &[("accept-encoding", "br")]);
    let vary = |body: &'static str| {
        move || {
            backend(
                200,
                &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
                body,
            )
        }
    };
    assert_eq!(exchange(&c, &gzip, t(0), vary("gz")).via, "miss");
    assert_eq!(exchange(&c, &br, t(0), vary("br")).via, "miss");
    assert_eq!(&exchange(&c, &gzip, t(1), never).body[..], b"gz");
    assert_eq!(&exchange(&c, &br, t(1), never).body[..], b"br");
    // Spelled differently but equal once normalized.
    let gzip_lines = get("/a", &[("accept-encoding", " gzip ")]);
    assert_eq!(&exchange(&c, &gzip_lines, t(1), never).body[..], b"gz");
    let none = get("/a", &[]);
    assert_eq!(exchange(&c, &none, t(1), vary("identity")).via, "miss");
    assert_eq!(&exchange(&c, &none, t(2), never).body[..], b"identity");
    assert_eq!(c.stats().entries, 3);
}

#[test]
fn a_vary_flood_on_one_url_keeps_at_most_max_variants() {
    let c = cache();
    for i in 0..200 {
        let ua = format!("bot/{i}");
        let r = get("/a", &[("user-agent", &ua)]);
        exchange(&c, &r, t(0), || {
            backend(
                200,
                &[("cache-control", "max-age=60"), ("vary", "user-agent")],
                "x",
            )
        });
    }
    let s = c.stats();
    assert_eq!(s.entries, MAX_VARIANTS as u64);
    assert_eq!(s.evictions, 200 - MAX_VARIANTS as u64);
}

#[test]
fn a_vary_on_too_many_or_too_large_headers_is_not_stored() {
    let c = sized(64 << 10, 8 << 10);
    let names: Vec<String> = (0..=MAX_VARY_FIELDS).map(|i| format!("x-h{i}")).collect();
    let names = names.join(", ");
    let a = get("/a", &[]);
    exchange(&c, &a, t(0), || {
        backend(
            200,
            &[("cache-control", "max-age=60"), ("vary", &names)],
            "x",
        )
    });
    assert_eq!(c.stats().stores, 0);
    // A request value too large for an entry: the response passes, unstored.
    let big = "v".repeat(10 << 10);
    let b = get("/b", &[("x-big", &big)]);
    let got = exchange(&c, &b, t(0), || {
        backend(
            200,
            &[("cache-control", "max-age=60"), ("vary", "x-big")],
            "x",
        )
    });
    assert_eq!(&got.body[..], b"x");
    assert_eq!(c.stats().stores, 0);
}

#[test]
fn a_stale_entry_is_revalidated_and_a_304_refreshes_its_fields() {
    let c = cache();
    let a = get("/a", &[]);
    let last_modified = date(t(0) - Duration::from_secs(3600));
    exchange(&c, &a, t(0), || {
        backend(
            200,
            &[
                ("cache-control", "max-age=10"),
                ("etag", "\"v1\""),
                ("last-modified", &last_modified),
                ("x-version", "1"),
                ("content-length", "5"),
                ("date", &date(t(0))),
            ],
            "hello",
        )
    });
    let got = exchange(&c, &a, t(20), || {
        backend(
            304,
            &[
                ("cache-control", "max-age=100"),
                ("etag", "\"v1\""),
                ("x-version", "2"),
                ("date", &date(t(20))),
                ("content-length", "0"),
            ],
            "",
        )
    });
    assert_eq!(got.via, "revalidate");
    let conditional = got.conditional.as_ref().unwrap();
    assert_eq!(conditional["if-none-match"], "\"v1\"");
    assert_eq!(conditional["if-modified-since"], last_modified.as_str());
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.cache_status(), Some("revalidated"));
    assert_eq!(got.header("x-version"), Some("2"));
    assert_eq!(got.header("content-length"), Some("5"));
    assert_eq!(got.header("age"), Some("0"));
    assert_eq!(&got.body[..], b"hello");
    // Refreshed: fresh for 100 s from the 304.
    let hit = exchange(&c, &a, t(110), never);
    assert_eq!(hit.header("x-version"), Some("2"));
    assert_eq!(hit.header("age"), Some("90"));
    let s = c.stats();
    assert_eq!((s.revalidations, s.not_modified, s.entries), (1, 1, 1));
}

#[test]
fn a_revalidation_asks_about_the_stored_response_not_the_client_s_copy() {
    let c = cache();
    let a = get("/a", &[]);
    let last_modified = date(t(0));
    exchange(&c, &a, t(0), || {
        backend(
            200,
            &[
                ("cache-control", "max-age=10"),
                ("last-modified", &last_modified),
            ],
            "x",
        )
    });
    let client = get("/a", &[("if-none-match", "\"theirs\"")]);
    let Lookup::Revalidate { conditional, .. } = c.lookup(&client, t(20)) else {
        panic!("not a revalidation")
    };
    let mut forwarded = client.headers.clone();
    make_conditional(&mut forwarded, conditional);
    assert_eq!(forwarded.get("if-none-match"), None);
    assert_eq!(forwarded["if-modified-since"], last_modified.as_str());
    assert_eq!(forwarded["host"], "shop.example");
}

#[test]
fn a_stale_entry_is_replaced_by_a_new_200() {
    let c = cache();
    let a = get("/a", &[]);
    let v = |etag: &'static str, body: &'static str| {
        move || {
            backend(
                200,
                &[("cache-control", "max-age=10"), ("etag", etag)],
                body,
            )
        }
    };
    exchange(&c, &a, t(0), v("\"v1\"", "old"));
    let got = exchange(&c, &a, t(20), v("\"v2\"", "new"));
    assert_eq!(
        (got.via, got.cache_status(), &got.body[..]),
        ("revalidate", Some("miss"), &b"new"[..])
    );
    let hit = exchange(&c, &a, t(21), never);
    assert_eq!(
        (&hit.body[..], hit.header("etag")),
        (&b"new"[..], Some("\"v2\""))
    );
    assert_eq!(c.stats().entries, 1);
    // A new response that may not be stored removes the old one.
    let gone = exchange(&c, &a, t(40), || {
        backend(200, &[("cache-control", "no-store")], "secret")
    });
    assert_eq!(&gone.body[..], b"secret");
    assert_eq!(
        exchange(&c, &a, t(41), || backend(200, &[], "")).via,
        "miss"
    );
    assert_eq!(c.stats().entries, 0);
}

#[test]
fn a_server_error_during_revalidation_passes_through_and_keeps_the_entry() {
    let c = cache();
    let a = get("/a", &[]);
    exchange(&c, &a, t(0), || {
        backend(
            200,
            &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            "ok",
        )
    });
    let got = exchange(&c, &a, t(20), || backend(503, &[], "down"));
    assert_eq!(
        (got.status, &got.body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, &b"down"[..])
    );
    assert_eq!(
        exchange(&c, &a, t(21), || backend(304, &[], "")).via,
        "revalidate"
    );
}

#[test]
fn a_304_for_another_etag_removes_the_entry_and_passes_through() {
    let c = cache();
    let a = get("/a", &[]);
    exchange(&c, &a, t(0), || {
        backend(
            200,
            &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            "ok",
        )
    });
    let got = exchange(&c, &a, t(20), || backend(304, &[("etag", "\"v9\"")], ""));
    assert_eq!(
        (got.status, got.cache_status()),
        (StatusCode::NOT_MODIFIED, Some("miss"))
    );
    assert_eq!(c.stats().entries, 0);
}

#[test]
fn a_no_cache_response_is_always_revalidated() {
    let c = cache();
    let a = get("/a", &[]);
    exchange(&c, &a, t(0), || {
        backend(
            200,
            &[
                ("cache-control", "no-cache, max-age=600"),
                ("etag", "\"v1\""),
            ],
            "body",
        )
    });
    for now in [t(1), t(2)] {
        let got = exchange(&c, &a, now, || backend(304, &[("etag", "\"v1\"")], ""));
        assert_eq!(
            (got.via, got.cache_status()),
            ("revalidate", Some("revalidated"))
        );
        assert_eq!(&got.body[..], b"body");
    }
}

#[test]
fn request_directives() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "hit"),
        (&[("cache-control", "no-cache")], "revalidate"),
        (&[("cache-control", "max-age=0")], "revalidate"),
        (&[("pragma", "no-cache")], "revalidate"),
        (
            &[("pragma", "no-cache"), ("cache-control", "max-age=60")],
            "hit",
        ),
        (&[("cache-control", "max-age=5")], "revalidate"), // the age is 10
        (&[("cache-control", "max-age=15")], "hit"),
        (&[("cache-control", "no-store")], "bypass"),
        (&[("if-match", "\"v1\"")], "bypass"),
        (&[("if-range", "\"v1\""), ("range", "bytes=0-0")], "bypass"),
    ];
    for (headers, want) in cases {
        let c = cache();
        exchange(&c, &get("/a", &[]), t(0), || {
            backend(
                200,
                &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
                "x",
            )
        });
        let r = get("/a", headers);
        let got = exchange(&c, &r, t(10), || backend(304, &[("etag", "\"v1\"")], ""));
        assert_eq!(got.via, *want, "{headers:?}");
        assert_eq!(c.stats().bypasses, u64::from(*want == "bypass"));
    }
}

#[test]
fn a_matching_client_if_none_match_gets_a_304_from_the_cache() {
    let c = cache();
    let a = get("/a", &[]);
    exchange(&c, &a, t(0), || {
        backend(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("etag", "W/\"v1\""),
                ("content-type", "text/plain"),
            ],
            "body",
        )
    });
    let conditional = get("/a", &[("if-none-match", "\"v0\", \"v1\"")]);
    let got = exchange(&c, &conditional, t(1), never);
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(got.header("etag"), Some("W/\"v1\""));
    assert_eq!(got.header("cache-control"), Some("max-age=60"));
    assert_eq!(got.header("content-type"), None);
    assert_eq!(
        (got.cache_status(), got.header("age")),
        (Some("hit"), Some("1"))
    );
    assert!(got.body.is_empty());
    let other = get("/a", &[("if-none-match", "\"v2\"")]);
    let got = exchange(&c, &other, t(1), never);
    assert_eq!((got.status, &got.body[..]), (StatusCode::OK, &b"body"[..]));
}

#[test]
fn a_stored_404_is_served_whole_even_to_a_matching_conditional() {
    let c = cache();
    let a = get("/gone", &[]);
    exchange(&c, &a, t(0), || {
        backend(
            404,
            &[("cache-control", "max-age=60"), ("etag", "\"e\"")],
            "no such page",
        )
    });
    let conditional = get("/gone", &[("if-none-match", "*")]);
    let got = exchange(&c, &conditional, t(1), never);
    assert_eq!(
        (got.status, &got.body[..]),
        (StatusCode::NOT_FOUND, &b"no such page"[..])
    );
}

#[test]
fn head_is_answered_from_a_stored_get_and_never_stored_itself() {
    let c = cache();
    let head = req("HEAD", "/a", &[]);
    let fresh = || {
        backend(
            200,
            &[("cache-control", "max-age=60"), ("content-length", "5")],
            "",
        )
    };
    exchange(&c, &head, t(0), fresh);
    assert_eq!(c.stats().stores, 0);
    let a = get("/a", &[]);
    exchange(&c, &a, t(0), || {
        backend(
            200,
            &[("cache-control", "max-age=60"), ("content-length", "5")],
            "hello",
        )
    });
    let got = exchange(&c, &head, t(1), never);
    assert_eq!((got.via, got.status), ("hit", StatusCode::OK));
    assert_eq!(got.header("content-length"), Some("5"));
    assert!(got.body.is_empty());
}

#[test]
fn a_head_revalidation_refreshes_on_304_and_leaves_the_get_on_200() {
    let c = cache();
    let a = get("/a", &[]);
    exchange(&c, &a, t(0), || {
        backend(
            200,
            &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            "hello",
        )
    });
    let head = req("HEAD", "/a", &[]);
    let got = exchange(&c, &head, t(20), || backend(200, &[("etag", "\"v2\"")], ""));
    assert_eq!(got.via, "revalidate");
    assert_eq!(c.stats().entries, 1);
    let got = exchange(&c, &head, t(20), || {
        backend(
            304,
            &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
            "",
        )
    });
    assert_eq!(
        (got.cache_status(), got.body.len()),
        (Some("revalidated"), 0)
    );
    assert_eq!(&exchange(&c, &a, t(30), never).body[..], b"hello");
}

#[test]
fn an_empty_204_is_stored_without_being_polled() {
    let c = cache();
    let a = get("/ping", &[]);
    let Lookup::Miss(pending) = c.lookup(&a, t(0)) else {
        panic!("not a miss")
    };
    let res = response(204, &[("cache-control", "max-age=60")], empty());
    // Dropped unread, as hyper leaves a body that is already at its end.
    drop(c.complete(&a, pending, res, t(0)));
    assert_eq!(exchange(&c, &a, t(1), never).status, StatusCode::NO_CONTENT);
}

#[test]
fn a_body_over_the_entry_cap_passes_through_whole_and_is_not_stored() {
    let c = sized(64 << 10, 8 << 10);
    let chunk = "x".repeat(1024);
    let chunks: Vec<&str> = (0..20).map(|_| chunk.as_str()).collect();
    let a = get("/big", &[]);
    let got = exchange(&c, &a, t(0), || {
        response(
            200,
            &[("cache-control", "max-age=60")],
            streamed(&chunks, false),
        )
    });
    assert_eq!(got.body.len(), 20 * 1024);
    let s = c.stats();
    assert_eq!((s.stores, s.recording_bytes), (0, 0));
    // Under the cap: stored.
    let b = get("/small", &[]);
    exchange(&c, &b, t(0), || {
        response(
            200,
            &[("cache-control", "max-age=60")],
            streamed(&chunks[..4], false),
        )
    });
    assert_eq!(exchange(&c, &b, t(1), never).body.len(), 4 * 1024);
}

#[test]
fn a_body_that_errors_midway_is_not_stored() {
    let c = cache();
    let a = get("/a", &[]);
    let Lookup::Miss(pending) = c.lookup(&a, t(0)) else {
        panic!("not a miss")
    };
    let res = response(
        200,
        &[("cache-control", "max-age=60")],
        streamed(&["one", "two"], true),
    );
    let (_, _, body) = read(c.complete(&a, pending, res, t(0)));
    assert!(body.is_err());
    let s = c.stats();
    assert_eq!((s.stores, s.recording_bytes), (0, 0));
    assert!(matches!(c.lookup(&a, t(1)), Lookup::Miss(_)));
}

#[test]
fn a_client_that_goes_away_midway_stores_nothing() {
    let c = cache();
    let a = get("/a", &[]);
    let Lookup::Miss(pending) = c.lookup(&a, t(0)) else {
        panic!("not a miss")
    };
    let res = response(
        200,
        &[("cache-control", "max-age=60")],
        streamed(&["one", "two"], false),
    );
    let mut body = c.complete(&a, pending, res, t(0)).into_body();
    let first = block_on(body.frame()).unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "one");
    assert_eq!(c.stats().recording_bytes, 3);
    drop(body);
    let s = c.stats();
    assert_eq!((s.stores, s.recording_bytes), (0, 0));
    assert!(matches!(c.lookup(&a, t(1)), Lookup::Miss(_)));
}

#[test]
fn a_body_that_ends_without_a_last_poll_is_stored() {
    // hyper stops polling a body once is_end_stream() says it ended.
    let c = cache();
    let a = get("/a", &[]);
    let Lookup::Miss(pending) = c.lookup(&a, t(0)) else {
        panic!("not a miss")
    };
    let res = backend(200, &[("cache-control", "max-age=60")], "whole");
    let mut body = c.complete(&a, pending, res, t(0)).into_body();
    block_on(body.frame()).unwrap().unwrap();
    assert!(http_body::Body::is_end_stream(&body));
    assert_eq!(&exchange(&c, &a, t(1), never).body[..], b"whole");
}

#[test]
fn a_body_shorter_than_its_content_length_is_not_stored() {
    let c = cache();
    let a = get("/a", &[]);
    exchange(&c, &a, t(0), || {
        response(
            200,
            &[("cache-control", "max-age=60"), ("content-length", "10")],
            streamed(&["abc"], false),
        )
    });
    assert_eq!(c.stats().stores, 0);
}

#[test]
fn trailers_are_not_stored() {
    let c = cache();
    let a = get("/a", &[]);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("1"));
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"data"))),
        Ok(Frame::trailers(trailers)),
    ];
    exchange(&c, &a, t(0), || {
        response(
            200,
            &[("cache-control", "max-age=60")],
            boxed(StreamBody::new(stream::iter(frames))),
        )
    });
    assert_eq!(c.stats().stores, 0);
}

#[test]
fn a_flood_of_distinct_urls_cannot_grow_the_cache_past_max_bytes() {
    let max_bytes = 64 << 10;
    let c = sized(max_bytes, 4 << 10);
    let page = "p".repeat(1000);
    let hot = get("/hot", &[]);
    let fresh = || backend(200, &[("cache-control", "max-age=600")], &page);
    exchange(&c, &hot, t(0), fresh);
    for i in 0..2000 {
        let flood = get(&format!("/flood/{i}?cachebuster={i}"), &[]);
        exchange(&c, &flood, t(1), fresh);
        assert!(c.stats().bytes <= max_bytes as u64);
        // The page in use stays: the flood evicts itself.
        assert_eq!(exchange(&c, &hot, t(1), never).via, "hit", "after {i}");
    }
    let s = c.stats();
    assert_eq!(s.stores, 2001);
    assert!(s.evictions > 1900, "{s:?}");
    assert!(s.entries < 64, "{s:?}");
}

#[test]
fn stored_bytes_are_counted_exactly() {
    let c = cache();
    let a = get("/a", &[]);
    exchange(&c, &a, t(0), || {
        backend(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("content-length", "5"),
                ("connection", "close"),
                ("age", "1"),
                ("mycel-cache", "hit"),
            ],
            "hello",
        )
    });
    let key = "http://shop.example/a";
    // The hop-by-hop field, Age and mycel-cache are not stored.
    let fields =
        ("cache-control".len() + "max-age=60".len() + 32) + ("content-length".len() + 1 + 32);
    let size = ENTRY_OVERHEAD + key.len() + fields + 5;
    assert_eq!(c.stats().bytes, size as u64);
    let post = req("POST", "/a", &[]);
    exchange(&c, &post, t(1), || backend(201, &[], ""));
    let s = c.stats();
    assert_eq!((s.bytes, s.entries, s.invalidations), (0, 0, 1));
}

#[test]
fn entry_overhead_covers_the_structures() {
    let slot = std::mem::size_of::<Option<Arc<Entry>>>() + 3 * std::mem::size_of::<usize>();
    let map = std::mem::size_of::<(Arc<str>, Vec<usize>)>() + std::mem::size_of::<usize>();
    let arc_counts = 2 * std::mem::size_of::<usize>();
    let total = std::mem::size_of::<Entry>() + slot + map + arc_counts;
    assert!(ENTRY_OVERHEAD >= total, "{total}");
}

#[test]
fn a_backend_cannot_claim_a_hit() {
    let c = cache();
    let a = get("/a", &[]);
    let got = exchange(&c, &a, t(0), || {
        backend(
            200,
            &[("cache-control", "max-age=60"), ("mycel-cache", "hit")],
            "x",
        )
    });
    assert_eq!(got.cache_status(), Some("miss"));
}

#[test]
fn a_successful_unsafe_request_invalidates_the_url() {
    let c = cache();
    let a = get("/a", &[("accept", "json")]);
    let store = || {
        backend(
            200,
            &[("cache-control", "max-age=60"), ("vary", "accept")],
            "x",
        )
    };
    exchange(&c, &a, t(0), store);
    exchange(&c, &get("/a", &[]), t(0), store);
    assert_eq!(c.stats().entries, 2);
    let put = req("PUT", "/a", &[]);
    let failed = exchange(&c, &put, t(1), || backend(409, &[], "conflict"));
    assert_eq!((failed.via, failed.cache_status()), ("miss", None));
    assert_eq!(c.stats().entries, 2);
    exchange(&c, &put, t(1), || backend(204, &[], ""));
    let s = c.stats();
    assert_eq!((s.entries, s.invalidations, s.misses), (0, 2, 2));
    // Safe methods other than GET and HEAD only bypass.
    let options = req("OPTIONS", "/a", &[]);
    assert_eq!(
        exchange(&c, &options, t(1), || backend(204, &[], "")).via,
        "bypass"
    );
}

#[test]
fn config_is_checked() {
    assert_eq!(
        Cache::new(CacheConfig {
            max_bytes: 1 << 20,
            max_entry_bytes: 100
        })
        .err(),
        Some(ConfigError::EntryTooSmall(100))
    );
    assert_eq!(
        Cache::new(CacheConfig {
            max_bytes: 8 << 10,
            max_entry_bytes: 16 << 10
        })
        .err(),
        Some(ConfigError::EntryLargerThanCache {
            entry: 16 << 10,
            max: 8 << 10
        })
    );
    assert!(Cache::new(CacheConfig::default()).is_ok());
}

#[test]
fn concurrent_use_from_several_threads() {
    let c = sized(256 << 10, 8 << 10);
    let threads = 4;
    let rounds = 400;
    std::thread::scope(|s| {
        for th in 0..threads {
            let c = c.clone();
            s.spawn(move || {
                for i in 0..rounds {
                    let n = (i * 7 + th * 13) % 60;
                    let path = format!("/item/{n}");
                    let r = get(&path, &[]);
                    let body = format!("body of {path} ").repeat(50);
                    let got = exchange(&c, &r, t(i as u64 / 100), || {
                        backend(
                            200,
                            &[("cache-control", "max-age=2"), ("etag", "\"e\"")],
                            &body,
                        )
                    });
                    assert_eq!(got.status, StatusCode::OK);
                    assert_eq!(got.body, body.as_bytes(), "{path}");
                    assert!(c.stats().bytes <= 256 << 10);
                }
            });
        }
    });
    let s = c.stats();
    assert_eq!(
        s.hits + s.misses + s.revalidations,
        (threads * rounds) as u64
    );
    assert!(s.hits > 0 && s.stores > 0, "{s:?}");
    assert_eq!(s.recording_bytes, 0);
}
