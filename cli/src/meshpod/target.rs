//! What a cluster target names (`deploy/NAME`, `pod/NAME`, a pod's bare
//! NAME), and which pod of a Deployment to read. Pure: the argument and the
//! pods' states in, a decision out. Each command decides first whether its
//! argument is a target at all (a file for `cert inspect`, an address for
//! `proxy-config`), using [`is_kind`].

/// Kinds read, in their kubectl spellings.
const POD_KINDS: &[&str] = &["pod", "pods", "po"];
const DEPLOYMENT_KINDS: &[&str] = &[
    "deploy",
    "deployment",
    "deployments",
    "deployment.apps",
    "deployments.apps",
];
/// Workload kinds someone may reasonably try, refused by name rather than
/// read as a missing file.
const OTHER_KINDS: &[&str] = &[
    "svc",
    "service",
    "services",
    "sts",
    "statefulset",
    "statefulsets",
    "ds",
    "daemonset",
    "daemonsets",
    "rs",
    "replicaset",
    "replicasets",
    "job",
    "jobs",
    "cronjob",
    "cronjobs",
    "cj",
];

pub const ACCEPTED: &str = "deploy/NAME, pod/NAME, or a pod's NAME with -n NS";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{arg}: {command} does not read kind {kind:?}; give {ACCEPTED}")]
    Kind {
        arg: String,
        kind: String,
        command: &'static str,
    },
    #[error("{arg}: {name:?} is not a valid Kubernetes {what} name (lowercase letters, digits, '-' and '.')")]
    Name {
        arg: String,
        name: String,
        what: &'static str,
    },
    #[error("{0:?} is not a valid namespace (a DNS label: lowercase letters, digits and '-')")]
    Namespace(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pod(String),
    Deployment(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pod(n) => write!(f, "pod/{n}"),
            Self::Deployment(n) => write!(f, "deploy/{n}"),
        }
    }
}

/// Whether `kind` (what comes before the `/` of `KIND/NAME`) is a kind in
/// kubectl's spelling: read or refused by name, but never something else.
pub fn is_kind(kind: &str) -> bool {
    POD_KINDS.contains(&kind) || DEPLOYMENT_KINDS.contains(&kind) || OTHER_KINDS.contains(&kind)
}

/// A cluster target: `KIND/NAME` or a bare pod name; `command` names the
/// command in the error for a kind it does not read.
pub fn parse(arg: &str, command: &'static str) -> Result<Target, TargetError> {
    let (kind, name) = match arg.split_once('/') {
        Some((kind, name)) => (Some(kind), name),
        None => (None, arg),
    };
    let target = match kind {
        None => Target::Pod(name.to_string()),
        Some(k) if POD_KINDS.contains(&k) => Target::Pod(name.to_string()),
        Some(k) if DEPLOYMENT_KINDS.contains(&k) => Target::Deployment(name.to_string()),
        Some(k) => {
            return Err(TargetError::Kind {
                arg: arg.to_string(),
                kind: k.to_string(),
                command,
            })
        }
    };
    let what = match target {
        Target::Pod(_) => "pod",
        Target::Deployment(_) => "deployment",
    };
    // The name goes into the API path: nothing but a valid object name may.
    if !object_name(name) {
        return Err(TargetError::Name {
            arg: arg.to_string(),
            name: name.to_string(),
            what,
        });
    }
    Ok(target)
}

/// A DNS subdomain, as Kubernetes names pods and Deployments.
fn object_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A DNS label, as Kubernetes names namespaces.
pub fn check_namespace(ns: &str) -> Result<(), TargetError> {
    if ns.len() <= 63 && !ns.contains('.') && object_name(ns) {
        Ok(())
    } else {
        Err(TargetError::Namespace(ns.to_string()))
    }
}

/// One pod a Deployment selects, as far as choosing goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub has_proxy: bool,
    pub proxy_ready: bool,
    pub deleting: bool,
    /// The proxy container's state when not ready ("waiting:
    /// CrashLoopBackOff"), for the error.
    pub state: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("deployment {deployment} selects no pod ({selector})")]
    NoPods {
        deployment: String,
        selector: String,
    },
    #[error("deployment {deployment} is not meshed: none of its pods ({pods}) has a mycel-proxy container (is its namespace labelled mycel.io/inject=enabled, and were the pods created after?)")]
    NotMeshed { deployment: String, pods: String },
    #[error("deployment {deployment} has no pod with a ready proxy: {pods}")]
    NotReady { deployment: String, pods: String },
}

/// The pod whose proxy is read: the first by name with a ready proxy that
/// is not being deleted, so the same cluster gives the same answer; and a
/// sentence saying why that one.
pub fn pick(
    deployment: &str,
    selector: &str,
    candidates: &[Candidate],
) -> Result<(String, String), PickError> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let names = |list: &[&Candidate], f: &dyn Fn(&Candidate) -> String| {
        list.iter().map(|c| f(c)).collect::<Vec<_>>().join(", ")
    };
    if sorted.is_empty() {
        return Err(PickError::NoPods {
            deployment: deployment.to_string(),
            selector: selector.to_string(),
        });
    }
    if !sorted.iter().any(|c| c.has_proxy) {
        return Err(PickError::NotMeshed {
            deployment: deployment.to_string(),
            pods: names(&sorted, &|c| c.name.clone()),
        });
    }
    let ready: Vec<&Candidate> = sorted
        .iter()
        .copied()
        .filter(|c| c.has_proxy && c.proxy_ready && !c.deleting)
        .collect();
    let Some(first) = ready.first() else {
        let why = |c: &Candidate| {
            let state = if c.deleting {
                "being deleted".to_string()
            } else if !c.has_proxy {
                "no mycel-proxy container".to_string()
            } else {
                c.state.clone()
            };
            format!("{} ({state})", c.name)
        };
        return Err(PickError::NotReady {
            deployment: deployment.to_string(),
            pods: names(&sorted, &why),
        });
    };
    let note = format!(
        "picked from deployment {deployment}: the first by name of {} pod(s) with a ready proxy ({} selected)",
        ready.len(),
        sorted.len()
    );
    Ok((first.name.clone(), note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_table() {
        let pod = |n: &str| Ok(Target::Pod(n.into()));
        let deploy = |n: &str| Ok(Target::Deployment(n.into()));
        for (arg, want) in [
            ("deploy/frontend", deploy("frontend")),
            ("deployment/frontend", deploy("frontend")),
            ("deployments.apps/web", deploy("web")),
            ("pod/web-0", pod("web-0")),
            ("po/web-0", pod("web-0")),
            ("pods/web-0", pod("web-0")),
            ("web-0", pod("web-0")),
            ("web-7d9f.abc", pod("web-7d9f.abc")),
        ] {
            assert_eq!(parse(arg, "cmd"), want, "{arg}");
        }
    }

    #[test]
    fn other_kinds_and_bad_names_are_refused_naming_the_accepted_forms() {
        for arg in ["svc/frontend", "statefulset/db", "certs/leaf.pem"] {
            let err = parse(arg, "proxy-config").unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, TargetError::Kind { .. }), "{arg}: {text}");
            assert!(
                text.starts_with(arg)
                    && text.contains("proxy-config does not read kind")
                    && text.contains(ACCEPTED),
                "{arg}: {text}"
            );
        }
        for arg in [
            "pod/",
            "deploy/Web",
            "pod/a/b",
            "-",
            "web?x=1",
            "deploy/-web",
            "pod/a..b",
            "127.0.0.1:15000",
        ] {
            let err = parse(arg, "cmd").unwrap_err();
            assert!(matches!(err, TargetError::Name { .. }), "{arg}: {err:?}");
        }
        assert!(check_namespace("shop").is_ok());
        for ns in ["", "Shop", "a.b", "a/b", &"x".repeat(64)] {
            assert!(check_namespace(ns).is_err(), "{ns}");
        }
        assert!(is_kind("deploy") && is_kind("svc") && !is_kind("certs"));
    }

    fn candidate(name: &str, proxy: bool, ready: bool) -> Candidate {
        Candidate {
            name: name.into(),
            has_proxy: proxy,
            proxy_ready: ready,
            deleting: false,
            state: if ready {
                "ready"
            } else {
                "waiting: CrashLoopBackOff"
            }
            .into(),
        }
    }

    #[test]
    fn the_first_ready_pod_by_name_is_picked() {
        let mut gone = candidate("web-a", true, true);
        gone.deleting = true;
        let pods = [
            candidate("web-d", true, true),
            candidate("web-b", true, false),
            gone,
            candidate("web-c", true, true),
        ];
        let (name, note) = pick("web", "app=web", &pods).unwrap();
        assert_eq!(name, "web-c");
        assert!(
            note.contains("deployment web")
                && note.contains("2 pod(s) with a ready proxy (4 selected)"),
            "{note}"
        );
    }

    #[test]
    fn no_pod_unmeshed_and_unready_are_told_apart() {
        let err = pick("web", "app=web", &[]).unwrap_err();
        assert_eq!(err.to_string(), "deployment web selects no pod (app=web)");
        let err = pick("web", "app=web", &[candidate("web-0", false, false)]).unwrap_err();
        assert!(
            matches!(err, PickError::NotMeshed { .. }) && err.to_string().contains("web-0"),
            "{err}"
        );
        let err = pick(
            "web",
            "app=web",
            &[
                candidate("web-1", true, false),
                candidate("web-0", false, false),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "deployment web has no pod with a ready proxy: web-0 (no mycel-proxy container), web-1 (waiting: CrashLoopBackOff)"
        );
    }
}
