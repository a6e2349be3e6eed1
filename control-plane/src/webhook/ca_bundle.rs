//! Points the MutatingWebhookConfiguration at the mesh CA: every webhook
//! in it gets `clientConfig.caBundle` = the mesh roots, so the API server
//! verifies the controller's serving certificate. The chart installs the
//! configuration with an empty bundle (it cannot know a CA generated at
//! first start) and keeps the patched one across upgrades. The bundle
//! follows a trust-anchor rotation (both roots while the serving
//! certificate may chain to either), and it is told when the API server
//! holds the current one, which a shared rotation waits for before the
//! serving certificate switches root.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// The JSON patch that sets every webhook's caBundle, or `None` when all
/// already carry it (no write).
pub fn ca_bundle_patch(
    config: &MutatingWebhookConfiguration,
    roots_pem: &str,
) -> Option<json_patch::Patch> {
    let bundle = base64::engine::general_purpose::STANDARD.encode(roots_pem);
    let want = k8s_openapi::ByteString(roots_pem.as_bytes().to_vec());
    let ops: Vec<serde_json::Value> = config
        .webhooks
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, w)| w.client_config.ca_bundle.as_ref() != Some(&want))
        .map(|(i, _)| {
            serde_json::json!({
                "op": "add",
                "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": bundle,
            })
        })
        .collect();
    if ops.is_empty() {
        return None;
    }
    serde_json::from_value(serde_json::Value::Array(ops)).ok()
}

/// Keeps the named configuration's caBundle equal to `roots`: at start, at
/// each change of `roots`, then every `resync` (an upgrade or a user may
/// reset it), until `shutdown`. `applied` is set to the roots once the
/// configuration carries them (or does not exist: then no API server calls
/// it). A missing configuration is waited for, never fatal.
pub async fn keep_ca_bundle(
    client: Client,
    name: String,
    mut roots: watch::Receiver<String>,
    resync: Duration,
    mut shutdown: watch::Receiver<bool>,
    applied: watch::Sender<Option<String>>,
) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            Ok(()) = roots.changed() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let roots_pem = roots.borrow_and_update().clone();
        let done = |ok: bool| {
            let now = ok.then(|| roots_pem.clone());
            applied.send_if_modified(|a| {
                let changed = *a != now;
                *a = now;
                changed
            });
        };
        wait = match api.get_opt(&name).await {
            Ok(Some(config)) => match ca_bundle_patch(&config, &roots_pem) {
                None => {
                    done(true);
                    resync
                }
                Some(patch) => {
                    let params = PatchParams::default();
                    match api.patch(&name, &params, &Patch::<()>::Json(patch)).await {
                        Ok(_) => {
                            tracing::info!(webhook_config = %name, "webhook caBundle set to the mesh CA");
                            done(true);
                            resync
                        }
                        Err(e) => {
                            tracing::warn!(webhook_config = %name, error = %e, "cannot patch the webhook caBundle; retrying");
                            done(false);
                            Duration::from_secs(5)
                        }
                    }
                }
            },
            Ok(None) => {
                tracing::warn!(webhook_config = %name, "MutatingWebhookConfiguration not found; retrying");
                done(true);
                Duration::from_secs(5)
            }
            Err(e) => {
                tracing::warn!(webhook_config = %name, error = %e, "cannot read the webhook configuration; retrying");
                done(false);
                Duration::from_secs(5)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bundles: &[Option<&str>]) -> MutatingWebhookConfiguration {
        let webhooks: Vec<serde_json::Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut cc = serde_json::json!({"service": {"name": "mycel-webhook", "namespace": "mycel-system"}});
                if let Some(b) = b {
                    cc["caBundle"] = base64::engine::general_purpose::STANDARD.encode(b).into();
                }
                serde_json::json!({"name": format!("w{i}.mycel.io"), "clientConfig": cc,
                                    "sideEffects": "None", "admissionReviewVersions": ["v1"]})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "mycel-injector"}, "webhooks": webhooks,
        }))
        .unwrap()
    }

    #[test]
    fn only_webhooks_without_the_mesh_roots_are_patched() {
        let roots = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let p = ca_bundle_patch(&config(&[None, Some(roots), Some("old")]), roots).unwrap();
        let ops = serde_json::to_value(&p).unwrap();
        let paths: Vec<&str> = ops
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "/webhooks/0/clientConfig/caBundle",
                "/webhooks/2/clientConfig/caBundle"
            ]
        );
        assert!(ca_bundle_patch(&config(&[Some(roots)]), roots).is_none());
        assert!(ca_bundle_patch(&config(&[]), roots).is_none());
    }
}
