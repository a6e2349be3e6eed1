//! Where an outbound request goes: from the authority an app used to a
//! service, one of its ports and its endpoints. Pure, so every rule is in
//! the table test below.

use std::sync::Arc;

use crate::core::directory::routes::ServiceRoutes;
use crate::core::directory::{
    Endpoint, PolicyRules, Service, ServicePort, ServiceState, TrafficPolicy,
};
use crate::metrics::ErrorKind;

/// The parsed authority of a request, before discovery is consulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The host as the app wrote it (no port), used in error messages.
    pub host: String,
    /// `<name>.<namespace>`.
    pub service_key: String,
    /// The port the app named, if it named one.
    pub port: Option<u16>,
}

/// A resolved destination: everything needed to pick an endpoint and send.
#[derive(Clone, Debug)]
pub struct Plan {
    pub service: Arc<Service>,
    pub port: ServicePort,
    pub endpoints: Arc<[Endpoint]>,
    /// The service's traffic policy; [`Plan::rules`] picks the port's.
    pub policy: Arc<TrafficPolicy>,
    /// Routes whose parent is the service (GAMMA).
    pub routes: Arc<ServiceRoutes>,
}

impl Plan {
    /// True when the chosen port's requests are routed rather than sent to
    /// the service's own endpoints.
    pub fn routed(&self) -> bool {
        self.routes.routes_port(self.port.port)
    }
}

impl Plan {
    /// The policy rules for the chosen port.
    pub fn rules(&self) -> &PolicyRules {
        self.policy.for_port(self.port.port)
    }
}

/// Why a request cannot be routed. The message is the response body the
/// app gets, so it names what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("bad authority {0:?}: expected <host> or <host>:<port>")]
    BadAuthority(String),
    #[error("bad host {0:?}: a mesh host is <service>[.<namespace>[.svc[.<cluster domain>]]], each part a DNS label (lowercase letters, digits and '-', at most 63 characters)")]
    BadHost(String),
    #[error("this proxy already follows {0} services, its limit; the request was not routed")]
    SubscriptionLimit(usize),
    #[error("unknown service: {0}")]
    UnknownService(String),
    #[error("no answer from control plane for {0}")]
    NoAnswer(String),
    #[error("port {port} is not a port of service {service}")]
    NoSuchPort { port: u16, service: String },
    #[error("service {service} has several ports ({ports}) and none is named http or is 80; name the port in the request")]
    AmbiguousPort { service: String, ports: String },
    #[error("service {0} declares no ports")]
    NoPorts(String),
    #[error("no ready endpoints for {0}")]
    NoReadyEndpoints(String),
}

impl PlanError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PlanError::BadAuthority(_) => ErrorKind::BadRequest,
            PlanError::BadHost(_) => ErrorKind::BadHost,
            PlanError::SubscriptionLimit(_) => ErrorKind::SubscriptionLimit,
            PlanError::UnknownService(_) => ErrorKind::UnknownService,
            PlanError::NoAnswer(_) => ErrorKind::NoAnswer,
            PlanError::NoSuchPort { .. }
            | PlanError::AmbiguousPort { .. }
            | PlanError::NoPorts(_) => ErrorKind::BadPort,
            PlanError::NoReadyEndpoints(_) => ErrorKind::NoEndpoints,
        }
    }

    /// True when the error concerns a service discovery knows (so its key
    /// may be a metric label).
    pub fn service_is_known(&self) -> bool {
        matches!(
            self,
            PlanError::NoSuchPort { .. }
                | PlanError::AmbiguousPort { .. }
                | PlanError::NoPorts(_)
                | PlanError::NoReadyEndpoints(_)
        )
    }

    /// HTTP status for the app: its own mistake is 400, the mesh's 503.
    pub fn status(&self) -> http::StatusCode {
        match self {
            PlanError::BadAuthority(_) | PlanError::BadHost(_) => http::StatusCode::BAD_REQUEST,
            _ => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Splits `authority` (`host`, `host:port`, `[v6]:port`) and maps the host
/// to a service key.
pub fn destination(
    authority: &str,
    namespace: &str,
    cluster_domain: &str,
) -> Result<Destination, PlanError> {
    let bad = || PlanError::BadAuthority(authority.to_string());
    let parsed: http::uri::Authority = authority.parse().map_err(|_| bad())?;
    if parsed.as_str().contains('@') {
        return Err(bad());
    }
    let host = parsed.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    // `Authority::port` is None both for "no port" and "not a number"; only
    // the first is acceptable.
    let names_port = parsed
        .as_str()
        .rsplit_once(':')
        .is_some_and(|(_, tail)| !tail.contains(']'));
    let port = match parsed.port() {
        Some(p) => Some(p.as_u16()),
        None if names_port => return Err(bad()),
        None => None,
    };
    let service_key = match mycel_api::names::service_from_host(host, namespace, cluster_domain) {
        Some(key) => key.into_string(),
        None if is_dns_name(host) => return Err(PlanError::UnknownService(host.to_string())),
        // Never subscribed to: the controller would refuse the key, and a
        // key it refuses must not reach it from an app's Host header.
        None => return Err(PlanError::BadHost(host.to_string())),
    };
    Ok(Destination {
        host: host.to_string(),
        service_key,
        port,
    })
}

/// An IP address or a well-formed DNS name: a host that may be outside the
/// mesh, as opposed to one that breaks the name rules (`.shop`, `a_b`).
fn is_dns_name(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    mycel_api::names::validate(mycel_api::names::NameKind::TrustDomain, &lower).is_ok()
}

/// Picks the service port: the one named, else the only one, else the one
/// named `http`, else port 80.
pub fn choose_port(service: &Service, requested: Option<u16>) -> Result<&ServicePort, PlanError> {
    // The key is built only for an error: this runs on every request.
    if let Some(port) = requested {
        return service
            .ports
            .iter()
            .find(|p| p.port == port)
            .ok_or_else(|| PlanError::NoSuchPort {
                port,
                service: service.key(),
            });
    }
    match service.ports.as_slice() {
        [] => Err(PlanError::NoPorts(service.key())),
        [only] => Ok(only),
        ports => ports
            .iter()
            .find(|p| p.name == "http")
            .or_else(|| ports.iter().find(|p| p.port == 80))
            .ok_or_else(|| PlanError::AmbiguousPort {
                service: service.key(),
                ports: ports
                    .iter()
                    .map(|p| p.port.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
    }
}

/// Combines the destination with what discovery knows of its service.
pub fn plan(dest: &Destination, state: &ServiceState) -> Result<Plan, PlanError> {
    match state {
        ServiceState::Pending => Err(PlanError::NoAnswer(dest.service_key.clone())),
        ServiceState::NotFound => Err(PlanError::UnknownService(dest.host.clone())),
        ServiceState::Known {
            service,
            endpoints,
            policy,
            routes,
        } => {
            let port = choose_port(service, dest.port)?.clone();
            // A routed port's requests go to the routes' backends: the
            // parent itself may have no endpoints at all.
            if !routes.routes_port(port.port) && !endpoints.iter().any(|e| e.ready) {
                return Err(PlanError::NoReadyEndpoints(service.key()));
            }
            Ok(Plan {
                service: service.clone(),
                port,
                endpoints: endpoints.clone(),
                policy: policy.clone(),
                routes: routes.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::directory::Protocol;

    fn port(name: &str, port: u16, target: u16) -> ServicePort {
        ServicePort {
            name: name.into(),
            port,
            target_port: target,
            protocol: Protocol::Http,
        }
    }

    fn endpoint(ready: bool) -> Endpoint {
        Endpoint {
            mesh_addr: "127.0.0.1:15006".parse().unwrap(),
            identity: "spiffe://cluster.local/ns/shop/sa/catalog".parse().unwrap(),
            workload: "catalog-1".into(),
            zone: String::new(),
            weight: 1,
            ready,
        }
    }

    fn known(ports: Vec<ServicePort>, ready: &[bool]) -> ServiceState {
        ServiceState::Known {
            policy: Default::default(),
            routes: Default::default(),
            service: Arc::new(Service {
                name: "catalog".into(),
                namespace: "shop".into(),
                ports,
                vips: vec![],
            }),
            endpoints: ready.iter().map(|r| endpoint(*r)).collect(),
        }
    }

    /// (authority, service state, expected target port or error)
    #[test]
    fn plans() {
        let one = || known(vec![port("web", 8080, 9000)], &[true]);
        let several = || {
            known(
                vec![
                    port("grpc", 9090, 9091),
                    port("http", 8080, 8081),
                    port("x", 80, 81),
                ],
                &[true],
            )
        };
        let with_80 = || known(vec![port("a", 7000, 7001), port("b", 80, 8000)], &[true]);
        let ambiguous = || known(vec![port("a", 7000, 7001), port("b", 7100, 7101)], &[true]);
        let cases: Vec<(&str, ServiceState, Result<u16, PlanError>)> = vec![
            ("catalog", one(), Ok(9000)),
            ("catalog:8080", one(), Ok(9000)),
            ("catalog.shop", one(), Ok(9000)),
            ("catalog.shop.svc", one(), Ok(9000)),
            ("catalog.shop.svc.cluster.local:8080", one(), Ok(9000)),
            ("CATALOG.shop", one(), Ok(9000)),
            ("catalog", several(), Ok(8081)),
            ("catalog:9090", several(), Ok(9091)),
            ("catalog:80", several(), Ok(81)),
            ("catalog", with_80(), Ok(8000)),
            ("catalog:7000", with_80(), Ok(7001)),
            (
                "catalog",
                ambiguous(),
                Err(PlanError::AmbiguousPort {
                    service: "catalog.shop".into(),
                    ports: "7000, 7100".into(),
                }),
            ),
            (
                "catalog:81",
                one(),
                Err(PlanError::NoSuchPort {
                    port: 81,
                    service: "catalog.shop".into(),
                }),
            ),
            (
                "catalog",
                known(vec![], &[true]),
                Err(PlanError::NoPorts("catalog.shop".into())),
            ),
            (
                "catalog",
                known(vec![port("web", 8080, 9000)], &[false, false]),
                Err(PlanError::NoReadyEndpoints("catalog.shop".into())),
            ),
            (
                "catalog",
                known(vec![port("web", 8080, 9000)], &[]),
                Err(PlanError::NoReadyEndpoints("catalog.shop".into())),
            ),
            (
                "catalog",
                known(vec![port("web", 8080, 9000)], &[false, true]),
                Ok(9000),
            ),
            (
                "catalog",
                ServiceState::NotFound,
                Err(PlanError::UnknownService("catalog".into())),
            ),
            (
                "catalog",
                ServiceState::Pending,
                Err(PlanError::NoAnswer("catalog.shop".into())),
            ),
            (
                "example.com.evil",
                one(),
                Err(PlanError::UnknownService("example.com.evil".into())),
            ),
            (
                "10.0.0.1:80",
                one(),
                Err(PlanError::UnknownService("10.0.0.1".into())),
            ),
            (
                "[::1]:80",
                one(),
                Err(PlanError::UnknownService("::1".into())),
            ),
            (
                "catalog:notaport",
                one(),
                Err(PlanError::BadAuthority("catalog:notaport".into())),
            ),
            (
                "user@catalog",
                one(),
                Err(PlanError::BadAuthority("user@catalog".into())),
            ),
            ("", one(), Err(PlanError::BadAuthority(String::new()))),
            // The attack of a bad Host header: refused before any subscription.
            (".shop", one(), Err(PlanError::BadHost(".shop".into()))),
            (
                "-x.shop:80",
                one(),
                Err(PlanError::BadHost("-x.shop".into())),
            ),
            ("a_b", one(), Err(PlanError::BadHost("a_b".into()))),
            ("a..shop", one(), Err(PlanError::BadHost("a..shop".into()))),
        ];
        for (authority, state, want) in cases {
            let got = destination(authority, "shop", "cluster.local")
                .and_then(|d| plan(&d, &state))
                .map(|p| p.port.target_port);
            assert_eq!(got, want, "{authority}");
        }
    }

    #[test]
    fn destination_keeps_host_and_port() {
        let d = destination("reviews.other:9090", "shop", "cluster.local").unwrap();
        assert_eq!(
            d,
            Destination {
                host: "reviews.other".into(),
                service_key: "reviews.other".into(),
                port: Some(9090),
            }
        );
    }

    #[test]
    fn messages_name_the_problem() {
        assert_eq!(
            PlanError::UnknownService("nope".into()).to_string(),
            "unknown service: nope"
        );
        assert_eq!(
            PlanError::NoReadyEndpoints("catalog.shop".into()).to_string(),
            "no ready endpoints for catalog.shop"
        );
        assert_eq!(
            PlanError::NoAnswer("catalog.shop".into()).to_string(),
            "no answer from control plane for catalog.shop"
        );
    }
}
