use std::collections::HashMap;
use std::sync::Mutex;

use futures::StreamExt;
use http::Request;
use http_body_util::StreamBody;
use tokio::time::Instant;

use super::template::MAX_TEMPLATE_LEN;
use super::*;

/// What the fake backend of one part does.
#[derive(Clone)]
enum Backend {
    Answer {
        status: u16,
        content_type: Option<&'static str>,
        body: &'static str,
        delay: Duration,
    },
    Fail,
    /// 200 `application/json`, a body that never ends.
    Endless,
    /// Never answers.
    Hang,
    /// 200 `application/json`, then a body that never comes.
    Stall,
}

fn json(body: &'static str) -> Backend {
    Backend::Answer {
        status: 200,
        content_type: Some("application/json"),
        body,
        delay: Duration::ZERO,
    }
}

fn slow(body: &'static str, delay: Duration) -> Backend {
    Backend::Answer {
        status: 200,
        content_type: Some("application/json"),
        body,
        delay,
    }
}

#[derive(Default)]
struct FakeFetch {
    backends: HashMap<String, Backend>,
    /// (part, path and query, headers) of every call.
    calls: Mutex<Vec<(String, String, HeaderMap)>>,
}

impl FakeFetch {
    fn new(backends: &[(&str, Backend)]) -> FakeFetch {
        FakeFetch {
            backends: backends
                .iter()
                .map(|(n, b)| (n.to_string(), b.clone()))
                .collect(),
            calls: Mutex::default(),
        }
    }

    fn paths(&self) -> Vec<String> {
        let mut calls: Vec<String> = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(n, p, _)| format!("{n} {p}"))
            .collect();
        calls.sort();
        calls
    }
}

impl Fetch for FakeFetch {
    fn get(
        &self,
        part: &Part,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, FetchError>> + Send + '_>> {
        self.calls.lock().unwrap().push((
            part.name.clone(),
            path_and_query.to_string(),
            headers.clone(),
        ));
        let backend = self.backends[&part.name].clone();
        Box::pin(async move {
            match backend {
                Backend::Answer {
                    status,
                    content_type,
                    body,
                    delay,
                } => {
                    tokio::time::sleep(delay).await;
                    let mut res = Response::new(
                        Full::new(Bytes::from_static(body.as_bytes()))
                            .map_err(|never| match never {})
                            .boxed(),
                    );
                    *res.status_mut() = StatusCode::from_u16(status).unwrap();
                    if let Some(ct) = content_type {
                        res.headers_mut()
                            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
                    }
                    Ok(res)
                }
                Backend::Fail => Err(FetchError("connect to 10.0.0.7:8080 refused".into())),
                Backend::Endless => {
                    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
                    let stream = futures::stream::repeat(chunk)
                        .map(|c| Ok::<_, crate::core::http::BoxError>(http_body::Frame::data(c)));
                    let mut res = Response::new(BodyExt::boxed(StreamBody::new(stream)));
                    res.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    Ok(res)
                }
                Backend::Hang => futures::future::pending().await,
                Backend::Stall => {
                    let stream = futures::stream::pending::<
                        Result<http_body::Frame<Bytes>, crate::core::http::BoxError>,
                    >();
                    let mut res = Response::new(BodyExt::boxed(StreamBody::new(stream)));
                    res.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    Ok(res)
                }
            }
        })
    }
}

fn part(name: &str, path: &str, required: bool) -> Part {
    Part {
        name: name.to_string(),
        service: format!("{name}.shop"),
        port: 8080,
        path: path.parse().unwrap(),
        timeout: Duration::from_secs(1),
        required,
    }
}

/// The demo's product page.
fn product_view() -> Aggregation {
    let agg = Aggregation::new(vec![
        part("product", "/products/{last}", true),
        part("reviews", "/reviews?product={last}", false),
        part("rating", "/ratings/{last}", false),
    ]);
    agg.check().unwrap();
    agg
}

/// Room enough for any test's parts.
fn room() -> ByteBudget {
    ByteBudget::new(ROOM_TOTAL)
}

/// The demo's product page for `uri`, with room enough and nobody
/// listening to the parts' results.
async fn view(fetch: &FakeFetch, uri: &str) -> Response<Body> {
    aggregate(&product_view(), fetch, &get(uri), &room(), &|_, _| {}).await
}

fn get(uri: &str) -> http::request::Parts {
    request(Method::GET, uri)
}

fn request(method: Method, uri: &str) -> http::request::Parts {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("accept-language", "fr")
        .header("authorization", "Bearer secret")
        .header("cookie", "session=1")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

async fn body_of(res: Response<Body>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn json_of(res: Response<Body>) -> serde_json::Value {
    serde_json::from_str(&body_of(res).await).unwrap()
}

#[tokio::test]
async fn all_parts_merge_in_config_order_byte_for_byte() {
    let fetch = FakeFetch::new(&[
        (
            "product",
            json(r#"{"id":"42","price":12345678901234567890123}"#),
        ),
        ("reviews", json("[1, 2]")),
        ("rating", json("4.5")),
    ]);
    let res = view(&fetch, "/api/product-view/42").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[AGGREGATE_HEADER], "complete");
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        body_of(res).await,
        r#"{"product":{"id":"42","price":12345678901234567890123},"reviews":[1, 2],"rating":4.5}"#,
        "order kept, and a number beyond f64 keeps its digits"
    );
    assert_eq!(
        fetch.paths(),
        [
            "product /products/42",
            "rating /ratings/42",
            "reviews /reviews?product=42"
        ]
    );
}

#[tokio::test]
async fn parts_get_only_trace_context_and_language_never_credentials() {
    let fetch = FakeFetch::new(&[
        ("product", json("{}")),
        ("reviews", json("[]")),
        ("rating", json("1")),
    ]);
    view(&fetch, "/api/product-view/42").await;
    for (_, _, h) in fetch.calls.lock().unwrap().iter() {
        assert!(h.contains_key("traceparent"));
        assert_eq!(h["accept-language"], "fr");
        assert_eq!(h[header::ACCEPT], "application/json");
        assert!(!h.contains_key(header::AUTHORIZATION), "{h:?}");
        assert!(!h.contains_key(header::COOKIE), "{h:?}");
        assert_eq!(h.len(), 3, "{h:?}");
    }
}

#[tokio::test]
async fn a_failed_optional_part_is_null_and_listed_as_partial() {
    let fetch = FakeFetch::new(&[
        ("product", json(r#"{"id":"42"}"#)),
        ("reviews", Backend::Fail),
        ("rating", json("4.5")),
    ]);
    let heard = Mutex::new(Vec::new());
    let res = aggregate(
        &product_view(),
        &fetch,
        &get("/api/product-view/42"),
        &room(),
        &|part, result| {
            heard
                .lock()
                .unwrap()
                .push(format!("{} {result}", part.name))
        },
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[AGGREGATE_HEADER], "partial");
    let mut heard = heard.into_inner().unwrap();
    heard.sort();
    assert_eq!(
        heard,
        ["product ok", "rating ok", "reviews unavailable"],
        "each part's result is told, for the metric"
    );
    let v = json_of(res).await;
    assert_eq!(
        v,
        serde_json::json!({
            "product": {"id": "42"},
            "reviews": null,
            "rating": 4.5,
            "_partial": [{"part": "reviews", "error": "unavailable"}],
        })
    );
}

#[tokio::test]
async fn a_failed_required_part_is_a_502_naming_it_without_internal_detail() {
    let fetch = FakeFetch::new(&[
        ("product", Backend::Fail),
        ("reviews", json("[]")),
        ("rating", json("4.5")),
    ]);
    let res = view(&fetch, "/api/product-view/42").await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert!(!res.headers().contains_key(AGGREGATE_HEADER));
    let text = body_of(res).await;
    assert!(!text.contains("10.0.0.7"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["part"], "product");
    assert_eq!(v["reason"], "unavailable");
    assert!(v["error"].is_string());
}

#[tokio::test(start_paused = true)]
async fn a_required_part_timing_out_is_a_504_after_its_timeout_not_the_slowest_part() {
    let mut agg = product_view();
    agg.parts[0].timeout = Duration::from_millis(200);
    let fetch = FakeFetch::new(&[
        ("product", Backend::Hang),
        ("reviews", slow("[]", Duration::from_millis(900))),
        ("rating", json("1")),
    ]);
    let start = Instant::now();
    let res = aggregate(
        &agg,
        &fetch,
        &get("/api/product-view/42"),
        &room(),
        &|_, _| {},
    )
    .await;
    let took = start.elapsed();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    // Decided when the required part gave up: the 900ms part is dropped.
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took <= Duration::from_millis(205), "{took:?}");
    let v = json_of(res).await;
    assert_eq!(v["part"], "product");
    assert_eq!(v["reason"], "timeout");
}

/// The timeout covers the body too: headers sent at once and a body
/// that never comes must not hold the answer.
#[tokio::test(start_paused = true)]
async fn a_required_part_whose_body_stalls_is_a_504_at_its_timeout() {
    let fetch = FakeFetch::new(&[
        ("product", Backend::Stall),
        ("reviews", json("[]")),
        ("rating", json("1")),
    ]);
    let start = Instant::now();
    let res = view(&fetch, "/api/product-view/42").await;
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let took = start.elapsed();
    assert!(
        took <= Duration::from_secs(1) + Duration::from_millis(5),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_answer_never_waits_longer_than_the_largest_timeout() {
    let fetch = FakeFetch::new(&[
        ("product", slow("{}", Duration::from_millis(10))),
        ("reviews", Backend::Hang),
        ("rating", slow("1", Duration::from_secs(3600))),
    ]);
    let start = Instant::now();
    let res = view(&fetch, "/api/product-view/42").await;
    let took = start.elapsed();
    assert!(
        took <= Duration::from_secs(1) + Duration::from_millis(5),
        "{took:?}"
    );
    assert_eq!(res.headers()[AGGREGATE_HEADER], "partial");
    let v = json_of(res).await;
    assert_eq!(
        v["_partial"],
        serde_json::json!([
            {"part": "reviews", "error": "timeout"},
            {"part": "rating", "error": "timeout"},
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn parts_run_concurrently_the_total_is_the_slowest_not_the_sum() {
    let fetch = FakeFetch::new(&[
        ("product", slow("{}", Duration::from_millis(300))),
        ("reviews", slow("[]", Duration::from_millis(300))),
        ("rating", slow("1", Duration::from_millis(300))),
    ]);
    let start = Instant::now();
    let res = view(&fetch, "/api/product-view/42").await;
    let took = start.elapsed();
    assert_eq!(res.headers()[AGGREGATE_HEADER], "complete");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_millis(600),
        "{took:?}: run one after another"
    );
}

#[tokio::test]
async fn parts_that_are_not_2xx_json_fail_with_their_reason() {
    let agg = Aggregation::new(vec![
        part("missing", "/a", false),
        part("html", "/b", false),
        part("garbage", "/c", false),
        part("untyped", "/d", false),
        part("problem", "/e", false),
        part("empty", "/f", false),
    ]);
    agg.check().unwrap();
    let fetch = FakeFetch::new(&[
        (
            "missing",
            Backend::Answer {
                status: 404,
                content_type: Some("application/json"),
                body: r#"{"error":"no"}"#,
                delay: Duration::ZERO,
            },
        ),
        (
            "html",
            Backend::Answer {
                status: 200,
                content_type: Some("text/html"),
                body: "{}",
                delay: Duration::ZERO,
            },
        ),
        ("garbage", json("{\"a\": ")),
        (
            "untyped",
            Backend::Answer {
                status: 200,
                content_type: None,
                body: r#"{"ok":true}"#,
                delay: Duration::ZERO,
            },
        ),
        (
            "problem",
            Backend::Answer {
                status: 200,
                content_type: Some("application/problem+json; charset=utf-8"),
                body: "[]",
                delay: Duration::ZERO,
            },
        ),
        (
            "empty",
            Backend::Answer {
                status: 204,
                content_type: None,
                body: "",
                delay: Duration::ZERO,
            },
        ),
    ]);
    let v = json_of(aggregate(&agg, &fetch, &get("/x"), &room(), &|_, _| {}).await).await;
    assert_eq!(v["untyped"], serde_json::json!({"ok": true}));
    assert_eq!(v["problem"], serde_json::json!([]));
    assert_eq!(
        v["_partial"],
        serde_json::json!([
            {"part": "missing", "error": "status 404"},
            {"part": "html", "error": "not json"},
            {"part": "garbage", "error": "not json"},
            {"part": "empty", "error": "not json"},
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn a_huge_body_is_cut_at_the_cap_not_buffered_whole() {
    let mut agg = Aggregation::new(vec![part("small", "/s", true), part("huge", "/h", false)]);
    agg.max_body_bytes = 100_000;
    agg.check().unwrap();
    let fetch = FakeFetch::new(&[("small", json("1")), ("huge", Backend::Endless)]);
    let res = aggregate(&agg, &fetch, &get("/x"), &room(), &|_, _| {}).await;
    let v = json_of(res).await;
    assert_eq!(
        v,
        serde_json::json!({"small": 1, "huge": null, "_partial": [{"part": "huge", "error": "too large"}]})
    );
}

#[tokio::test]
async fn a_body_declaring_a_length_over_the_cap_fails_before_reading() {
    let body = Full::new(Bytes::from(vec![b'1'; 11]))
        .map_err(|never| match never {})
        .boxed();
    assert_eq!(
        read_capped(body, 10, &room()).await.err(),
        Some(PartError::TooLarge(10))
    );
    let body = Full::new(Bytes::from(vec![b'1'; 10]))
        .map_err(|never| match never {})
        .boxed();
    assert_eq!(read_capped(body, 10, &room()).await.unwrap().0.len(), 10);
}

#[tokio::test]
async fn post_is_refused_with_405_and_no_part_asked() {
    let fetch = FakeFetch::new(&[]);
    let res = aggregate(
        &product_view(),
        &fetch,
        &request(Method::POST, "/api/product-view/42"),
        &room(),
        &|_, _| {},
    )
    .await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
    assert!(fetch.paths().is_empty());
}

#[tokio::test]
async fn head_has_the_headers_of_get_and_no_body() {
    let fetch = FakeFetch::new(&[
        ("product", json("{}")),
        ("reviews", json("[]")),
        ("rating", json("1")),
    ]);
    let got = view(&fetch, "/api/product-view/42").await;
    let head = aggregate(
        &product_view(),
        &fetch,
        &request(Method::HEAD, "/api/product-view/42"),
        &room(),
        &|_, _| {},
    )
    .await;
    assert_eq!(head.status(), got.status());
    assert_eq!(head.headers(), got.headers());
    assert_eq!(body_of(head).await, "");
}

/// `/api/product-view/..` would make the product part read `/products/..`,
/// which the backend resolves to `/`; encoded, it passes naive checks.
#[tokio::test]
async fn path_traversal_through_the_aggregated_segment_is_a_400_and_no_part_asked() {
    let fetch = FakeFetch::new(&[
        ("product", json("{}")),
        ("reviews", json("[]")),
        ("rating", json("1")),
    ]);
    for uri in ["/api/product-view/%2e%2e", "/api/product-view/.%2E"] {
        let res = view(&fetch, uri).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(json_of(res).await["reason"], "path refused");
    }
    assert!(fetch.paths().is_empty(), "{:?}", fetch.paths());
}

/// `/api/product-view/1&admin=true` must not become
/// `/reviews?product=1&admin=true` for the reviews part.
#[tokio::test]
async fn query_parameter_injection_through_the_aggregated_segment_is_refused() {
    let fetch = FakeFetch::new(&[
        ("product", json("{}")),
        ("reviews", json("[]")),
        ("rating", json("1")),
    ]);
    let res = view(&fetch, "/api/product-view/1&admin=true").await;
    assert_eq!(res.headers()[AGGREGATE_HEADER], "partial");
    let v = json_of(res).await;
    assert_eq!(
        v["_partial"],
        serde_json::json!([{"part": "reviews", "error": "path refused"}])
    );
    assert!(!fetch
        .paths()
        .iter()
        .any(|p| p.contains("admin") && p.starts_with("reviews")));
}

#[test]
fn template_rendering_table() {
    let ok: &[(&str, &str, Option<&str>, &str)] = &[
        ("/products/{last}", "/api/pv/42", None, "/products/42"),
        ("/products/{last}", "/api/pv/42/", None, "/products/42"),
        (
            "/products/{last}",
            "/api/pv/caf%C3%A9",
            None,
            "/products/caf%C3%A9",
        ),
        (
            "/ratings?product={last}",
            "/api/pv/42",
            None,
            "/ratings?product=42",
        ),
        ("/up{path}", "/a/b", None, "/up/a/b"),
        ("/search?{query}", "/s", Some("q=x&n=2"), "/search?q=x&n=2"),
        ("/search?{query}", "/s", None, "/search?"),
        ("/static", "/anything/..", None, "/static"),
        ("/p/{last}.json", "/x/7", None, "/p/7.json"),
        ("/p/{last}", "/x/...", None, "/p/..."),
        ("/p/{last}", "/x/a..b", None, "/p/a..b"),
    ];
    for (template, path, query, want) in ok {
        let t: PathTemplate = template.parse().unwrap();
        assert_eq!(
            t.render(path, *query).as_deref(),
            Ok(*want),
            "{template} {path}"
        );
    }
    let refused: &[(&str, &str, Option<&str>, RenderError)] = &[
        (
            "/p/{last}",
            "/x/..",
            None,
            RenderError::DotSegment("..".into()),
        ),
        (
            "/p/{last}",
            "/x/.",
            None,
            RenderError::DotSegment(".".into()),
        ),
        (
            "/p/{last}",
            "/x/%2e%2e",
            None,
            RenderError::DotSegment("%2e%2e".into()),
        ),
        (
            "/p/{last}",
            "/x/%2E.",
            None,
            RenderError::DotSegment("%2E.".into()),
        ),
        (
            "/p/{last}",
            "/x/%2e",
            None,
            RenderError::DotSegment("%2e".into()),
        ),
        (
            "/p/{last}",
            "/x/..%2fadmin",
            None,
            RenderError::Delimiter("%2f".into()),
        ),
        (
            "/p/{last}",
            "/x/..%5Cadmin",
            None,
            RenderError::Delimiter("%5c".into()),
        ),
        (
            "/p/{last}",
            "/x/a%00",
            None,
            RenderError::Delimiter("%00".into()),
        ),
        (
            "/p/{last}",
            "/x/a?b",
            None,
            RenderError::Delimiter("?".into()),
        ),
        (
            "/p/{last}",
            "/x/a#b",
            None,
            RenderError::Delimiter("#".into()),
        ),
        ("/p/{last}", "/", None, RenderError::NoLastSegment),
        (
            "/p?id={last}",
            "/x/1&admin=1",
            None,
            RenderError::Delimiter("&".into()),
        ),
        (
            "/p?id={last}",
            "/x/1=2",
            None,
            RenderError::Delimiter("=".into()),
        ),
        (
            "/up{path}",
            "/a/../admin",
            None,
            RenderError::DotSegment("..".into()),
        ),
        (
            "/up{path}",
            "/a/%2E%2E/admin",
            None,
            RenderError::DotSegment("%2E%2E".into()),
        ),
        (
            "/s?{query}",
            "/s",
            Some("a=1#frag"),
            RenderError::Delimiter("#".into()),
        ),
    ];
    for (template, path, query, want) in refused {
        let t: PathTemplate = template.parse().unwrap();
        assert_eq!(
            t.render(path, *query).as_ref(),
            Err(want),
            "{template} {path}"
        );
    }
    // `&` is an ordinary character in a path segment.
    let t: PathTemplate = "/p/{last}".parse().unwrap();
    assert_eq!(t.render("/x/a&b", None).as_deref(), Ok("/p/a&b"));
}

#[test]
fn template_parse_errors() {
    let cases: &[(&str, TemplateError)] = &[
        ("products/{last}", TemplateError::NotAbsolute),
        ("/p/{last", TemplateError::Unbalanced(3)),
        ("/p/last}", TemplateError::Unbalanced(7)),
        ("/p/{{last}}", TemplateError::Unbalanced(3)),
        ("/p/{id}", TemplateError::UnknownPlaceholder("id".into())),
        ("/p/{}", TemplateError::UnknownPlaceholder(String::new())),
        ("/p/{query}", TemplateError::QueryInPath),
        ("/p/{last}#x", TemplateError::BadChar('#')),
        ("/p /{last}", TemplateError::BadChar(' ')),
        ("/p\\{last}", TemplateError::BadChar('\\')),
        ("/caf\u{e9}/{last}", TemplateError::BadChar('\u{e9}')),
    ];
    for (s, want) in cases {
        assert_eq!(s.parse::<PathTemplate>().as_ref(), Err(want), "{s}");
    }
    let long = format!("/{}", "a".repeat(MAX_TEMPLATE_LEN));
    assert_eq!(
        long.parse::<PathTemplate>(),
        Err(TemplateError::TooLong(MAX_TEMPLATE_LEN + 1))
    );
    assert_eq!(
        "/r?p={last}&{query}"
            .parse::<PathTemplate>()
            .unwrap()
            .to_string(),
        "/r?p={last}&{query}"
    );
}

#[test]
fn config_check_names_the_part() {
    let base = product_view;
    let check = |f: &dyn Fn(&mut Aggregation)| {
        let mut agg = base();
        f(&mut agg);
        agg.check()
    };
    assert_eq!(check(&|a| a.parts.clear()), Err(ConfigError::NoParts));
    assert_eq!(
        check(&|a| {
            a.parts = (0..17)
                .map(|i| part(&format!("p{i}"), "/", false))
                .collect()
        }),
        Err(ConfigError::TooManyParts(17))
    );
    assert_eq!(
        check(&|a| a.max_body_bytes = 0),
        Err(ConfigError::BadBodyCap(0))
    );
    assert_eq!(
        check(&|a| a.max_body_bytes = MAX_BODY_BYTES + 1),
        Err(ConfigError::BadBodyCap(MAX_BODY_BYTES + 1))
    );
    for bad in [
        "",
        "_partial",
        "Product",
        "9lives",
        "a-b",
        "a.b",
        &"a".repeat(64),
    ] {
        assert_eq!(
            check(&|a| a.parts[1].name = bad.to_string()),
            Err(ConfigError::BadName {
                index: 1,
                name: bad.to_string()
            }),
            "{bad}"
        );
    }
    assert!(check(&|a| a.parts[1].name = "a".repeat(63)).is_ok());
    assert!(check(&|a| a.parts[1].name = "r2_d2".into()).is_ok());
    assert_eq!(
        check(&|a| a.parts[2].name = "product".into()),
        Err(ConfigError::DuplicateName("product".into()))
    );
    for bad in [
        "reviews",
        "reviews.",
        ".shop",
        "a.b.c",
        "Reviews.shop",
        "-r.shop",
        "r_s.shop",
    ] {
        assert_eq!(
            check(&|a| a.parts[0].service = bad.to_string()),
            Err(ConfigError::BadService {
                part: "product".into(),
                service: bad.to_string()
            }),
            "{bad}"
        );
    }
    assert_eq!(
        check(&|a| a.parts[2].port = 0),
        Err(ConfigError::ZeroPort {
            part: "rating".into()
        })
    );
    for bad in [Duration::ZERO, MAX_TIMEOUT + Duration::from_millis(1)] {
        assert_eq!(
            check(&|a| a.parts[1].timeout = bad),
            Err(ConfigError::BadTimeout {
                part: "reviews".into(),
                timeout: bad
            })
        );
    }
    assert!(ConfigError::ZeroPort {
        part: "rating".into()
    }
    .to_string()
    .contains("rating"));
}

#[test]
fn json_content_types() {
    for (ct, want) in [
        ("application/json", true),
        ("Application/JSON; charset=utf-8", true),
        ("application/problem+json", true),
        ("application/vnd.api+json ; x=1", true),
        ("text/json", false),
        ("text/html", false),
        ("application/jsonp", false),
        ("application/json-seq", false),
    ] {
        assert_eq!(is_json_type(&HeaderValue::from_static(ct)), want, "{ct}");
    }
}

#[tokio::test]
async fn aggregations_held_by_slow_readers_cannot_pass_the_room_total() {
    // Every part's answer is ~100 KiB; the room holds about three.
    let big: String = format!("[{}]", vec!["1234567890"; 10_000].join(","));
    let big: &'static str = Box::leak(big.into_boxed_str());
    let fetch = FakeFetch::new(&[("product", json(big))]);
    let agg = Aggregation::new(vec![part("product", "/products/{last}", true)]);
    agg.check().unwrap();
    let room = ByteBudget::new(3 * big.len() + 1024);
    // Answers not yet read by their (slow) clients keep their room.
    let mut unread = Vec::new();
    for _ in 0..3 {
        let res = aggregate(&agg, &fetch, &get("/p/1"), &room, &|_, _| {}).await;
        assert_eq!(res.status(), StatusCode::OK);
        unread.push(res);
    }
    let res = aggregate(&agg, &fetch, &get("/p/1"), &room, &|_, _| {}).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json_of(res).await["reason"],
        "gateway busy",
        "a required part with no room fails the answer, saying why"
    );
    // Sent answers give their room back.
    drop(unread.pop());
    let res = aggregate(&agg, &fetch, &get("/p/1"), &room, &|_, _| {}).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        json_of(res).await["product"].as_array().unwrap().len(),
        10_000
    );
}
