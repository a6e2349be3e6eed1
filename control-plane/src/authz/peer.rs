//! `PeerAuthentication` objects as the controller holds them, and the
//! resolution of the ones selecting a workload into the one
//! [`PeerAuthentication`] its sidecar applies: per port, the most specific
//! object that says something about the port decides (a selecting one,
//! then the namespace's, then the mesh's in the root namespace); where none
//! does, the sidecar's own `--mtls-mode` applies.

use std::collections::{BTreeMap, BTreeSet};

use mycel_api::authz::{
    InvalidPolicy, ModeFrom, MtlsMode, PeerAuthentication, PortMode, MAX_PORT_MODES,
};
use mycel_crds::peer_authentication as crd;

/// One `PeerAuthentication` and what it selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAuthPolicy {
    pub namespace: String,
    /// `<namespace>/<name>`.
    pub name: String,
    /// Every label must match; None: the namespace (or mesh) level.
    pub match_labels: Option<BTreeMap<String, String>>,
    /// None: inherited.
    pub mode: Option<MtlsMode>,
    pub ports: BTreeMap<u16, MtlsMode>,
}

fn mode(m: crd::Mode) -> Option<MtlsMode> {
    match m {
        crd::Mode::Unset => None,
        crd::Mode::Strict => Some(MtlsMode::Strict),
        crd::Mode::Permissive => Some(MtlsMode::Permissive),
        crd::Mode::Disable => Some(MtlsMode::Disable),
    }
}

/// Converts and checks one object; errors name the field under `spec`.
pub fn from_spec(
    namespace: &str,
    name: &str,
    spec: &crd::PeerAuthenticationSpec,
) -> Result<PeerAuthPolicy, InvalidPolicy> {
    if spec.port_level_mtls.len() > MAX_PORT_MODES {
        return Err(InvalidPolicy {
            field: "spec.portLevelMtls".into(),
            problem: format!(
                "{} ports; at most {MAX_PORT_MODES}",
                spec.port_level_mtls.len()
            ),
        });
    }
    let mut ports = BTreeMap::new();
    for (key, m) in &spec.port_level_mtls {
        let field = format!("spec.portLevelMtls[{key:?}]");
        let port = key
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0 && !key.starts_with('0'))
            .ok_or_else(|| InvalidPolicy {
                field: field.clone(),
                problem: format!("{key:?} is not a port number (1 to 65535)"),
            })?;
        // UNSET on a port would say nothing; refuse it rather than guess
        // whether the user meant the workload's mode.
        let m = mode(m.mode).ok_or_else(|| InvalidPolicy {
            field: format!("{field}.mode"),
            problem: "a port entry needs STRICT, PERMISSIVE or DISABLE".into(),
        })?;
        ports.insert(port, m);
    }
    Ok(PeerAuthPolicy {
        namespace: namespace.to_string(),
        name: format!("{namespace}/{name}"),
        match_labels: spec.selector.as_ref().map(|s| s.match_labels.clone()),
        mode: spec.mtls.and_then(|m| mode(m.mode)),
        ports,
    })
}

/// The peer authentication of one workload. `policies` are sorted by name;
/// where two objects of one level select the workload, the first by name
/// decides.
pub fn resolve(
    policies: &[PeerAuthPolicy],
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> PeerAuthentication {
    let workload = policies.iter().find(|p| {
        p.namespace == namespace
            && p.match_labels
                .as_ref()
                .is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
    });
    let ns = policies
        .iter()
        .find(|p| p.namespace == namespace && p.match_labels.is_none());
    let mesh = policies
        .iter()
        .find(|p| p.namespace == root_namespace && p.match_labels.is_none());
    let levels: Vec<&PeerAuthPolicy> = [workload, ns, mesh].into_iter().flatten().collect();

    let default = levels.iter().find_map(|p| {
        p.mode.map(|mode| ModeFrom {
            mode,
            policy: p.name.clone(),
        })
    });
    let named: BTreeSet<u16> = levels
        .iter()
        .flat_map(|p| p.ports.keys().copied())
        .collect();
    let mut ports = Vec::new();
    for port in named {
        let decided = levels.iter().find_map(|p| match p.ports.get(&port) {
            Some(m) => Some((*m, &p.name)),
            None => p.mode.map(|m| (m, &p.name)),
        });
        let Some((mode, policy)) = decided else {
            continue;
        };
        let same_as_default = default
            .as_ref()
            .is_some_and(|d| d.mode == mode && d.policy == *policy);
        if !same_as_default {
            ports.push(PortMode {
                port,
                mode,
                policy: policy.clone(),
            });
        }
    }
    PeerAuthentication {
        mode: default,
        ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ns: &str, name: &str, yaml: &str) -> PeerAuthPolicy {
        from_spec(ns, name, &serde_saphyr::from_str(yaml).unwrap()).unwrap()
    }

    fn labels(app: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_string(), app.to_string())])
    }

    type Summary = (Option<(MtlsMode, String)>, Vec<(u16, MtlsMode, String)>);

    fn summary(p: &PeerAuthentication) -> Summary {
        (
            p.mode.as_ref().map(|m| (m.mode, m.policy.clone())),
            p.ports
                .iter()
                .map(|m| (m.port, m.mode, m.policy.clone()))
                .collect(),
        )
    }

    #[test]
    fn the_most_specific_level_that_names_a_port_decides_it() {
        use MtlsMode::{Disable, Permissive, Strict};
        let mut all = vec![
            policy("mycel-system", "mesh", "mtls: {mode: STRICT}"),
            policy(
                "shop",
                "shop",
                "mtls: {mode: PERMISSIVE}\nportLevelMtls: {\"9090\": {mode: DISABLE}}",
            ),
            policy(
                "shop",
                "db",
                "selector: {matchLabels: {app: db}}\nmtls: {mode: UNSET}\nportLevelMtls: {\"5432\": {mode: STRICT}}",
            ),
        ];
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let r = |ns: &str, app: &str| summary(&resolve(&all, "mycel-system", ns, &labels(app)));

        // db: no mode of its own, so the namespace's; its port is STRICT,
        // and the namespace's port 9090 still applies.
        assert_eq!(
            r("shop", "db"),
            (
                Some((Permissive, "shop/shop".into())),
                vec![
                    (5432, Strict, "shop/db".into()),
                    (9090, Disable, "shop/shop".into())
                ]
            )
        );
        // Another shop workload: the namespace's mode and port.
        assert_eq!(
            r("shop", "web"),
            (
                Some((Permissive, "shop/shop".into())),
                vec![(9090, Disable, "shop/shop".into())]
            )
        );
        // Another namespace: the mesh's.
        assert_eq!(
            r("other", "web"),
            (Some((Strict, "mycel-system/mesh".into())), vec![])
        );
        // No mesh-wide object: nothing is set; the sidecar's flag applies.
        let without_mesh: Vec<PeerAuthPolicy> = all
            .iter()
            .filter(|p| p.namespace != "mycel-system")
            .cloned()
            .collect();
        let none = resolve(&without_mesh, "mycel-system", "other", &labels("web"));
        assert_eq!(none.mode_for(8080, Permissive).mode, Permissive);
        assert_eq!(none.mode_for(8080, Permissive).policy, None);
    }

    #[test]
    fn a_port_entry_more_specific_than_a_mode_wins_and_a_less_specific_one_does_not() {
        use MtlsMode::{Permissive, Strict};
        let all = vec![
            // The workload says STRICT for everything...
            policy(
                "shop",
                "a-db",
                "selector: {matchLabels: {app: db}}\nmtls: {mode: STRICT}",
            ),
            // ...so the namespace's port entry does not loosen it.
            policy(
                "shop",
                "b-shop",
                "portLevelMtls: {\"5432\": {mode: PERMISSIVE}}",
            ),
        ];
        let p = resolve(&all, "mycel-system", "shop", &labels("db"));
        assert_eq!(p.mode_for(5432, Permissive).mode, Strict);
        assert!(p.ports.is_empty(), "{p:?}");
    }

    #[test]
    fn invalid_port_entries_name_the_field() {
        for (yaml, field) in [
            (
                "portLevelMtls: {\"http\": {mode: STRICT}}",
                "spec.portLevelMtls[\"http\"]",
            ),
            (
                "portLevelMtls: {\"0\": {mode: STRICT}}",
                "spec.portLevelMtls[\"0\"]",
            ),
            (
                "portLevelMtls: {\"65536\": {mode: STRICT}}",
                "spec.portLevelMtls[\"65536\"]",
            ),
            (
                "portLevelMtls: {\"080\": {mode: STRICT}}",
                "spec.portLevelMtls[\"080\"]",
            ),
            (
                "portLevelMtls: {\"80\": {}}",
                "spec.portLevelMtls[\"80\"].mode",
            ),
        ] {
            let e = from_spec("shop", "p", &serde_saphyr::from_str(yaml).unwrap()).expect_err(yaml);
            assert_eq!(e.field, field, "{yaml}: {e}");
        }
    }
}
