//! The app's ports as the proxy's `--app-port NAME:PORT:PROTO` flags, from
//! the containers' declared ports. A container port has no `appProtocol`
//! field, so the protocol comes from the port name's prefix (`grpc-`,
//! `http2-`, `tcp-`, `http-`), as Kubernetes users name Service ports;
//! otherwise HTTP, the proxy's default.

use k8s_openapi::api::core::v1::Container;
use mycel_api::names::{self, NameKind};
use mycel_api::protocol::Protocol;
use mycel_api::validate::limits::MAX_PORTS;

use crate::config::ProxyPorts;
use crate::InjectError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

impl AppPort {
    pub fn flag(&self) -> String {
        format!("{}:{}:{}", self.name, self.port, self.protocol)
    }
}

/// TCP ports of the app containers, in order, each once; a port the proxy
/// itself listens on is an error (the pod could not run both).
pub fn app_ports(
    containers: &[Container],
    proxy: &ProxyPorts,
) -> Result<Vec<AppPort>, InjectError> {
    let mut out: Vec<AppPort> = Vec::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            let field = format!("spec.containers[{ci}].ports[{pi}]");
            if p.protocol.as_deref().is_some_and(|proto| proto != "TCP") {
                continue;
            }
            let port = u16::try_from(p.container_port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    InjectError::field(
                        format!("{field}.containerPort"),
                        format!("{} is not a port number (1-65535)", p.container_port),
                    )
                })?;
            if proxy.all().contains(&port) {
                return Err(InjectError::field(
                    format!("{field}.containerPort"),
                    format!(
                        "port {port} is used by the mesh proxy (its ports: {:?})",
                        proxy.all()
                    ),
                ));
            }
            if out.iter().any(|o| o.port == port) {
                continue;
            }
            let declared = p.name.as_deref().filter(|n| !n.is_empty());
            let name = match declared {
                // The proxy takes port names by the DNS label rule, which
                // Kubernetes port names (IANA service names) also follow.
                Some(n) if names::validate(NameKind::Service, n).is_ok() => n.to_string(),
                Some(n) => {
                    return Err(InjectError::field(
                        format!("{field}.name"),
                        format!("{n:?} is not a valid port name"),
                    ))
                }
                None => format!("port-{port}"),
            };
            let name = if out.iter().any(|o| o.name == name) {
                format!("{name}-{port}")
            } else {
                name
            };
            let protocol = declared
                .and_then(Protocol::from_port_name)
                .unwrap_or_default();
            out.push(AppPort {
                name,
                port,
                protocol,
            });
        }
    }
    if out.len() > MAX_PORTS {
        return Err(InjectError::field(
            "spec.containers[*].ports",
            format!(
                "{} TCP ports, the mesh carries at most {MAX_PORTS}",
                out.len()
            ),
        ));
    }
    Ok(out)
}
