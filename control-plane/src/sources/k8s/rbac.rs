//! Every call the controller makes to the API server, as RBAC sees it.
//!
//! The helm chart's ClusterRole and Role grant exactly this list, no verb
//! more and none missing: a test renders the chart and compares
//! (`tests/tests/helm/`), and another runs the controller with the chart's
//! ServiceAccount and fails on any RBAC refusal. A new API call starts here,
//! then goes into `helm/mycel/templates/rbac.yaml`.

/// Where a grant applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Every namespace (or a cluster-scoped resource): a ClusterRole.
    Cluster,
    /// The controller's own namespace only (`mycel-system`): a Role.
    ControllerNamespace,
}

/// One RBAC rule: these verbs on one resource, optionally only on the named
/// objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// Plural resource name, as in a Role's `resources`.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// Objects the verbs are limited to; empty means any. RBAC cannot limit
    /// `create` by name (the name is not known when it authorizes), and a
    /// `list` limited by name must carry a `metadata.name` field selector.
    pub resource_names: &'static [&'static str],
    /// What the controller does with it.
    pub why: &'static str,
}

/// The webhook configuration whose `caBundle` the controller patches at
/// start (`--webhook-config`).
pub const WEBHOOK_CONFIG: &str = "mycel-injector";
/// The Secret in the controller's namespace holding the CA root and issuer
/// (`--ca-secret`); the chart substitutes `ca.existingSecret` when set.
pub const CA_SECRET: &str = "mycel-ca";
/// The ConfigMap with the trust bundle in every meshed namespace
/// (`--trust-bundle-configmap`).
pub const TRUST_BUNDLE_CONFIGMAP: &str = "mycel-trust-bundle";

/// What the controller may do, and nothing else.
pub const REQUIRED: &[Permission] = &[
    Permission {
        group: "",
        resource: "services",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "the service index follows every Service (watch.rs)",
    },
    Permission {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "endpoints come from EndpointSlices (watch.rs)",
    },
    Permission {
        group: "",
        resource: "pods",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "meshed Pods (label mycel.io/meshed) give endpoints their identity (watch.rs)",
    },
    Permission {
        group: "mycel.io",
        resource: "trafficpolicies",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "traffic policies of every namespace are followed (watch.rs, policies.rs)",
    },
    Permission {
        group: "mycel.io",
        resource: "authorizationpolicies",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "authorization policies of every namespace are followed (watch.rs, authz.rs)",
    },
    Permission {
        group: "mycel.io",
        resource: "peerauthentications",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "peer authentication policies of every namespace are followed (watch.rs, authz.rs)",
    },
    Permission {
        group: "mycel.io",
        resource: "gatewaypolicies",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "gateway policies of every namespace are followed; routes copy in those their ExtensionRefs name (watch.rs, gateway_policies.rs)",
    },
    Permission {
        group: "gateway.networking.k8s.io",
        resource: "httproutes",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "HTTPRoutes of every namespace are followed for mesh routing (watch.rs, routes.rs)",
    },
    Permission {
        group: "gateway.networking.k8s.io",
        resource: "grpcroutes",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "GRPCRoutes of every namespace are followed for mesh routing (watch.rs, routes.rs)",
    },
    Permission {
        group: "gateway.networking.k8s.io",
        resource: "gateways",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "Gateways of every namespace are read; those of our classes are served (watch.rs, gateways.rs)",
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "the certificates of HTTPS listeners: only Secrets of type kubernetes.io/tls (a field selector), pushed only to the Gateway's own proxies (watch.rs, tls_secrets.rs)",
    },
    Permission {
        group: "gateway.networking.k8s.io",
        resource: "gatewayclasses",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "GatewayClasses say which Gateways are ours (controllerName mycel.io/gateway-controller)",
    },
    Permission {
        group: "gateway.networking.k8s.io",
        resource: "gatewayclasses",
        verbs: &["get", "create", "patch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "the controller creates its --gateway-class when it is missing and corrects the owner of one it created (gateway_class.rs); RBAC cannot limit create by name",
    },
    Permission {
        group: "gateway.networking.k8s.io",
        resource: "httproutes/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "the controller's entries of an HTTPRoute's status.parents (routes/write.rs)",
    },
    Permission {
        group: "gateway.networking.k8s.io",
        resource: "grpcroutes/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "the controller's entries of a GRPCRoute's status.parents (routes/write.rs)",
    },
    Permission {
        group: "gateway.networking.k8s.io",
        resource: "gateways/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "conditions and listeners of our Gateways, a merge patch of status only (routes/write.rs)",
    },
    Permission {
        group: "gateway.networking.k8s.io",
        resource: "gatewayclasses/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "the Accepted condition of our GatewayClasses (routes/write.rs)",
    },
    Permission {
        group: "mycel.io",
        resource: "trafficpolicies/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "each policy's Accepted condition, a merge patch of status only (policies/write.rs)",
    },
    Permission {
        group: "mycel.io",
        resource: "authorizationpolicies/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "each authorization policy's Accepted condition, a merge patch of status only (policies/write.rs)",
    },
    Permission {
        group: "mycel.io",
        resource: "peerauthentications/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "each peer authentication policy's Accepted condition, a merge patch of status only (policies/write.rs)",
    },
    Permission {
        group: "mycel.io",
        resource: "gatewaypolicies/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "each gateway policy's Accepted condition, a merge patch of status only (policies/write.rs)",
    },
    Permission {
        group: "",
        resource: "namespaces",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "namespaces labelled for injection (--namespace-label) get the trust bundle",
    },
    Permission {
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        verbs: &["create"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "proxies' service-account tokens are checked by a TokenReview (review.rs)",
    },
    Permission {
        group: "",
        resource: "configmaps",
        verbs: &["create"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "the trust bundle is published into each meshed namespace",
    },
    Permission {
        group: "",
        resource: "configmaps",
        verbs: &["get", "list", "update"],
        scope: Scope::Cluster,
        resource_names: &[TRUST_BUNDLE_CONFIGMAP],
        why: "the trust bundle is kept current; no other ConfigMap is readable",
    },
    Permission {
        group: "admissionregistration.k8s.io",
        resource: "mutatingwebhookconfigurations",
        verbs: &["get", "patch"],
        scope: Scope::Cluster,
        resource_names: &[WEBHOOK_CONFIG],
        why: "the injector webhook's caBundle is patched with the mesh CA at start; its uid makes it the owner of what the controller creates (owner.rs)",
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::Cluster,
        resource_names: &[],
        why: "events about meshed objects (kube-runtime's recorder patches a repeated one)",
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["create"],
        scope: Scope::ControllerNamespace,
        resource_names: &[],
        why: "the CA Secret is created on first start when absent",
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["get", "patch"],
        scope: Scope::ControllerNamespace,
        resource_names: &[CA_SECRET],
        why: "get: the CA root and issuer, read at start and every --ca-secret-poll (a new root there starts a rotation); patch: its owner references and the rotation record (rotation.mycel.io/* annotations, rotation.* data keys), never the CA keys themselves; replicas agree through it by resourceVersion, so no update and no leader election (ca_secret.rs, owner.rs)",
    },
];

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::TokenReview;
    use k8s_openapi::api::core::v1::{Pod, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::Resource;
    use mycel_crds::{GatewayPolicy, TrafficPolicy};

    use super::*;

    fn granted(group: &str, resource: &str, verb: &str) -> bool {
        REQUIRED.iter().any(|p| {
            p.group == group
                && p.resource == resource
                && p.scope == Scope::Cluster
                && p.resource_names.is_empty()
                && p.verbs.contains(&verb)
        })
    }

    fn watchable<K: Resource<DynamicType = ()>>() -> bool {
        let (group, plural) = (K::group(&()), K::plural(&()));
        granted(&group, &plural, "list") && granted(&group, &plural, "watch")
    }

    #[test]
    fn the_kinds_the_code_calls_are_in_the_list() {
        assert!(watchable::<Service>());
        assert!(watchable::<EndpointSlice>());
        assert!(watchable::<Pod>());
        assert!(watchable::<TrafficPolicy>());
        assert!(granted(
            &TrafficPolicy::group(&()),
            &format!("{}/status", TrafficPolicy::plural(&())),
            "patch"
        ));
        assert!(watchable::<GatewayPolicy>());
        assert!(granted(
            &GatewayPolicy::group(&()),
            &format!("{}/status", GatewayPolicy::plural(&())),
            "patch"
        ));
        assert!(granted(
            &TokenReview::group(&()),
            &TokenReview::plural(&()),
            "create"
        ));
    }

    #[test]
    fn every_rule_is_well_formed() {
        const VERBS: &[&str] = &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ];
        for p in REQUIRED {
            assert!(!p.verbs.is_empty(), "{p:?}");
            assert!(p.verbs.iter().all(|v| VERBS.contains(v)), "{p:?}");
            assert!(
                p.resource_names.is_empty() || !p.verbs.contains(&"create"),
                "RBAC cannot limit create by name: {p:?}"
            );
            assert!(!p.why.is_empty());
        }
    }
}
