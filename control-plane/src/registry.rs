//! What the controller knows about each connected proxy, for
//! `/debug/proxies`. Written by the discovery streams, read by the admin
//! server; kept apart from both so neither depends on the other.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NackRecord {
    pub nonce: String,
    pub error: String,
    /// RFC 3339.
    pub at: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProxyRecord {
    pub proxy_id: String,
    pub workload: String,
    pub namespace: String,
    pub spiffe_id: String,
    pub mode: String,
    pub registered: bool,
    /// The registered workload's last reported readiness; `None` (JSON
    /// `null`) when the proxy registers no workload (a gateway), since there
    /// is nothing to be ready.
    pub ready: Option<bool>,
    /// RFC 3339.
    pub connected_since: String,
    pub subscriptions: Vec<String>,
    /// `"<type>/<name>"` → version the proxy ACKed.
    pub acked: BTreeMap<String, String>,
    pub last_nack: Option<NackRecord>,
    /// Serial (hex) of the leaf the stream was opened with; renewals since
    /// are followed by the rotation's leaf tracker.
    #[serde(default)]
    pub leaf_serial: String,
    /// That leaf's chain, to tell which root it chains to.
    #[serde(skip)]
    pub leaf_chain: Vec<Vec<u8>>,
    /// Where to scrape the proxy's `/metrics` (`ip:port`), from its Hello;
    /// `None` when it has no admin server or declared an unusable one.
    /// Proxy-declared: used for nothing but scraping metrics.
    #[serde(default)]
    pub admin_addr: Option<SocketAddr>,
}

/// Why a proxy's declared admin address is not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminAddrError {
    #[error("Hello.admin.port {0} is not a TCP port (1-65535)")]
    Port(u32),
    #[error("Hello.admin.host {0:?} is not an IP address")]
    Host(String),
    #[error("Hello.admin.host {0} is unspecified and the stream's peer address is unknown")]
    NoPeer(IpAddr),
    #[error("Hello.admin.host {host} is not the address the stream comes from ({peer})")]
    Elsewhere { host: IpAddr, peer: IpAddr },
}

/// The address to scrape a proxy's metrics at, from the host and port it
/// says its admin server is bound to. A proxy bound to every interface
/// (0.0.0.0 or ::, as in a pod) is reached at the address its stream
/// comes from. Any other address must be that one (or loopback, from
/// loopback): a proxy cannot send the controller's scrapes elsewhere.
pub fn admin_scrape_addr(
    host: &str,
    port: u32,
    peer: Option<IpAddr>,
) -> Result<SocketAddr, AdminAddrError> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(AdminAddrError::Port(port))?;
    let ip: IpAddr = host
        .parse()
        .map_err(|_| AdminAddrError::Host(host.chars().take(64).collect()))?;
    let ip = match peer {
        _ if ip.is_unspecified() => peer.ok_or(AdminAddrError::NoPeer(ip))?,
        Some(peer) if ip != peer && !(ip.is_loopback() && peer.is_loopback()) => {
            return Err(AdminAddrError::Elsewhere { host: ip, peer });
        }
        _ => ip,
    };
    Ok(SocketAddr::new(ip, port))
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// Proxy records keyed by stream id.
#[derive(Default)]
pub struct ProxyRegistry {
    inner: Mutex<BTreeMap<u64, ProxyRecord>>,
}

impl ProxyRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ProxyRecord>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, conn: u64, record: ProxyRecord) {
        self.lock().insert(conn, record);
    }

    pub fn update(&self, conn: u64, f: impl FnOnce(&mut ProxyRecord)) {
        if let Some(r) = self.lock().get_mut(&conn) {
            f(r);
        }
    }

    pub fn remove(&self, conn: u64) {
        self.lock().remove(&conn);
    }

    pub fn snapshot(&self) -> Vec<ProxyRecord> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> ProxyRecord {
        ProxyRecord {
            proxy_id: id.into(),
            workload: "w".into(),
            namespace: "ns".into(),
            spiffe_id: "spiffe://cluster.local/ns/ns/sa/w".into(),
            mode: "sidecar".into(),
            registered: true,
            ready: Some(true),
            connected_since: now_rfc3339(),
            subscriptions: vec![],
            acked: BTreeMap::new(),
            last_nack: None,
            leaf_serial: String::new(),
            leaf_chain: Vec::new(),
            admin_addr: None,
        }
    }

    #[test]
    fn admin_addresses() {
        let peer: IpAddr = "10.0.0.7".parse().unwrap();
        let ok = |h: &str, p: u32, peer: Option<IpAddr>| admin_scrape_addr(h, p, peer);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            ok("127.0.0.5", 15020, Some(lo)).unwrap().to_string(),
            "127.0.0.5:15020"
        );
        assert_eq!(
            ok("10.0.0.7", 15020, Some(peer)).unwrap().to_string(),
            "10.0.0.7:15020"
        );
        assert_eq!(
            ok("127.0.0.1", 15020, Some(peer)),
            Err(AdminAddrError::Elsewhere { host: lo, peer })
        );
        assert!(ok("10.0.0.8", 15020, Some(peer)).is_err());
        assert_eq!(
            ok("0.0.0.0", 15020, Some(peer)).unwrap().to_string(),
            "10.0.0.7:15020"
        );
        assert_eq!(
            ok("::", 15020, Some(peer)).unwrap().to_string(),
            "10.0.0.7:15020"
        );
        assert_eq!(ok("::1", 9, None).unwrap().to_string(), "[::1]:9");
        assert_eq!(ok("127.0.0.1", 0, None), Err(AdminAddrError::Port(0)));
        assert_eq!(
            ok("127.0.0.1", 70000, None),
            Err(AdminAddrError::Port(70000))
        );
        assert_eq!(
            ok("example", 1, None),
            Err(AdminAddrError::Host("example".into()))
        );
        let e = ok("0.0.0.0", 1, None).unwrap_err();
        assert!(e.to_string().contains("Hello.admin.host"), "{e}");
    }

    #[test]
    fn insert_update_remove() {
        let r = ProxyRegistry::default();
        r.insert(1, record("a"));
        r.insert(2, record("b"));
        r.update(1, |p| {
            p.acked.insert("service/a.b".into(), "v1".into());
        });
        r.update(9, |_| panic!("unknown streams are ignored"));
        let snap = r.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].acked["service/a.b"], "v1");
        r.remove(1);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn serializes_as_documented() {
        let mut rec = record("a");
        rec.connected_since = "2024-01-01T00:00:00Z".into();
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["last_nack"], serde_json::Value::Null);
        assert_eq!(v["connected_since"], "2024-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(OffsetDateTime::from_unix_timestamp(0).unwrap()),
            "1970-01-01T00:00:00Z"
        );
    }
}
