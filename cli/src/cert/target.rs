//! What `cert inspect`'s argument names: a file unless it is a cluster
//! name. `deploy/NAME` or `pod/NAME` always are (kubectl's spelling; a file
//! at such a path is `./deploy/NAME`), and so is any argument when a
//! cluster flag (-n, --kubeconfig, --context) is given, a bare one then
//! being a pod's name. What a cluster name names is
//! [`crate::meshpod::target`]'s, shared with `proxy-config`.

use std::path::{Path, PathBuf};

use crate::meshpod::target::{self, Target, TargetError};

const COMMAND: &str = "cert inspect";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Cluster(Target),
}

/// Reads the positional argument; `cluster` is whether a cluster flag was
/// given.
pub fn classify(arg: &Path, cluster: bool) -> Result<Source, TargetError> {
    // A name that is not UTF-8 is no Kubernetes name.
    let Some(text) = arg.to_str() else {
        return Ok(Source::File(arg.to_path_buf()));
    };
    if cluster {
        return target::parse(text, COMMAND).map(Source::Cluster);
    }
    match text.split_once('/') {
        Some((kind, _)) if target::is_kind(kind) => {
            target::parse(text, COMMAND).map(Source::Cluster)
        }
        _ => Ok(Source::File(arg.to_path_buf())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meshpod::target::ACCEPTED;

    fn cluster(t: Target) -> Result<Source, TargetError> {
        Ok(Source::Cluster(t))
    }

    #[test]
    fn arguments_table() {
        let pod = |n: &str| Target::Pod(n.into());
        let deploy = |n: &str| Target::Deployment(n.into());
        let file = |p: &str| Ok(Source::File(PathBuf::from(p)));
        for (arg, with_flags, want) in [
            ("deploy/frontend", false, cluster(deploy("frontend"))),
            ("deployment/frontend", false, cluster(deploy("frontend"))),
            ("deployments.apps/web", true, cluster(deploy("web"))),
            ("pod/web-0", false, cluster(pod("web-0"))),
            ("po/web-0", true, cluster(pod("web-0"))),
            ("web-0", true, cluster(pod("web-0"))),
            ("web-7d9f.abc", true, cluster(pod("web-7d9f.abc"))),
            // Without a cluster flag, anything else is a file.
            ("web-0", false, file("web-0")),
            ("leaf.pem", false, file("leaf.pem")),
            ("certs/leaf.pem", false, file("certs/leaf.pem")),
            ("./deploy/frontend", false, file("./deploy/frontend")),
            ("-", false, file("-")),
        ] {
            assert_eq!(
                classify(Path::new(arg), with_flags),
                want,
                "{arg} (cluster flags: {with_flags})"
            );
        }
    }

    /// What is wrong with a cluster name is `meshpod::target`'s to say
    /// (tested there); here, that it names this command.
    #[test]
    fn a_cluster_name_in_no_accepted_form_is_refused_naming_cert_inspect() {
        let err = classify(Path::new("svc/frontend"), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("svc/frontend: cert inspect does not read kind \"svc\"; give {ACCEPTED}")
        );
        // With a cluster flag, even what looks like a file is a name.
        let err = classify(Path::new("certs/leaf.pem"), true).unwrap_err();
        assert!(matches!(err, TargetError::Kind { .. }), "{err}");
        let err = classify(Path::new("-"), true).unwrap_err();
        assert!(matches!(err, TargetError::Name { .. }), "{err}");
    }
}
