//! What a captured connection's original destination is in mesh terms.
//! Pure, so the rules are the table test below.

use std::net::SocketAddr;

use crate::core::directory::{Endpoint, Protocol, ServicePort, ServiceState, Snapshot};

/// The mesh meaning of an original destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A service address (VIP) and one of its ports: routed and balanced
    /// as in explicit mode.
    Service {
        key: String,
        port: u16,
        protocol: Protocol,
    },
    /// A meshed endpoint's own address and one of its app ports: that
    /// endpoint, over mTLS.
    Endpoint {
        endpoint: Endpoint,
        /// The service port whose target port was dialed.
        port: ServicePort,
        /// The service that port belongs to, for metrics.
        service: String,
    },
    /// Not part of the mesh (or not known to this proxy).
    Unknown,
}

pub fn classify(snapshot: &Snapshot, dst: SocketAddr) -> Target {
    if let Some(service) = snapshot.service_by_vip(dst.ip()) {
        return match service.ports.iter().find(|p| p.port == dst.port()) {
            Some(p) => Target::Service {
                key: service.key(),
                port: p.port,
                protocol: p.protocol,
            },
            // A VIP answers only on its declared ports, as with kube-proxy.
            None => Target::Unknown,
        };
    }
    for state in snapshot.services.values() {
        let ServiceState::Known {
            service, endpoints, ..
        } = state
        else {
            continue;
        };
        let Some(port) = service.ports.iter().find(|p| p.target_port == dst.port()) else {
            continue;
        };
        if let Some(e) = endpoints.iter().find(|e| e.mesh_addr.ip() == dst.ip()) {
            return Target::Endpoint {
                endpoint: e.clone(),
                port: port.clone(),
                service: service.key(),
            };
        }
    }
    Target::Unknown
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::directory::Service;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        let endpoint = Endpoint {
            mesh_addr: "198.18.0.3:15006".parse().unwrap(),
            identity: "spiffe://cluster.local/ns/shop/sa/ratings".parse().unwrap(),
            workload: "ratings-1".into(),
            zone: String::new(),
            weight: 1,
            ready: true,
        };
        s.services.insert(
            "ratings.shop".into(),
            ServiceState::Known {
                routes: Default::default(),
                policy: Default::default(),
                service: Arc::new(Service {
                    name: "ratings".into(),
                    namespace: "shop".into(),
                    ports: vec![
                        ServicePort {
                            name: "http".into(),
                            port: 80,
                            target_port: 8080,
                            protocol: Protocol::Http,
                        },
                        ServicePort {
                            name: "redis".into(),
                            port: 6379,
                            target_port: 6379,
                            protocol: Protocol::Tcp,
                        },
                    ],
                    vips: vec!["198.19.0.10".parse().unwrap()],
                }),
                endpoints: Arc::from(vec![endpoint]),
            },
        );
        s.services
            .insert("gone.shop".into(), ServiceState::NotFound);
        s
    }

    #[test]
    fn targets() {
        let snap = snapshot();
        let cases: Vec<(&str, &str)> = vec![
            ("198.19.0.10:80", "service ratings.shop:80 Http"),
            ("198.19.0.10:6379", "service ratings.shop:6379 Tcp"),
            ("198.19.0.10:81", "unknown"),
            ("198.18.0.3:8080", "endpoint ratings-1:8080 Http"),
            ("198.18.0.3:6379", "endpoint ratings-1:6379 Tcp"),
            ("198.18.0.3:22", "unknown"),
            // The mesh port itself is not an app port.
            ("198.18.0.3:15006", "unknown"),
            ("198.18.0.4:8080", "unknown"),
            ("93.184.216.34:443", "unknown"),
        ];
        for (dst, want) in cases {
            let got = match classify(&snap, dst.parse().unwrap()) {
                Target::Service {
                    key,
                    port,
                    protocol,
                } => format!("service {key}:{port} {protocol:?}"),
                Target::Endpoint { endpoint, port, .. } => format!(
                    "endpoint {}:{} {:?}",
                    endpoint.workload, port.target_port, port.protocol
                ),
                Target::Unknown => "unknown".into(),
            };
            assert_eq!(got, want, "{dst}");
        }
    }
}
