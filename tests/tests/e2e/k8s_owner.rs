//! `helm uninstall` leaves nothing behind: the CA Secret and the trust
//! bundles the controller creates are owned by the MutatingWebhookConfiguration
//! helm deletes, and kube-controller-manager's garbage collector (started
//! here with nothing else) deletes them after it. A CA Secret the user
//! brought is never owned, so it stays. Calls as the controller's
//! ServiceAccount, bound to exactly `rbac::REQUIRED` (see `k8s_ca`).

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use mycel_control_plane::sources::k8s::ca_secret::{self, sync_ca_secret, CaOrigin};
use mycel_control_plane::sources::k8s::owner::{self, follow_owner, Ownership};
use mycel_control_plane::sources::k8s::rbac::{CA_SECRET, TRUST_BUNDLE_CONFIGMAP, WEBHOOK_CONFIG};
use mycel_control_plane::sources::k8s::trust_bundle::{
    desired, publish_trust_bundle, KEY, NAMESPACE_LABEL,
};
use mycel_tests::k8s;
use mycel_tests::process::Proc;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::k8s_ca::{ca_config, ca_secret, cluster, create, eventually, namespace, NS};

/// Creates the webhook configuration (as helm does); its uid.
async fn install_webhook_config(hooks: &Api<MutatingWebhookConfiguration>) -> String {
    let config: MutatingWebhookConfiguration =
        create(hooks.clone(), json!({"metadata": {"name": WEBHOOK_CONFIG}})).await;
    config.metadata.uid.unwrap()
}

/// The uids of the webhook configurations that own an object.
fn owner_uids(meta: &ObjectMeta) -> Vec<String> {
    meta.owner_references
        .iter()
        .flatten()
        .filter(|r| r.kind == owner::KIND && r.name == WEBHOOK_CONFIG)
        .map(|r| r.uid.clone())
        .collect()
}

async fn bundle(admin: &Client, ns: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(admin.clone(), ns)
        .get_opt(TRUST_BUNDLE_CONFIGMAP)
        .await
        .unwrap()
}

/// The controller's publishing, as it runs with `--webhook-config`: the
/// owner followed and the bundles checked every second.
struct Publisher {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Publisher {
    fn start(controller: &Client, roots: &str) -> Publisher {
        let (stop, shutdown) = watch::channel(false);
        let (owner_tx, owner_rx) = watch::channel(Ownership::Leave);
        let follow = tokio::spawn(follow_owner(
            controller.clone(),
            WEBHOOK_CONFIG.into(),
            owner_tx,
            Duration::from_secs(1),
            shutdown.clone(),
        ));
        let (client, roots) = (controller.clone(), roots.to_string());
        let publish = tokio::spawn(async move {
            publish_trust_bundle(
                client,
                TRUST_BUNDLE_CONFIGMAP,
                NAMESPACE_LABEL,
                roots,
                Duration::from_secs(1),
                owner_rx,
                shutdown,
            )
            .await
        });
        Publisher {
            stop,
            tasks: vec![follow, publish],
        }
    }

    /// What `helm uninstall` does to the controller: its Deployment goes.
    async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("stops on shutdown")
                .unwrap();
        }
    }
}

/// Waits for the garbage collector to have deleted what `gone` checks,
/// showing its log if it does not within a minute (it lists every
/// resource of the API server first).
async fn collected<F, Fut>(gc: &Proc, what: &str, gone: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gone().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not garbage-collected within 60 s; kube-controller-manager log:\n{}",
            gc.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_garbage_collects_what_the_controller_created_even_from_an_older_install() {
    if !k8s::available() || !k8s::controller_manager_available() {
        return;
    }
    let (api, admin, controller) = cluster().await;
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let first = install_webhook_config(&hooks).await;
    namespace(&admin, "shop", true).await;
    namespace(&admin, "old", true).await;

    // An older install's controller wrote the Secret and a trust bundle
    // with no owner.
    let data = tempfile::tempdir().unwrap();
    let older = sync_ca_secret(
        controller.clone(),
        &ca_config(data.path(), &Ownership::Leave),
    )
    .await
    .unwrap();
    let root = older.authority.root_pem().to_string();
    let stored = ca_secret(&admin).await;
    assert_eq!(stored.metadata.owner_references, None);
    Api::<ConfigMap>::namespaced(admin.clone(), "old")
        .create(
            &PostParams::default(),
            &desired(TRUST_BUNDLE_CONFIGMAP, "old", KEY, &root, &Ownership::Leave),
        )
        .await
        .unwrap();

    // The upgraded controller starts: the Secret gets its owner, patched
    // in (its CA untouched)...
    let ownership = owner::current(&controller, WEBHOOK_CONFIG).await.unwrap();
    let started = sync_ca_secret(controller.clone(), &ca_config(data.path(), &ownership))
        .await
        .unwrap();
    assert_eq!(started.origin, CaOrigin::Existing);
    let owned = ca_secret(&admin).await;
    assert_eq!(owned.data, stored.data);
    let refs = owned.metadata.owner_references.clone().unwrap();
    assert_eq!(refs.len(), 1, "{refs:?}");
    let r = &refs[0];
    assert_eq!(
        (
            r.api_version.as_str(),
            r.kind.as_str(),
            r.name.as_str(),
            r.uid.as_str()
        ),
        (
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            WEBHOOK_CONFIG,
            first.as_str()
        )
    );
    assert_eq!(
        (r.controller, r.block_owner_deletion),
        (Some(false), Some(false))
    );

    // ...and every trust bundle, new or left by the older install.
    let publisher = Publisher::start(&controller, &root);
    let owned_by = |ns: &'static str, uid: String| {
        let admin = admin.clone();
        move || {
            let (admin, uid) = (admin.clone(), uid.clone());
            async move {
                bundle(&admin, ns)
                    .await
                    .is_some_and(|cm| owner_uids(&cm.metadata) == [uid])
            }
        }
    };
    eventually("the new bundle owned", owned_by("shop", first.clone())).await;
    eventually("the older bundle owned", owned_by("old", first.clone())).await;

    // The configuration deleted and created again (no garbage collector
    // running yet): the bundles follow its new uid, the Secret at the next
    // start. While it is absent, a namespace meshed meanwhile gets no
    // bundle: nothing would collect it.
    hooks
        .delete(WEBHOOK_CONFIG, &DeleteParams::default())
        .await
        .unwrap();
    // Each wait is longer than the follower's and the publisher's period
    // (1 s): the deletion seen, then the namespace.
    tokio::time::sleep(Duration::from_secs(3)).await;
    namespace(&admin, "late", true).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(bundle(&admin, "late").await.is_none());
    let second = install_webhook_config(&hooks).await;
    assert_ne!(first, second);
    eventually("the bundle owned anew", owned_by("shop", second.clone())).await;
    eventually(
        "the older bundle owned anew",
        owned_by("old", second.clone()),
    )
    .await;
    eventually("the late bundle owned", owned_by("late", second.clone())).await;
    let ownership = owner::current(&controller, WEBHOOK_CONFIG).await.unwrap();
    sync_ca_secret(controller.clone(), &ca_config(data.path(), &ownership))
        .await
        .unwrap();
    assert_eq!(owner_uids(&ca_secret(&admin).await.metadata), [second]);

    // helm uninstall: the controller and the configuration go; the
    // garbage collector deletes what they owned, and nothing else.
    publisher.stop().await;
    let _app: ConfigMap = create(
        Api::namespaced(admin.clone(), "shop"),
        json!({"metadata": {"name": "app-config"}, "data": {"k": "v"}}),
    )
    .await;
    let gc = api.start_garbage_collector();
    hooks
        .delete(WEBHOOK_CONFIG, &DeleteParams::default())
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    collected(&gc, "the CA Secret", || async {
        secrets.get_opt(CA_SECRET).await.unwrap().is_none()
    })
    .await;
    for ns in ["shop", "old", "late"] {
        collected(&gc, &format!("the trust bundle in {ns}"), || async {
            bundle(&admin, ns).await.is_none()
        })
        .await;
    }
    let apps: Api<ConfigMap> = Api::namespaced(admin.clone(), "shop");
    assert!(apps.get_opt("app-config").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_ca_secret_is_never_garbage_collected() {
    if !k8s::available() || !k8s::controller_manager_available() {
        return;
    }
    let (api, admin, controller) = cluster().await;
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let uid = install_webhook_config(&hooks).await;
    namespace(&admin, "shop", true).await;

    // Generated by the controller (so owned), then declared the user's to
    // keep it (`helm upgrade --set ca.generate=false --set
    // ca.existingSecret=mycel-ca`, which passes --keep-ca-secret): the
    // restarted controller takes its reference off.
    let data = tempfile::tempdir().unwrap();
    let ownership = owner::current(&controller, WEBHOOK_CONFIG).await.unwrap();
    let generated = sync_ca_secret(controller.clone(), &ca_config(data.path(), &ownership))
        .await
        .unwrap();
    assert_eq!(generated.origin, CaOrigin::Created);
    assert_eq!(owner_uids(&ca_secret(&admin).await.metadata), [uid]);
    let kept = ca_secret::ownership(Some(WEBHOOK_CONFIG), true, &ownership);
    assert_eq!(kept, Ownership::NeverBy(WEBHOOK_CONFIG.into()));
    let fresh = tempfile::tempdir().unwrap();
    let restarted = sync_ca_secret(controller.clone(), &ca_config(fresh.path(), &kept))
        .await
        .unwrap();
    assert_eq!(restarted.origin, CaOrigin::Existing);
    assert_eq!(
        restarted.authority.root_pem(),
        generated.authority.root_pem()
    );
    let before = ca_secret(&admin).await;
    assert!(owner_uids(&before.metadata).is_empty(), "{before:?}");

    // The trust bundles are still the install's.
    let publisher = Publisher::start(&controller, &generated.authority.root_pem());
    eventually("the bundle owned", || async {
        bundle(&admin, "shop")
            .await
            .is_some_and(|cm| !owner_uids(&cm.metadata).is_empty())
    })
    .await;

    // Uninstall: the bundle is collected, the user's CA stays as it was.
    publisher.stop().await;
    let gc = api.start_garbage_collector();
    hooks
        .delete(WEBHOOK_CONFIG, &DeleteParams::default())
        .await
        .unwrap();
    collected(&gc, "the trust bundle", || async {
        bundle(&admin, "shop").await.is_none()
    })
    .await;
    // The collector has acted; give it a moment more to be sure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = Api::<Secret>::namespaced(admin.clone(), NS)
        .get_opt(CA_SECRET)
        .await
        .unwrap()
        .expect("the user's CA Secret survives the uninstall");
    assert_eq!(after.data, before.data);
}
