//! `/app-health/<container>/<livez|readyz|startupz>`: the kubelet's HTTP
//! probes of the app, rewritten by the injector to the admin port (which is
//! never captured), forwarded here to the app on `--app-host`. Only the
//! targets listed in `MYCEL_APP_PROBES` are reachable, so this is no open
//! relay; each call has the probe's own timeout and its own connection.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper_util::rt::TokioIo;
use mycel_api::probes::AppProbe;
use tokio::net::TcpStream;

/// Calls the app as the kubelet would have: 2xx and 3xx are success (200
/// here), any other status is passed on, and a failure to connect or a
/// timeout is 503 with the reason.
pub async fn forward(
    probe: &AppProbe,
    app_host: IpAddr,
    user_agent: Option<HeaderValue>,
) -> Response<Full<Bytes>> {
    let timeout = Duration::from_secs(u64::from(probe.timeout_seconds));
    let addr = SocketAddr::new(app_host, probe.port);
    match tokio::time::timeout(timeout, call(addr, probe, user_agent)).await {
        Ok(Ok(status)) if status.is_success() || status.is_redirection() => super::text(
            StatusCode::OK,
            format!("app answered {}\n", status.as_u16()),
        ),
        Ok(Ok(status)) => super::text(status, format!("app answered {}\n", status.as_u16())),
        Ok(Err(e)) => super::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("probe of {addr}{} failed: {e}\n", probe.path),
        ),
        Err(_) => super::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "probe of {addr}{} timed out after {}s\n",
                probe.path, probe.timeout_seconds
            ),
        ),
    }
}

async fn call(
    addr: SocketAddr,
    probe: &AppProbe,
    user_agent: Option<HeaderValue>,
) -> Result<StatusCode, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    // The connection lives only as long as this call: dropped with it.
    let conn = tokio::spawn(conn);
    let mut req = Request::get(probe.path.as_str()).body(Empty::<Bytes>::new())?;
    let headers = req.headers_mut();
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(&addr.to_string())?,
    );
    if let Some(ua) = user_agent {
        headers.insert(http::header::USER_AGENT, ua);
    }
    // The probe's own headers win, Host included, as with the kubelet.
    for h in &probe.headers {
        headers.insert(
            HeaderName::from_bytes(h.name.as_bytes())?,
            HeaderValue::from_str(&h.value)?,
        );
    }
    let status = sender.send_request(req).await.map(|r| r.status());
    conn.abort();
    Ok(status?)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use http_body_util::BodyExt;
    use mycel_api::probes::ProbeHeader;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A one-shot app: reads a request head, answers `status` (or never
    /// answers when `None`), and hands the head back.
    async fn app(status: Option<u16>) -> (u16, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            match status {
                Some(code) => {
                    let answer = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
                    s.write_all(answer.as_bytes()).await.unwrap();
                }
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
            String::from_utf8_lossy(&head).into_owned()
        });
        (port, task)
    }

    fn probe(port: u16) -> AppProbe {
        AppProbe {
            port,
            path: "/healthz?full=1".into(),
            headers: vec![ProbeHeader {
                name: "x-probe".into(),
                value: "yes".into(),
            }],
            timeout_seconds: 1,
        }
    }

    async fn status_and_body(r: Response<Full<Bytes>>) -> (StatusCode, String) {
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn forwards_path_and_headers_and_maps_the_status() {
        let (port, head) = app(Some(204)).await;
        let ua = HeaderValue::from_static("kube-probe/1.35");
        let (status, _) =
            status_and_body(forward(&probe(port), Ipv4Addr::LOCALHOST.into(), Some(ua)).await)
                .await;
        assert_eq!(status, StatusCode::OK);
        let head = head.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /healthz?full=1 http/1.1"), "{head}");
        assert!(
            head.contains("x-probe: yes") && head.contains("user-agent: kube-probe/1.35"),
            "{head}"
        );

        let (port, _) = app(Some(500)).await;
        let (status, _) =
            status_and_body(forward(&probe(port), Ipv4Addr::LOCALHOST.into(), None).await).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn app_that_never_answers_fails_the_probe_within_its_timeout() {
        let (port, _) = app(None).await;
        let started = std::time::Instant::now();
        let (status, body) =
            status_and_body(forward(&probe(port), Ipv4Addr::LOCALHOST.into(), None).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("timed out after 1s"), "{body}");
        // Generous: the point is that it does not wait for the app's 30 s.
        assert!(started.elapsed() < Duration::from_secs(15));
    }

    #[tokio::test]
    async fn closed_app_port_fails_the_probe() {
        let port = {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let (status, body) =
            status_and_body(forward(&probe(port), Ipv4Addr::LOCALHOST.into(), None).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("failed"), "{body}");
    }
}
