//! Gateway and GatewayClass events into [`Gateways`], and TLS Secret
//! events into [`TlsSecrets`] (the certificates of HTTPS listeners), with
//! the same re-list bookkeeping as every other kind ([`super::on_event`]).

use std::collections::BTreeSet;

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;

use super::{on_event, Kind, Relist};
use crate::sources::k8s::gateways::{self, Gateways};
use crate::sources::k8s::tls_secrets::TlsSecrets;

/// GatewayClasses are cluster-scoped; the watch bookkeeping keys objects
/// by `(namespace, name)`, so a class is keyed with an empty namespace.
pub(super) fn cluster_scoped(obj: &mut DynamicObject) {
    obj.metadata.namespace = Some(String::new());
}

/// Applies one Gateway event; returns the kind whose re-list just
/// finished, if it did.
pub(super) fn apply_gateway(
    store: &mut Gateways,
    relist: &mut Relist,
    event: Event<DynamicObject>,
) -> Option<Kind> {
    on_event(
        store,
        relist,
        Kind::Gateway,
        event,
        |s, o| match gateways::read_gateway(&o) {
            Some(g) => {
                let key = g.key.clone();
                s.apply_gateway(g);
                (Some(key), BTreeSet::new())
            }
            None => (None, BTreeSet::new()),
        },
        |s, k| {
            s.delete_gateway(k);
            BTreeSet::new()
        },
        Gateways::gateway_keys,
    )
    .0
}

/// Applies one GatewayClass event (keyed as [`cluster_scoped`] says).
pub(super) fn apply_class(
    store: &mut Gateways,
    relist: &mut Relist,
    event: Event<DynamicObject>,
) -> Option<Kind> {
    on_event(
        store,
        relist,
        Kind::GatewayClass,
        event,
        |s, o| match gateways::read_class(&o) {
            Some(c) => {
                let key = (String::new(), c.name.clone());
                s.apply_class(c);
                (Some(key), BTreeSet::new())
            }
            None => (None, BTreeSet::new()),
        },
        |s, (_, name)| {
            s.delete_class(name);
            BTreeSet::new()
        },
        |s| {
            s.class_names()
                .into_iter()
                .map(|n| (String::new(), n))
                .collect()
        },
    )
    .0
}

/// Applies one TLS Secret event; returns the kind whose re-list just
/// finished (if it did) and whether any Secret's contents changed.
pub(super) fn apply_tls_secret(
    store: &mut TlsSecrets,
    relist: &mut Relist,
    event: Event<k8s_openapi::api::core::v1::Secret>,
) -> (Option<Kind>, bool) {
    let changed = std::cell::Cell::new(false);
    let kind = on_event(
        store,
        relist,
        Kind::TlsSecret,
        event,
        |s, secret| {
            let (key, c) = s.apply(&secret);
            changed.set(changed.get() | c);
            (key, BTreeSet::new())
        },
        |s, k| {
            changed.set(changed.get() | s.delete(k));
            BTreeSet::new()
        },
        TlsSecrets::keys,
    )
    .0;
    (kind, changed.get())
}
