//! HTTP/1.1 Upgrade (WebSocket and the like) across the mesh.
//!
//! Mesh connections are HTTP/2, which has no `Upgrade`. The client sidecar
//! opens an HTTP/2 CONNECT tunnel to the app port behind the chosen
//! endpoint (the same tunnel `--tcp-upstream` uses, so the server sidecar
//! checks the port as for any tunnel), sends the app's upgrade request
//! through it as HTTP/1.1, and relays the answer. On `101 Switching
//! Protocols` both sides become one byte pipe: the caller's connection and
//! the tunnel. Any other answer is an ordinary response.
//!
//! The app gets no `x-mycel-peer-id` on such a request: the tunnel carries
//! bytes the server sidecar does not parse (the tunnel itself is mTLS and
//! refused on undeclared ports, as every tunnel is).

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use super::forward::ForwardError;
use super::Outbound;
use crate::core::directory::{Endpoint, Protocol, ServicePort};
use crate::core::http::{boxed, empty, strip_hop_by_hop, Body, APP_PROTOCOL, DST_PORT, PEER_ID};

/// The `Upgrade` value of an HTTP/1.1 upgrade request worth carrying, if
/// any. `h2c` is not carried: the mesh speaks HTTP/2 itself.
fn upgrade_value<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let value = req.headers().get(header::UPGRADE)?;
    let h2c = value
        .to_str()
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("h2c"));
    (asks && !h2c).then(|| value.clone())
}

/// True when `req` asks to upgrade and the app port speaks HTTP/1.
pub fn wants_upgrade<B>(req: &Request<B>, protocol: Protocol) -> bool {
    protocol == Protocol::Http && upgrade_value(req).is_some()
}

/// The request as the app gets it through the tunnel: origin form, HTTP/1.1,
/// the caller's `Host` (or the authority it addressed), hop-by-hop headers
/// gone except the upgrade itself, mesh headers gone.
fn app_request(req: Request<Body>, authority: &str) -> Result<Request<Body>, http::Error> {
    let upgrade = upgrade_value(&req);
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    parts.uri = Uri::builder().path_and_query(path).build()?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    for name in [PEER_ID, DST_PORT, APP_PROTOCOL] {
        parts.headers.remove(name);
    }
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_str(authority)?);
    }
    if let Some(upgrade) = upgrade {
        parts.headers.insert(header::UPGRADE, upgrade);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    Ok(Request::from_parts(parts, body))
}

impl Outbound {
    /// Carries one upgrade request to app port `port` of `endpoint`.
    pub(super) async fn upgrade(
        &self,
        endpoint: &Endpoint,
        port: &ServicePort,
        authority: &str,
        mut req: Request<Body>,
        opts: super::pool::DialOptions,
    ) -> Result<Response<Body>, ForwardError> {
        let name = super::forward::endpoint_name(endpoint);
        let failed = |source| ForwardError::Upgrade {
            endpoint: name.clone(),
            source,
        };
        let caller_side = hyper::upgrade::on(&mut req);
        let req = app_request(req, authority)?;
        let tunnel = self
            .tunnel_with(endpoint, port.target_port, opts, None)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(tunnel)
            .await
            .map_err(failed)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upgrade: app connection ended with error");
            }
        });
        let mut res = sender.send_request(req).await.map_err(failed)?;
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            return Ok(Response::from_parts(parts, boxed(body)));
        }
        let app_side = hyper::upgrade::on(&mut res);
        let endpoint = name.clone();
        tokio::spawn(async move {
            let (caller, app) = tokio::join!(caller_side, app_side);
            let (caller, app) = match (caller, app) {
                (Ok(c), Ok(a)) => (c, a),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(%endpoint, error = %e, "upgrade: one side did not switch");
                    return;
                }
            };
            let (mut caller, mut app) = (TokioIo::new(caller), TokioIo::new(app));
            if let Err(e) = tokio::io::copy_bidirectional(&mut caller, &mut app).await {
                tracing::debug!(%endpoint, error = %e, "upgrade: pipe ended with error");
            }
        });
        // The app's own `Upgrade`/`Connection`/`Sec-WebSocket-Accept` go
        // back as they are: they are what the caller asked for.
        let (parts, _) = res.into_parts();
        Ok(Response::from_parts(parts, empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, headers: &[(&str, &str)]) -> Request<Body> {
        let mut b = Request::get("http://chat.shop/ws?room=1").version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(empty()).unwrap()
    }

    #[test]
    fn which_requests_upgrade() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        let cases = [
            (req(Version::HTTP_11, &ws), Protocol::Http, true),
            (req(Version::HTTP_11, &ws), Protocol::Grpc, false),
            (req(Version::HTTP_2, &ws), Protocol::Http, false),
            (
                req(Version::HTTP_11, &[("upgrade", "websocket")]),
                Protocol::Http,
                false,
            ),
            (
                req(
                    Version::HTTP_11,
                    &[("connection", "upgrade"), ("upgrade", "h2c")],
                ),
                Protocol::Http,
                false,
            ),
            (req(Version::HTTP_11, &[]), Protocol::Http, false),
        ];
        for (i, (r, protocol, want)) in cases.into_iter().enumerate() {
            assert_eq!(wants_upgrade(&r, protocol), want, "case {i}");
        }
    }

    #[test]
    fn app_request_keeps_the_upgrade_and_drops_mesh_headers() {
        let r = req(
            Version::HTTP_11,
            &[
                ("connection", "Upgrade, x-private"),
                ("upgrade", "websocket"),
                ("x-private", "1"),
                ("sec-websocket-key", "abc"),
                (
                    "x-mycel-peer-id",
                    "spiffe://cluster.local/ns/shop/sa/forged",
                ),
                ("mycel-dst-port", "22"),
            ],
        );
        let out = app_request(r, "chat.shop:80").unwrap();
        assert_eq!(out.uri(), "/ws?room=1");
        assert_eq!(out.version(), Version::HTTP_11);
        let h = out.headers();
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["host"], "chat.shop:80");
        assert_eq!(h["sec-websocket-key"], "abc");
        for gone in ["x-private", "x-mycel-peer-id", "mycel-dst-port"] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
    }
}
