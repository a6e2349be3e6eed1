//! The API client `check` and `install` use: kubeconfig as kubectl finds
//! it, with timeouts short enough for a command line.

use std::path::Path;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

/// A client from `path`, else `KUBECONFIG`, `~/.kube/config` or the
/// in-cluster config; each request may take `timeout`.
pub async fn client(path: Option<&Path>, timeout: Duration) -> Result<Client, String> {
    let mut config = match path {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| e.to_string())?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    // kube's defaults wait minutes for an answer; a check must not hang.
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| e.to_string())
}
