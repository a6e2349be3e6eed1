//! The API client `check`, `install`, `cert` and `proxy-config` use:
//! kubeconfig as kubectl finds it, with timeouts short enough for a command
//! line; and kube's errors as one line a person can act on.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

/// Which cluster, as kubectl's flags of the same names say it.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct KubeArgs {
    /// Kubeconfig to use (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// Where a workload is, as kubectl's flags say it: its namespace and
/// which cluster. A command taking a cluster target (`cert inspect`,
/// `proxy-config`) reads a bare NAME as a pod's when any is given.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TargetArgs {
    /// Namespace of the pod or deployment (default: the kubeconfig
    /// context's). Makes TARGET a cluster name even without a kind: a bare
    /// NAME is then a pod's.
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

impl TargetArgs {
    /// Whether the user named a namespace or a cluster at all.
    pub fn given(&self) -> bool {
        self.namespace.is_some() || self.kube.given()
    }
}

impl KubeArgs {
    /// Whether the user named a cluster at all.
    pub fn given(&self) -> bool {
        self.kubeconfig.is_some() || self.context.is_some()
    }

    pub async fn client(&self, timeout: Duration) -> Result<Client, String> {
        client(self.kubeconfig.as_deref(), self.context.as_deref(), timeout).await
    }
}

/// A client from `path`, else `KUBECONFIG`, `~/.kube/config` or the
/// in-cluster config, in `context` or the current one; each request may
/// take `timeout`.
pub async fn client(
    path: Option<&Path>,
    context: Option<&str>,
    timeout: Duration,
) -> Result<Client, String> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let mut config = match (path, context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| chain(&e))?
        }
        // A context exists only in a kubeconfig: no in-cluster fallback.
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| chain(&e))?,
        (None, None) => kube::Config::infer().await.map_err(|e| chain(&e))?,
    };
    // kube's defaults wait minutes for an answer; a check must not hang.
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| chain(&e))
}

/// An error with its causes ("client error (Connect): ... timed out"), for
/// kube's top-level messages say little alone.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// `f`, given up after `timeout`; its error as [`chain`] words it.
pub async fn call<T, E: std::error::Error>(
    timeout: Duration,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(chain(&e)),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
