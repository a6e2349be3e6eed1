//! The backend every configuration ends at: a fixed 1 KB answer over
//! HTTP/1.1, HTTP/2 (h2c) and gRPC unary, and a TCP sink for bulk transfer;
//! and, for the gateway scenario's baseline, the same answer over TLS
//! ([`serve_tls`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The generated gRPC code for `proto/bench.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("bench.v1");
}

/// Size of every response body.
pub const PAYLOAD_LEN: usize = 1024;

/// The fixed response body: 1 KB of printable bytes.
pub fn payload() -> Bytes {
    Bytes::from(
        (0..PAYLOAD_LEN)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// Where the backend listens.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct BackendAddrs {
    pub http1: SocketAddr,
    pub h2c: SocketAddr,
    pub grpc: SocketAddr,
    pub tcp: SocketAddr,
}

/// A running backend; its tasks end when it is dropped.
pub struct Backend {
    pub addrs: BackendAddrs,
    _tasks: JoinSet<()>,
}

async fn bind() -> std::io::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").await
}

impl Backend {
    /// Binds four loopback ports and serves them.
    pub async fn start() -> std::io::Result<Backend> {
        let (h1, h2, grpc, tcp) = (bind().await?, bind().await?, bind().await?, bind().await?);
        let addrs = BackendAddrs {
            http1: h1.local_addr()?,
            h2c: h2.local_addr()?,
            grpc: grpc.local_addr()?,
            tcp: tcp.local_addr()?,
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_http(h1, false));
        tasks.spawn(serve_http(h2, true));
        tasks.spawn(serve_grpc(grpc));
        tasks.spawn(serve_tcp_sink(tcp));
        Ok(Backend {
            addrs,
            _tasks: tasks,
        })
    }
}

/// The answer's body: the fixed payload, or a bulk download.
type AnswerBody = http_body_util::Either<
    Full<Bytes>,
    http_body_util::StreamBody<
        futures::stream::Iter<std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, Infallible>>>,
    >,
>;

/// Size of the pieces a bulk answer is sent in.
const BULK_CHUNK: usize = 256 * 1024;

/// Longest bulk answer served: a bound, not a limit anyone meets.
const BULK_MAX: u64 = 16 << 30;

/// `GET /bulk/<n>` answers `n` bytes (at most [`BULK_MAX`]), the bulk
/// scenario's download; every other request the fixed `body`.
async fn answer(
    req: http::Request<hyper::body::Incoming>,
    body: Bytes,
) -> Result<http::Response<AnswerBody>, Infallible> {
    let bulk = req
        .uri()
        .path()
        .strip_prefix("/bulk/")
        .and_then(|n| n.parse::<u64>().ok())
        .map(|n| n.min(BULK_MAX));
    let mut resp = match bulk {
        None => http::Response::new(http_body_util::Either::Left(Full::new(body))),
        Some(n) => {
            let chunk = Bytes::from(vec![0x5au8; BULK_CHUNK]);
            let step = BULK_CHUNK as u64;
            let frames: Vec<_> = (0..n.div_ceil(step))
                .map(|i| {
                    let len = (n - i * step).min(step) as usize;
                    Ok(hyper::body::Frame::data(chunk.slice(..len)))
                })
                .collect();
            let mut resp = http::Response::new(http_body_util::Either::Right(
                http_body_util::StreamBody::new(futures::stream::iter(frames)),
            ));
            resp.headers_mut()
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
            resp
        }
    };
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

/// Serves one connection (cleartext or TLS) until the client closes it.
async fn serve_conn<S>(stream: S, h2: bool, body: Bytes)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| answer(req, body.clone()));
    let io = TokioIo::new(stream);
    // A client going away mid-request is normal under load; the
    // error has no one to go to.
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .max_concurrent_streams(1000)
            .serve_connection(io, svc)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .await;
    }
}

async fn serve_http(listener: TcpListener, h2: bool) {
    let body = payload();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_conn(stream, h2, body.clone()));
    }
}

/// The TLS server config of [`serve_tls`]: TLS 1.3 only (as the other
/// fronts of the gateway scenario are configured), ALPN h2 then
/// http/1.1, one certificate chain and its PKCS#8 key (DER).
pub fn tls_config(
    chain_der: &[Vec<u8>],
    key_pkcs8_der: &[u8],
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            chain_der
                .iter()
                .map(|d| CertificateDer::from(d.clone()))
                .collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec())),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The 1 KB answer over TLS on a new loopback port, HTTP/2 or HTTP/1.1 as
/// ALPN chose: the `direct-tls` baseline (the backend terminating TLS
/// itself, in the harness process). Serves until `tasks` is dropped;
/// connections already open end when their client closes them.
pub async fn serve_tls(
    config: Arc<rustls::ServerConfig>,
    tasks: &mut JoinSet<()>,
) -> std::io::Result<SocketAddr> {
    let listener = bind().await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let body = payload();
    tasks.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                // A client that never finishes its handshake must not hold
                // a task for ever.
                let accepted =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
                let Ok(Ok(tls)) = accepted else { return };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                serve_conn(tls, h2, body).await;
            });
        }
    });
    Ok(addr)
}

#[derive(Clone)]
struct Echo {
    body: Bytes,
}

#[tonic::async_trait]
impl proto::echo_server::Echo for Echo {
    async fn get(
        &self,
        _req: tonic::Request<proto::GetRequest>,
    ) -> Result<tonic::Response<proto::GetReply>, tonic::Status> {
        Ok(tonic::Response::new(proto::GetReply {
            payload: self.body.clone(),
        }))
    }
}

async fn serve_grpc(listener: TcpListener) {
    // TCP_NODELAY on every accepted socket: without it small replies wait
    // for the client's delayed ACK (~40 ms). `Server::tcp_nodelay` only
    // applies to listeners tonic binds itself.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let svc = proto::echo_server::EchoServer::new(Echo { body: payload() });
    let _ = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming(incoming)
        .await;
}

/// Reads an 8-byte big-endian length, then that many bytes, then answers
/// the count it read (8 bytes), so the client knows all of it arrived. The
/// length prefix avoids relying on half-close through a tunnel.
async fn serve_tcp_sink(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(sink(stream));
    }
}

async fn sink(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut len = [0u8; 8];
    if stream.read_exact(&mut len).await.is_err() {
        return;
    }
    let want = u64::from_be_bytes(len);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    while total < want {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    let _ = stream.write_all(&total.to_be_bytes()).await;
    let _ = stream.shutdown().await;
}
