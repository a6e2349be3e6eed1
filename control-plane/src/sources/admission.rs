//! Who may register which endpoint. A proxy's Hello only *claims* labels and
//! an address; the source of truth decides whether the claim stands. In
//! local mode that is the join token the proxy's certificate was issued
//! for (its exact labels, the connection's source IP or the addresses the
//! token allows); in Kubernetes it will be the Pod and EndpointSlice
//! objects. Discovery only sees this trait.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use mycel_api::spiffe::SpiffeId;

use crate::ca::tokens::{AuthError, TokenStore};
use crate::model::Workload;

/// What the controller knows for sure about a stream's peer.
#[derive(Clone, Debug)]
pub struct Peer {
    /// From the verified client certificate.
    pub identity: SpiffeId,
    /// The join token id in that certificate, if it carries one.
    pub token_id: Option<String>,
    /// The connection's source address.
    pub remote_ip: Option<IpAddr>,
}

/// Why a registration was refused; the message names the mismatch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionError {
    #[error("the client certificate carries no join token id (issued by an older controller?): restart the proxy to get a new one")]
    NoToken,
    #[error(transparent)]
    Token(AuthError),
    #[error("join token {token} is for {want}, but the certificate is {got}")]
    Identity {
        token: String,
        want: String,
        got: String,
    },
    #[error(
        "hello.workload.labels {got:?} do not equal the labels of join token {token} {want:?}"
    )]
    Labels {
        token: String,
        want: BTreeMap<String, String>,
        got: BTreeMap<String, String>,
    },
    #[error("hello.workload.address {got} is neither the connection's source address ({source_ip}) nor allowed by join token {token} ({allowed})")]
    Address {
        token: String,
        got: String,
        source_ip: String,
        allowed: String,
    },
}

pub type Admit<'a> = Pin<Box<dyn Future<Output = Result<(), AdmissionError>> + Send + 'a>>;

/// Decides whether `peer` may register `workload`.
pub trait RegistrationPolicy: Send + Sync + 'static {
    fn admit<'a>(&'a self, peer: &'a Peer, workload: &'a Workload) -> Admit<'a>;
}

/// Local mode: the join token record is the truth.
pub struct TokenPolicy {
    tokens: Arc<TokenStore>,
}

impl TokenPolicy {
    pub fn new(tokens: Arc<TokenStore>) -> Self {
        Self { tokens }
    }

    async fn check(&self, peer: &Peer, w: &Workload) -> Result<(), AdmissionError> {
        let token = peer.token_id.as_deref().ok_or(AdmissionError::NoToken)?;
        let rec = self
            .tokens
            .by_id(token)
            .await
            .map_err(AdmissionError::Token)?;
        if rec.namespace != peer.identity.namespace()
            || rec.service_account != peer.identity.service_account()
        {
            return Err(AdmissionError::Identity {
                token: token.to_string(),
                want: format!("{}/{}", rec.namespace, rec.service_account),
                got: peer.identity.to_string(),
            });
        }
        if w.labels != rec.labels {
            return Err(AdmissionError::Labels {
                token: token.to_string(),
                want: rec.labels.clone(),
                got: w.labels.clone(),
            });
        }
        let addr: Option<IpAddr> = w.address.parse().ok().map(|ip: IpAddr| ip.to_canonical());
        let from_source = addr.is_some() && addr == peer.remote_ip.map(|ip| ip.to_canonical());
        let allowed = addr.is_some_and(|ip| rec.addresses.iter().any(|r| r.contains(ip)));
        if !(from_source || allowed) {
            let list: Vec<String> = rec.addresses.iter().map(ToString::to_string).collect();
            return Err(AdmissionError::Address {
                token: token.to_string(),
                got: w.address.clone(),
                source_ip: peer
                    .remote_ip
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                allowed: if list.is_empty() {
                    "none".into()
                } else {
                    list.join(", ")
                },
            });
        }
        Ok(())
    }
}

impl RegistrationPolicy for TokenPolicy {
    fn admit<'a>(&'a self, peer: &'a Peer, workload: &'a Workload) -> Admit<'a> {
        Box::pin(self.check(peer, workload))
    }
}

/// Kubernetes: a Pod's endpoints come from its EndpointSlices and its
/// identity from a TokenReview, and cluster services select no registered
/// workload, so a Pod proxy's Hello only makes it visible in
/// `/debug/proxies`. Proxies that joined with a join token (a VM, a
/// gateway outside the cluster) are still held to their token.
pub struct ClusterPolicy {
    tokens: TokenPolicy,
}

impl ClusterPolicy {
    pub fn new(tokens: Arc<TokenStore>) -> Self {
        Self {
            tokens: TokenPolicy::new(tokens),
        }
    }
}

impl RegistrationPolicy for ClusterPolicy {
    fn admit<'a>(&'a self, peer: &'a Peer, workload: &'a Workload) -> Admit<'a> {
        Box::pin(async move {
            match peer.token_id {
                Some(_) => self.tokens.check(peer, workload).await,
                None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::tokens::{create_token, parse_labels, revoke_token, TokenSpec};

    fn workload(labels: &[&str], address: &str) -> Workload {
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        Workload {
            proxy_id: "p".into(),
            name: "catalog".into(),
            identity: SpiffeId::new("cluster.local", "shop", "catalog").unwrap(),
            labels: parse_labels(&labels).unwrap(),
            address: address.into(),
            mesh_port: 15001,
            ports: vec![],
            ready: true,
            zone: String::new(),
        }
    }

    #[tokio::test]
    async fn admission_table() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TokenSpec {
            namespace: "shop".into(),
            service_account: "catalog".into(),
            labels: parse_labels(&["app=catalog".into()]).unwrap(),
            addresses: vec!["10.1.0.0/16".parse().unwrap()],
            ttl: None,
        };
        let (_, rec) = create_token(dir.path(), &spec).unwrap();
        let (_, other) = create_token(
            dir.path(),
            &TokenSpec {
                namespace: "shop".into(),
                service_account: "reviews".into(),
                ..TokenSpec::default()
            },
        )
        .unwrap();
        let (_, revoked) = create_token(dir.path(), &spec).unwrap();
        revoke_token(dir.path(), revoked.id()).unwrap();
        let policy = TokenPolicy::new(Arc::new(TokenStore::new(dir.path()).unwrap()));
        let peer = |token: Option<&str>| Peer {
            identity: SpiffeId::new("cluster.local", "shop", "catalog").unwrap(),
            token_id: token.map(str::to_string),
            remote_ip: Some("127.0.0.9".parse().unwrap()),
        };
        let id = Some(rec.id());
        let cases: Vec<(Peer, Workload, Result<(), &str>)> = vec![
            (peer(id), workload(&["app=catalog"], "127.0.0.9"), Ok(())),
            (peer(id), workload(&["app=catalog"], "10.1.2.3"), Ok(())),
            (
                peer(id),
                workload(&["app=reviews"], "127.0.0.9"),
                Err("do not equal the labels of join token"),
            ),
            (
                peer(id),
                workload(&["app=catalog", "extra=1"], "127.0.0.9"),
                Err("do not equal"),
            ),
            (peer(id), workload(&[], "127.0.0.9"), Err("do not equal")),
            (
                peer(id),
                workload(&["app=catalog"], "127.0.0.10"),
                Err("hello.workload.address 127.0.0.10 is neither the connection's source address (127.0.0.9) nor allowed by join token"),
            ),
            (peer(None), workload(&["app=catalog"], "127.0.0.9"), Err("carries no join token id")),
            (
                peer(Some(other.id())),
                workload(&[], "127.0.0.9"),
                Err("is for shop/reviews"),
            ),
            (
                peer(Some(revoked.id())),
                workload(&["app=catalog"], "127.0.0.9"),
                Err("was revoked"),
            ),
        ];
        for (peer, w, want) in cases {
            let got = policy.admit(&peer, &w).await.map_err(|e| e.to_string());
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(want)) => assert!(e.contains(want), "want {want:?} in {e:?}"),
                (got, want) => panic!("{:?} {:?}: got {got:?}, want {want:?}", w.labels, w.address),
            }
        }
    }
}
