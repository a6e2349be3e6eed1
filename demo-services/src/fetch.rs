//! `mycel-demo fetch URL`: plain HTTP/1.1 GETs from inside a pod, one JSON
//! line per request. The demo image is `FROM scratch` (no shell, no curl),
//! so this is how a test asks, with `kubectl exec`, whether a pod can reach
//! a service, e.g. whether a meshed service refuses a caller outside the
//! mesh in strict mTLS mode.

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use http::uri::{Authority, Scheme, Uri};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::FetchArgs;
use crate::upstream::{self, Route, Target, TargetError};

/// A URL `fetch` can GET: `http://HOST[:PORT][/PATH][?QUERY]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchUrl {
    /// Where to connect; a host name is looked up at each request.
    pub connect: Target,
    /// The `Host` header: the authority as written.
    pub authority: String,
    /// Origin-form request target (`/` when the URL has no path).
    pub path: String,
}

/// Why a URL is refused (a usage error: nothing was sent).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL ({0}): expected http://HOST[:PORT]/PATH")]
    Syntax(String),
    #[error("only http:// URLs (the mesh adds TLS itself), not {0}://")]
    Scheme(String),
    #[error("no host: expected http://HOST[:PORT]/PATH")]
    NoHost,
    #[error("user info (user@host) is not supported")]
    UserInfo,
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl FetchUrl {
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let uri: Uri = text
            .parse()
            .map_err(|e: http::uri::InvalidUri| UrlError::Syntax(e.to_string()))?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            Some(s) => return Err(UrlError::Scheme(s.as_str().to_string())),
            None => return Err(UrlError::NoHost),
        }
        let authority: &Authority = uri.authority().ok_or(UrlError::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(UrlError::UserInfo);
        }
        // Split here rather than with `Authority::port`, which reads a port
        // that does not fit in 16 bits as no port at all (then 80).
        let text = authority.as_str();
        let after_host = text.rfind(']').map_or(text, |i| &text[i..]);
        let with_port = if after_host.contains(':') {
            text.to_string()
        } else {
            format!("{text}:80")
        };
        // IP literals (`[v6]` too) and host names, checked as `--direct`
        // checks them.
        let connect = Target::parse(&with_port)?;
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .to_string();
        Ok(FetchUrl {
            connect,
            authority: authority.as_str().to_string(),
            path,
        })
    }
}

impl fmt::Display for FetchUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// What one request came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The server answered with this status and a body of at most 1 MiB.
    Status(u16),
    /// No (complete) answer: refused, reset, timed out, body too large...
    Error(String),
}

/// One request's line of output.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub answer: Answer,
    /// From the start of the request (name lookup included) to its end.
    pub elapsed: Duration,
}

impl Outcome {
    /// Only a 2xx answer counts as reaching the service.
    pub fn ok(&self) -> bool {
        matches!(self.answer, Answer::Status(s) if (200..300).contains(&s))
    }

    /// `{"status":200,"ms":3.1}` or `{"error":"...","ms":2000.4}`.
    pub fn json_line(&self) -> String {
        /// Fields in the order they are printed.
        #[derive(Serialize)]
        struct Line<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<u16>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a str>,
            ms: f64,
        }
        let (status, error) = match &self.answer {
            Answer::Status(s) => (Some(*s), None),
            Answer::Error(e) => (None, Some(e.as_str())),
        };
        // Tenths of a millisecond: finer is noise in a pod.
        let ms = (self.elapsed.as_secs_f64() * 10_000.0).round() / 10.0;
        // Cannot fail: no maps, and a finite float.
        serde_json::to_string(&Line { status, error, ms }).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{failed} of {count} requests to {url} got no 2xx answer")]
    Failed {
        failed: u32,
        count: u32,
        url: String,
    },
    #[error("writing to stdout")]
    Output(#[source] std::io::Error),
}

/// One GET on a fresh connection, bounded by `timeout` from the name
/// lookup to the last byte of the body.
pub async fn fetch_once(url: &FetchUrl, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let route = Route {
        connect: url.connect.clone(),
        authority: url.authority.clone(),
    };
    // `get` reads at most 1 MiB of body; more is an error, not a hang.
    // A fetch starts no trace: the gateway or the first sidecar does.
    let exchange = upstream::get(&route, &url.authority, &url.path, &crate::trace::NO_TRACE);
    let answer = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((status, _body))) => Answer::Status(status),
        Ok(Err(e)) => Answer::Error(mycel_api::report::one_line(&e)),
        Err(_) => Answer::Error(format!("no answer within {} ms", timeout.as_millis())),
    };
    Outcome {
        answer,
        elapsed: started.elapsed(),
    }
}

/// Makes `count` requests with `one`, one after another, each starting at
/// least `every` after the previous one started (a slow request delays the
/// next instead of overlapping it), and hands each outcome to `report` as
/// soon as it is known. Returns how many were not 2xx.
pub async fn repeat<F, Fut, E>(
    count: u32,
    every: Duration,
    mut one: F,
    mut report: impl FnMut(&Outcome) -> Result<(), E>,
) -> Result<u32, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut failed = 0;
    let mut next = Instant::now();
    for _ in 0..count {
        tokio::time::sleep_until(next).await;
        let started = Instant::now();
        next = started + every;
        let outcome = one().await;
        if !outcome.ok() {
            failed += 1;
        }
        report(&outcome)?;
    }
    Ok(failed)
}

/// `mycel-demo fetch`: the lines on stdout, and an error (exit status 1)
/// unless every request got a 2xx answer.
pub async fn run(args: &FetchArgs) -> Result<(), FetchError> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut stdout = std::io::stdout();
    let failed = repeat(
        args.count,
        Duration::from_millis(args.every_ms),
        || fetch_once(&args.url, timeout),
        // One line per request as it ends, so `kubectl exec` shows progress.
        |outcome| writeln!(stdout, "{}", outcome.json_line()).and_then(|()| stdout.flush()),
    )
    .await
    .map_err(FetchError::Output)?;
    if failed > 0 {
        return Err(FetchError::Failed {
            failed,
            count: args.count,
            url: args.url.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn url_table() {
        let host = |h: &str, port| Target::Host {
            host: h.to_string(),
            port,
        };
        let addr = |a: &str| Target::Addr(a.parse().unwrap());
        let ok: &[(&str, Target, &str, &str)] = &[
            (
                "http://catalog/products",
                host("catalog", 80),
                "catalog",
                "/products",
            ),
            ("http://catalog", host("catalog", 80), "catalog", "/"),
            (
                "http://catalog.shop.svc.cluster.local:8080/a?b=c",
                host("catalog.shop.svc.cluster.local", 8080),
                "catalog.shop.svc.cluster.local:8080",
                "/a?b=c",
            ),
            (
                "http://127.0.0.1:9/",
                addr("127.0.0.1:9"),
                "127.0.0.1:9",
                "/",
            ),
            ("http://[::1]:9/x", addr("[::1]:9"), "[::1]:9", "/x"),
            ("http://[::1]/", addr("[::1]:80"), "[::1]", "/"),
        ];
        for (text, connect, authority, path) in ok {
            let url = FetchUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&url.connect, connect, "{text}");
            assert_eq!(url.authority, *authority, "{text}");
            assert_eq!(url.path, *path, "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("https://catalog/", "only http://"),
            ("ftp://catalog/", "only http://"),
            ("catalog/products", "not a URL"),
            ("/products", "no host"),
            ("http://user@catalog/", "user info"),
            ("http://catalog:0/", "not a port"),
            ("http://catalog:99999/", "not a port"),
            ("http://cat_alog/", "not a host name"),
            ("http://[::zz]/", "not a host name"),
            ("http://:80/", "not a host name"),
            ("http://catalog/a b", "not a URL"),
            ("", "not a URL"),
        ];
        for (text, want) in bad {
            let err = FetchUrl::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn json_lines() {
        let line = |answer, ms| {
            Outcome {
                answer,
                elapsed: Duration::from_micros(ms),
            }
            .json_line()
        };
        assert_eq!(
            line(Answer::Status(200), 3_140),
            r#"{"status":200,"ms":3.1}"#
        );
        assert_eq!(
            line(Answer::Error("connection refused".into()), 250),
            r#"{"error":"connection refused","ms":0.3}"#
        );
    }

    #[test]
    fn only_2xx_is_ok() {
        let ok = |answer| {
            Outcome {
                answer,
                elapsed: Duration::ZERO,
            }
            .ok()
        };
        assert!(ok(Answer::Status(200)) && ok(Answer::Status(204)));
        assert!(!ok(Answer::Status(301)) && !ok(Answer::Status(503)));
        assert!(!ok(Answer::Error("reset".into())));
    }

    /// Requests that take `took` each, answered from `statuses` in turn;
    /// returns the instants (since the test began) at which they started.
    async fn schedule(every_ms: u64, took_ms: u64, statuses: &[u16]) -> (Vec<u64>, u32) {
        let begin = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(statuses.iter().copied()));
        let failed = repeat(
            u32::try_from(statuses.len()).unwrap(),
            Duration::from_millis(every_ms),
            || {
                let (starts, answers) = (starts.clone(), answers.clone());
                async move {
                    let at = begin.elapsed().as_millis();
                    starts.lock().unwrap().push(u64::try_from(at).unwrap());
                    tokio::time::sleep(Duration::from_millis(took_ms)).await;
                    Outcome {
                        answer: Answer::Status(answers.lock().unwrap().next().unwrap()),
                        elapsed: Duration::from_millis(took_ms),
                    }
                }
            },
            |_| Ok::<(), ()>(()),
        )
        .await
        .unwrap();
        let starts = starts.lock().unwrap().clone();
        (starts, failed)
    }

    #[tokio::test(start_paused = true)]
    async fn requests_start_every_interval_and_never_overlap() {
        // Fast requests: one every 100 ms.
        assert_eq!(
            schedule(100, 10, &[200, 200, 200]).await,
            (vec![0, 100, 200], 0)
        );
        // No interval: back to back.
        assert_eq!(schedule(0, 10, &[200, 503]).await, (vec![0, 10], 1));
        // Slower than the interval: the next starts when the last ends.
        assert_eq!(
            schedule(100, 150, &[500, 200, 404]).await,
            (vec![0, 150, 300], 2)
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_an_error_line() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = FetchUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let outcome = fetch_once(&url, Duration::from_secs(2)).await;
        match &outcome.answer {
            Answer::Error(e) => assert!(e.to_lowercase().contains("refused"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(!outcome.ok());
    }
}
