//! Where one connection to another service is dialled: a socket address,
//! or a host name and port looked up when the connection is made. In
//! Kubernetes the host is a Service name (`catalog`, found through the pod's
//! DNS search path), its address the Service's ClusterIP, which the pod's
//! sidecar captures; looking it up per connection follows a Service that
//! was deleted and created again without restarting the app.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::UpstreamError;

/// Longest host name DNS carries (RFC 1035, without the trailing dot).
const MAX_HOST: usize = 253;
/// Longest label of a host name.
const MAX_LABEL: usize = 63;

/// A call target: `IP:PORT` or `HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target::Addr(addr)
    }
}

/// Prints the form [`Target::parse`] reads, also the authority of a URI
/// (`[::1]:80`, `catalog:80`).
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Why a `HOST:PORT` is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("no port: expected IP:PORT or HOST:PORT")]
    NoPort,
    #[error("{0:?} is not a port (1-65535)")]
    Port(String),
    #[error("{0:?} is not a host name (letters, digits, '-' and '.', labels of 1-63 characters)")]
    Host(String),
}

impl Target {
    /// Reads `IP:PORT` (`[v6]:PORT` for IPv6) or `HOST:PORT`. Host names
    /// are checked here, so a typo fails at start rather than at the first
    /// call.
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Target::Addr(addr));
        }
        let (host, port) = text.rsplit_once(':').ok_or(TargetError::NoPort)?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| TargetError::Port(port.to_string()))?;
        if !is_host_name(host) {
            return Err(TargetError::Host(host.to_string()));
        }
        Ok(Target::Host {
            host: host.to_string(),
            port,
        })
    }
}

/// RFC 1123 host names, with one trailing dot allowed (a fully qualified
/// name skips the search path). The last label must not be all digits:
/// the resolver would read `1.2.3` as the IPv4 address 1.2.0.3.
fn is_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > MAX_HOST {
        return false;
    }
    let label_ok = |l: &str| {
        (1..=MAX_LABEL).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.split('.').all(label_ok)
        && name
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

/// Turns a host name into addresses: the system resolver in the apps, a
/// table in tests.
pub trait Resolve: Sync {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = std::io::Result<Vec<SocketAddr>>> + Send;
}

/// The C library's resolver (`/etc/hosts`, then DNS with the pod's search
/// path), on tokio's blocking pool.
pub struct SystemResolver;

impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// Opens a TCP connection to `target` for a call to `service`. A host name
/// is looked up now, for this connection; its addresses are tried in the
/// resolver's order and the first that accepts is used.
pub async fn connect(
    resolver: &impl Resolve,
    target: &Target,
    service: &str,
) -> Result<TcpStream, UpstreamError> {
    let addrs = match target {
        Target::Addr(addr) => vec![*addr],
        Target::Host { host, port } => {
            resolver
                .resolve(host, *port)
                .await
                .map_err(|source| UpstreamError::Resolve {
                    service: service.to_string(),
                    host: host.clone(),
                    source,
                })?
        }
    };
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(source) => {
                last = Some(UpstreamError::Connect {
                    service: service.to_string(),
                    addr,
                    source,
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| UpstreamError::NoAddress {
        service: service.to_string(),
        target: target.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn parse_table() {
        let host = |h: &str, port| {
            Ok(Target::Host {
                host: h.to_string(),
                port,
            })
        };
        let addr = |a: &str| Ok(Target::Addr(a.parse().unwrap()));
        let cases: &[(&str, Result<Target, TargetError>)] = &[
            ("127.0.0.1:8080", addr("127.0.0.1:8080")),
            ("[::1]:9090", addr("[::1]:9090")),
            ("catalog:80", host("catalog", 80)),
            ("reviews:9090", host("reviews", 9090)),
            (
                "catalog.shop.svc.cluster.local:80",
                host("catalog.shop.svc.cluster.local", 80),
            ),
            (
                "catalog.shop.svc.cluster.local.:80",
                host("catalog.shop.svc.cluster.local.", 80),
            ),
            ("localhost:1", host("localhost", 1)),
            ("catalog", Err(TargetError::NoPort)),
            ("catalog:", Err(TargetError::Port(String::new()))),
            ("catalog:0", Err(TargetError::Port("0".into()))),
            ("catalog:65536", Err(TargetError::Port("65536".into()))),
            ("catalog:http", Err(TargetError::Port("http".into()))),
            (":80", Err(TargetError::Host(String::new()))),
            ("-catalog:80", Err(TargetError::Host("-catalog".into()))),
            ("cat_alog:80", Err(TargetError::Host("cat_alog".into()))),
            ("a..b:80", Err(TargetError::Host("a..b".into()))),
            ("::1:80", Err(TargetError::Host("::1".into()))),
            ("1.2.3:80", Err(TargetError::Host("1.2.3".into()))),
            ("999.0.0.1:80", Err(TargetError::Host("999.0.0.1".into()))),
            ("cat alog:80", Err(TargetError::Host("cat alog".into()))),
        ];
        for (input, want) in cases {
            assert_eq!(&Target::parse(input), want, "{input:?}");
        }
        let long = format!("{}:80", "a".repeat(MAX_LABEL + 1));
        assert!(matches!(Target::parse(&long), Err(TargetError::Host(_))));
        let label = "a".repeat(MAX_LABEL);
        let longest = [label.as_str(); 4].join(".");
        assert!(matches!(
            Target::parse(&format!("{longest}:80")),
            Err(TargetError::Host(_))
        ));
    }

    #[test]
    fn display_reads_back() {
        for text in ["127.0.0.1:8080", "[::1]:9090", "catalog:80", "a.b.c.:1"] {
            let t = Target::parse(text).unwrap();
            assert_eq!(t.to_string(), text);
            assert_eq!(Target::parse(&t.to_string()), Ok(t));
        }
    }

    /// Answers from a table, and counts the lookups.
    #[derive(Default)]
    struct Table {
        answers: Mutex<BTreeMap<String, std::io::Result<Vec<SocketAddr>>>>,
        lookups: Mutex<Vec<String>>,
    }

    impl Table {
        fn set(&self, host: &str, answer: std::io::Result<Vec<SocketAddr>>) {
            self.answers
                .lock()
                .unwrap()
                .insert(host.to_string(), answer);
        }
    }

    impl Resolve for Table {
        async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            self.lookups.lock().unwrap().push(format!("{host}:{port}"));
            match self.answers.lock().unwrap().get(host) {
                Some(Ok(addrs)) => Ok(addrs.clone()),
                Some(Err(e)) => Err(std::io::Error::new(e.kind(), e.to_string())),
                None => Err(std::io::Error::other("no such host")),
            }
        }
    }

    /// A loopback port nothing listens on (bound, then closed).
    async fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    fn host(h: &str, port: u16) -> Target {
        Target::Host {
            host: h.to_string(),
            port,
        }
    }

    #[tokio::test]
    async fn every_connection_looks_the_name_up_again() {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let table = Table::default();
        table.set("catalog", Ok(vec![a.local_addr().unwrap()]));
        let target = host("catalog", 80);
        let s = connect(&table, &target, "catalog").await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), a.local_addr().unwrap());
        // The Service moved (deleted and created again: a new ClusterIP).
        table.set("catalog", Ok(vec![b.local_addr().unwrap()]));
        let s = connect(&table, &target, "catalog").await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), b.local_addr().unwrap());
        assert_eq!(*table.lookups.lock().unwrap(), ["catalog:80", "catalog:80"]);
    }

    #[tokio::test]
    async fn addresses_are_tried_in_order_until_one_accepts() {
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = closed_port().await;
        let table = Table::default();
        table.set("reviews", Ok(vec![dead, live.local_addr().unwrap()]));
        let s = connect(&table, &host("reviews", 9090), "reviews")
            .await
            .unwrap();
        assert_eq!(s.peer_addr().unwrap(), live.local_addr().unwrap());
    }

    #[tokio::test]
    async fn failures_are_typed_and_name_the_service() {
        let dead = closed_port().await;
        let table = Table::default();
        table.set("empty", Ok(vec![]));
        table.set("down", Ok(vec![dead]));
        let cases = [
            (host("nowhere", 80), "Resolve"),
            (host("empty", 80), "NoAddress"),
            (host("down", 80), "Connect"),
            (Target::Addr(dead), "Connect"),
        ];
        for (target, want) in cases {
            let err = connect(&table, &target, "ratings").await.unwrap_err();
            let kind = match &err {
                UpstreamError::Resolve { .. } => "Resolve",
                UpstreamError::NoAddress { .. } => "NoAddress",
                UpstreamError::Connect { addr, .. } => {
                    assert_eq!(*addr, dead);
                    "Connect"
                }
                other => panic!("{target}: unexpected {other:?}"),
            };
            assert_eq!(kind, want, "{target}: {err}");
            assert!(err.to_string().contains("ratings"), "{err}");
        }
        // A literal address needs no lookup.
        assert!(!table
            .lookups
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("127.0.0.1")));
    }

    #[tokio::test]
    async fn the_system_resolver_reads_localhost() {
        // /etc/hosts, no DNS server needed.
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = live.local_addr().unwrap().port();
        let s = connect(&SystemResolver, &host("localhost", port), "catalog")
            .await
            .unwrap();
        assert_eq!(s.peer_addr().unwrap().port(), port);
    }
}
