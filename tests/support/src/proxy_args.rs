//! The one place tests spell `mycel-proxy`'s flags: loopback sidecars and
//! gateways, pods in network namespaces and the binary's own tests all
//! build their command line here, so a renamed flag is changed once.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The flags of one `mycel-proxy` run, in the order they were added.
#[derive(Clone, Debug, Default)]
pub struct ProxyArgs {
    args: Vec<String>,
}

impl ProxyArgs {
    /// The proxy's identity: `--workload`, `--namespace`, `--service-account`.
    pub fn new(workload: &str, namespace: &str, service_account: &str) -> Self {
        Self::default()
            .flag("--workload", workload)
            .flag("--namespace", namespace)
            .flag("--service-account", service_account)
    }

    /// `--name value`.
    pub fn flag(mut self, name: &str, value: impl Display) -> Self {
        self.args.push(name.to_string());
        self.args.push(value.to_string());
        self
    }

    /// `--name value` for each value.
    pub fn flags<V: Display>(self, name: &str, values: impl IntoIterator<Item = V>) -> Self {
        values
            .into_iter()
            .fold(self, |args, value| args.flag(name, value))
    }

    /// Arguments as given, after the others.
    pub fn extra<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Certificates and discovery from the controller at `grpc`, trusting
    /// `ca_root` and joining with the token in `token_file`.
    pub fn controller(self, grpc: SocketAddr, ca_root: &Path, token_file: &Path) -> Self {
        self.flag("--controller", grpc)
            .flag("--ca-root", ca_root.display())
            .flag("--token-file", token_file.display())
    }

    /// The workload's own address (registered with the controller) and
    /// where the sidecar reaches its app.
    pub fn address(self, ip: IpAddr, app_host: &str) -> Self {
        self.flag("--address", ip).flag("--app-host", app_host)
    }

    pub fn admin(self, addr: SocketAddr) -> Self {
        self.flag("--admin", addr)
    }

    /// A sidecar the app calls explicitly: the mesh listener and the
    /// outbound listener the app uses as its proxy.
    pub fn explicit(self, inbound: SocketAddr, outbound: SocketAddr) -> Self {
        self.flag("--inbound", inbound).flag("--outbound", outbound)
    }

    /// An ingress gateway on `listen` with `path=service.ns:port` routes.
    pub fn gateway<S: AsRef<str>>(self, listen: SocketAddr, routes: &[S]) -> Self {
        self.flag("--mode", "gateway")
            .flag("--listen", listen)
            .flags("--route", routes.iter().map(AsRef::as_ref))
    }

    /// A transparent sidecar in a pod: the mesh listener on the pod IP, the
    /// capture listeners the pod's iptables rules redirect to, and what
    /// happens to plaintext that arrives from outside the mesh.
    pub fn transparent(
        self,
        inbound: SocketAddr,
        outbound_capture: SocketAddr,
        inbound_capture: SocketAddr,
        mtls_mode: &str,
    ) -> Self {
        self.flag("--inbound", inbound)
            .flag("--transparent-outbound", outbound_capture)
            .flag("--inbound-capture", inbound_capture)
            .flag("--mtls-mode", mtls_mode)
    }

    /// `--label k=v` for each label.
    pub fn labels(self, labels: &[(String, String)]) -> Self {
        self.flags("--label", labels.iter().map(|(k, v)| format!("{k}={v}")))
    }

    /// `--app-port name:port[:protocol]` for each port.
    pub fn app_ports<S: AsRef<str>>(self, ports: &[S]) -> Self {
        self.flags("--app-port", ports.iter().map(AsRef::as_ref))
    }

    /// `--subscribe svc.ns` for each service.
    pub fn subscribe<S: AsRef<str>>(self, services: &[S]) -> Self {
        self.flags("--subscribe", services.iter().map(AsRef::as_ref))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.args
    }

    pub fn into_vec(self) -> Vec<String> {
        self.args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_come_out_in_the_order_they_were_added() {
        let args = ProxyArgs::new("w", "ns", "sa")
            .labels(&[("app".into(), "w".into())])
            .app_ports(&["http:8080"])
            .extra(["--capture-all-ports"]);
        assert_eq!(
            args.as_slice(),
            [
                "--workload",
                "w",
                "--namespace",
                "ns",
                "--service-account",
                "sa",
                "--label",
                "app=w",
                "--app-port",
                "http:8080",
                "--capture-all-ports"
            ]
        );
    }
}
