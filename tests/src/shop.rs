//! The demo shop on a loopback mesh: controller, gateway and four services,
//! each app beside its own sidecar on its own loopback address.

use crate::mesh::{Mesh, Sidecar, SidecarSpec, APP_PORT};
use crate::process::Proc;

/// `mesh.yaml` for the shop; `extra` is appended (more documents).
pub fn mesh_yaml(extra: &str) -> String {
    let mut y = String::new();
    for (name, port, proto) in [
        ("frontend", 80, "http"),
        ("catalog", 80, "http"),
        ("reviews", 9090, "grpc"),
        ("ratings", 80, "http"),
    ] {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: {proto}\n    port: {port}\n    targetPort: {APP_PORT}\n    appProtocol: {proto}\n"
        ));
    }
    y.push_str(extra);
    y
}

/// One app and its sidecar.
pub struct Workload {
    pub app: Proc,
    pub sidecar: Sidecar,
    pub spec: SidecarSpec,
}

/// Starts `mycel-demo <service>` beside a sidecar labelled `app=<service>`.
pub async fn workload(
    mesh: &Mesh,
    name: &str,
    service: &str,
    app_proto: &str,
    extra_app_args: &[&str],
    spec_edit: impl FnOnce(SidecarSpec) -> SidecarSpec,
) -> Workload {
    let spec = spec_edit(
        SidecarSpec::new(name, service)
            .label("app", service)
            .app_port(&format!("{app_proto}:{APP_PORT}:{app_proto}")),
    );
    let sidecar = mesh.sidecar_unready(spec.clone());
    let outbound = sidecar.outbound().to_string();
    let mut args = vec!["--proxy", outbound.as_str()];
    args.extend_from_slice(extra_app_args);
    let app = mesh.app(&format!("{name}-app"), service, spec.app_addr(), &args);
    sidecar.wait_ready().await;
    mesh.wait_registered(name).await;
    Workload { app, sidecar, spec }
}

pub struct Shop {
    pub mesh: Mesh,
    pub gateway: Sidecar,
    pub frontend: Workload,
    pub catalog: Workload,
    pub reviews: Workload,
    pub ratings: Workload,
}

impl Shop {
    pub async fn start() -> Shop {
        Self::start_with(|s| s).await
    }

    /// The shop with `edit` applied to every sidecar's spec (the gateway's
    /// too), e.g. to give them all an environment variable.
    pub async fn start_with(edit: impl Fn(SidecarSpec) -> SidecarSpec) -> Shop {
        Self::start_with_env(edit, &[]).await
    }

    /// As [`Shop::start_with`], the controller with `controller_env` added
    /// to its environment.
    pub async fn start_with_env(
        edit: impl Fn(SidecarSpec) -> SidecarSpec,
        controller_env: &[(&str, &str)],
    ) -> Shop {
        let mesh = Mesh::start_with_env(&mesh_yaml(""), controller_env).await;
        let ratings = workload(&mesh, "ratings", "ratings", "http", &[], &edit).await;
        let reviews = workload(
            &mesh,
            "reviews-v2",
            "reviews",
            "grpc",
            &["--version", "v2"],
            |s| edit(s.label("version", "v2")),
        )
        .await;
        let catalog = workload(&mesh, "catalog", "catalog", "http", &[], &edit).await;
        let frontend = workload(&mesh, "frontend", "frontend", "http", &[], &edit).await;
        let gateway = mesh
            .sidecar(edit(
                SidecarSpec::new("gateway", "gateway").route("/=frontend.shop:80"),
            ))
            .await;
        Shop {
            mesh,
            gateway,
            frontend,
            catalog,
            reviews,
            ratings,
        }
    }
}
