//! The mesh CA in a Secret and the trust bundle in ConfigMaps, against a
//! real kube-apiserver on loopback. The controller's calls run as a
//! ServiceAccount bound to exactly `rbac::REQUIRED`, so a call the list
//! does not grant fails the test.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use mycel_control_plane::ca::Authority;
use mycel_control_plane::sources::k8s::ca_secret::{
    store_or_adopt_ca_secret, sync_ca_secret, CaOrigin, CaSecretConfig, CaSource,
};
use mycel_control_plane::sources::k8s::owner::Ownership;
use mycel_control_plane::sources::k8s::rbac::{Scope, CA_SECRET, REQUIRED, TRUST_BUNDLE_CONFIGMAP};
use mycel_control_plane::sources::k8s::trust_bundle::{publish_trust_bundle, KEY, NAMESPACE_LABEL};
use mycel_tests::k8s::{self, ApiServer};
use serde_json::json;

pub(crate) const NS: &str = "mycel-system";
const SA: &str = "mycel-controller";
const TD: &str = "cluster.local";
const CERT_TTL: Duration = Duration::from_secs(3600);
const ISSUER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub(crate) async fn create<K>(api: Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let obj: K = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {obj:?}: {e}"))
}

pub(crate) async fn namespace(admin: &Client, name: &str, meshed: bool) {
    let labels = if meshed {
        json!({ NAMESPACE_LABEL: "enabled" })
    } else {
        json!({})
    };
    let _: Namespace = create(
        Api::all(admin.clone()),
        json!({"metadata": {"name": name, "labels": labels}}),
    )
    .await;
}

/// The API server, an admin client, and a client acting as the controller's
/// ServiceAccount with exactly the rights of `rbac::REQUIRED`.
pub(crate) async fn cluster() -> (ApiServer, Client, Client) {
    cluster_on(ApiServer::start().await.unwrap()).await
}

/// [`cluster`] on an API server already started (e.g. where a network
/// namespace's controller reaches it); the controller's kubeconfig is
/// [`controller_kubeconfig`].
pub(crate) async fn cluster_on(api: ApiServer) -> (ApiServer, Client, Client) {
    let admin = api.client().await.unwrap();
    namespace(&admin, NS, false).await;
    let _: ServiceAccount = create(
        Api::namespaced(admin.clone(), NS),
        json!({"metadata": {"name": SA}}),
    )
    .await;
    let rules = |scope: Scope| -> Vec<serde_json::Value> {
        REQUIRED
            .iter()
            .filter(|p| p.scope == scope)
            .map(|p| {
                let mut rule = json!({
                    "apiGroups": [p.group], "resources": [p.resource], "verbs": p.verbs,
                });
                if !p.resource_names.is_empty() {
                    rule["resourceNames"] = json!(p.resource_names);
                }
                rule
            })
            .collect()
    };
    let subject = json!([{"kind": "ServiceAccount", "name": SA, "namespace": NS}]);
    let _: ClusterRole = create(
        Api::all(admin.clone()),
        json!({"metadata": {"name": SA}, "rules": rules(Scope::Cluster)}),
    )
    .await;
    let _: ClusterRoleBinding = create(
        Api::all(admin.clone()),
        json!({
            "metadata": {"name": SA}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SA},
        }),
    )
    .await;
    let _: Role = create(
        Api::namespaced(admin.clone(), NS),
        json!({"metadata": {"name": SA}, "rules": rules(Scope::ControllerNamespace)}),
    )
    .await;
    let _: RoleBinding = create(
        Api::namespaced(admin.clone(), NS),
        json!({
            "metadata": {"name": SA}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA},
        }),
    )
    .await;
    let req: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).unwrap();
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .create_token_request(SA, &PostParams::default(), &req)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    api.token_kubeconfig(SA, &token).unwrap();
    let controller = controller_client(&api).await;
    (api, admin, controller)
}

/// The kubeconfig of the controller's ServiceAccount (after [`cluster`]).
pub(crate) fn controller_kubeconfig(api: &ApiServer) -> std::path::PathBuf {
    api.dir().join(format!("kubeconfig-{SA}"))
}

/// Another client as the controller's ServiceAccount (after [`cluster`]).
async fn controller_client(api: &ApiServer) -> Client {
    mycel_control_plane::sources::k8s::client(Some(&controller_kubeconfig(api)))
        .await
        .unwrap()
}

/// The CA Secret's settings as the chart gives them, owned as `ownership`
/// says.
pub(crate) fn ca_config<'a>(
    data_dir: &'a std::path::Path,
    ownership: &'a Ownership,
) -> CaSecretConfig<'a> {
    CaSecretConfig {
        namespace: NS,
        name: CA_SECRET,
        data_dir,
        trust_domain: TD,
        cert_ttl: CERT_TTL,
        issuer_ttl: ISSUER_TTL,
        ownership,
        poll: Duration::from_secs(1),
        overlap: Duration::from_secs(60),
    }
}

async fn sync(client: &Client, data_dir: &std::path::Path) -> anyhow::Result<CaSource> {
    Ok(sync_ca_secret(client.clone(), &ca_config(data_dir, &Ownership::Leave)).await?)
}

fn text(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().unwrap();
    String::from_utf8(data.get(key).unwrap().0.clone()).unwrap()
}

pub(crate) async fn ca_secret(admin: &Client) -> Secret {
    Api::<Secret>::namespaced(admin.clone(), NS)
        .get(CA_SECRET)
        .await
        .unwrap()
}

/// A CA generated in a directory of its own: (root, root key, issuer, issuer key).
pub(crate) fn some_ca() -> (tempfile::TempDir, [String; 4]) {
    let dir = tempfile::tempdir().unwrap();
    Authority::load_or_generate(dir.path(), TD, CERT_TTL).unwrap();
    let read = |n: &str| std::fs::read_to_string(dir.path().join("ca").join(n)).unwrap();
    let files = [
        read("root.pem"),
        read("root.key"),
        read("issuer.pem"),
        read("issuer.key"),
    ];
    (dir, files)
}

fn secret_data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

async fn put_secret(admin: &Client, type_: &str, pairs: &[(&str, &str)]) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(CA_SECRET.into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(secret_data(pairs)),
        ..Default::default()
    };
    Api::<Secret>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_starting_at_once_end_with_one_ca_that_restarts_reuse() {
    if !k8s::available() {
        return;
    }
    let (api, admin, controller) = cluster().await;
    // Two replicas: a client each, each started on its own task.
    let other = controller_client(&api).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |client: Client, dir: std::path::PathBuf| {
        tokio::spawn(async move { sync(&client, &dir).await.unwrap() })
    };
    let (a, b) = tokio::join!(
        start(controller.clone(), dir_a.path().to_path_buf()),
        start(other, dir_b.path().to_path_buf())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.authority.root_pem(), b.authority.root_pem());
    // One created the Secret; the other found it (or lost the create race:
    // which one depends on timing).
    let origins = [a.origin, b.origin];
    assert_eq!(
        origins.iter().filter(|o| **o == CaOrigin::Created).count(),
        1,
        "{origins:?}"
    );

    // Losing the race for certain: the Secret appears between the GET
    // (not made here) and the create. The loser's own CA is dropped.
    let dir_c = tempfile::tempdir().unwrap();
    let c = store_or_adopt_ca_secret(
        controller.clone(),
        &ca_config(dir_c.path(), &Ownership::Leave),
    )
    .await
    .unwrap();
    assert_eq!(c.origin, CaOrigin::LostRace);
    assert_eq!(c.authority.root_pem(), a.authority.root_pem());

    let secret = ca_secret(&admin).await;
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get("app.kubernetes.io/part-of"),
        Some(&"mycel".to_string())
    );
    assert_eq!(text(&secret, "root.pem"), a.authority.root_pem());
    // Without --webhook-config nothing owns it.
    assert_eq!(secret.metadata.owner_references, None);
    // Both data dirs hold the Secret's CA, byte for byte.
    for dir in [&dir_a, &dir_b, &dir_c] {
        for key in ["root.pem", "root.key", "issuer.pem", "issuer.key"] {
            let file = std::fs::read_to_string(dir.path().join("ca").join(key)).unwrap();
            assert_eq!(
                file,
                text(&secret, key),
                "{key} in {}",
                dir.path().display()
            );
        }
    }

    // A restart, with a fresh data dir or a kept one, reuses the Secret
    // and leaves it as it was.
    let fresh = tempfile::tempdir().unwrap();
    for dir in [fresh.path(), dir_a.path()] {
        let again = sync(&controller, dir).await.unwrap();
        assert_eq!(again.origin, CaOrigin::Existing);
        assert_eq!(again.authority.root_pem(), text(&secret, "root.pem"));
        assert_eq!(again.authority.issuer_pem(), text(&secret, "issuer.pem"));
        assert!(again.authority.issuer_rotation_due().is_some());
    }
    let after = ca_secret(&admin).await;
    assert_eq!(after.data, secret.data);
    assert_eq!(
        after.metadata.resource_version,
        secret.metadata.resource_version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cert_manager_style_secret_is_used_as_given() {
    if !k8s::available() {
        return;
    }
    let (_api, admin, controller) = cluster().await;
    let (_src, [root, _root_key, issuer, issuer_key]) = some_ca();
    put_secret(
        &admin,
        "kubernetes.io/tls",
        &[
            ("tls.crt", &issuer),
            ("tls.key", &issuer_key),
            ("ca.crt", &root),
        ],
    )
    .await;
    let before = ca_secret(&admin).await;

    let dir = tempfile::tempdir().unwrap();
    // Even with a webhook configuration owning what the controller
    // creates, a Secret it never creates is not given an owner.
    let hook: OwnerReference = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "name": "mycel-injector", "uid": "0b4c1e2e-0000-4000-8000-000000000001",
    }))
    .unwrap();
    let owned = Ownership::By(hook);
    let got = sync_ca_secret(controller.clone(), &ca_config(dir.path(), &owned))
        .await
        .unwrap();
    assert_eq!(got.origin, CaOrigin::Provided);
    assert_eq!(got.authority.root_pem(), root);
    assert_eq!(got.authority.issuer_pem(), issuer);
    // No root key: the controller does not rotate the issuer.
    assert_eq!(got.authority.issuer_rotation_due(), None);
    assert!(!dir.path().join("ca").exists(), "no CA generated beside it");
    let after = ca_secret(&admin).await;
    assert_eq!(after.data, before.data);
    assert_eq!(after.metadata.owner_references, None);
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_secret_missing_issuer_key_is_refused_naming_it() {
    if !k8s::available() {
        return;
    }
    let (_api, admin, controller) = cluster().await;
    let (_src, [root, root_key, issuer, _issuer_key]) = some_ca();
    put_secret(
        &admin,
        "Opaque",
        &[
            ("root.pem", &root),
            ("root.key", &root_key),
            ("issuer.pem", &issuer),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let err = sync(&controller, dir.path()).await.unwrap_err().to_string();
    assert!(
        err.contains("mycel-system/mycel-ca") && err.contains("no issuer.key"),
        "{err}"
    );
    assert!(!dir.path().join("ca").exists(), "nothing written: {err}");
}

/// Polls `check` until it holds, or fails naming `what`.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn bundle(admin: &Client, ns: &str) -> Option<String> {
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), ns)
        .get_opt(TRUST_BUNDLE_CONFIGMAP)
        .await
        .unwrap()?;
    cm.data.unwrap_or_default().get(KEY).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_bundle_reaches_meshed_namespaces_and_edits_are_undone() {
    if !k8s::available() {
        return;
    }
    let (_api, admin, controller) = cluster().await;
    namespace(&admin, "shop", true).await;
    namespace(&admin, "plain", false).await;
    let (_src, [root, ..]) = some_ca();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    // No --webhook-config: owner references are left alone.
    let (_owner, owner) = tokio::sync::watch::channel(Ownership::Leave);
    let publisher = tokio::spawn({
        let (client, roots) = (controller.clone(), root.clone());
        async move {
            publish_trust_bundle(
                client,
                TRUST_BUNDLE_CONFIGMAP,
                NAMESPACE_LABEL,
                roots,
                // Periodic resync is what undoes edits; short here.
                Duration::from_secs(1),
                owner,
                shutdown,
            )
            .await
        }
    });
    let is_root = |ns: &'static str| {
        let (admin, root) = (admin.clone(), root.clone());
        move || {
            let (admin, root) = (admin.clone(), root.clone());
            async move { bundle(&admin, ns).await.as_deref() == Some(root.as_str()) }
        }
    };
    eventually("the bundle in shop", is_root("shop")).await;

    // Someone edits it: the next resync puts the root back.
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), "shop");
    let mut edited = cms.get(TRUST_BUNDLE_CONFIGMAP).await.unwrap();
    edited.data = Some(BTreeMap::from([(KEY.to_string(), "tampered".to_string())]));
    cms.replace(TRUST_BUNDLE_CONFIGMAP, &PostParams::default(), &edited)
        .await
        .unwrap();
    eventually("the edited bundle corrected", is_root("shop")).await;

    // Deleted: created again.
    cms.delete(TRUST_BUNDLE_CONFIGMAP, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted bundle re-created", is_root("shop")).await;

    // A namespace labelled later gets it too.
    namespace(&admin, "late", true).await;
    eventually("the bundle in late", is_root("late")).await;

    // Never in an unlabelled one.
    assert_eq!(bundle(&admin, "plain").await, None);

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("the publisher stops on shutdown")
        .unwrap();
}
