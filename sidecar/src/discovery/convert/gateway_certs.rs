//! The `GATEWAY_CERTIFICATES` resource: the PEM chains and keys of the
//! followed Gateway's HTTPS listeners, checked as the gateway's own
//! `--tls-cert` files are (`core::server_cert`). One that cannot be served
//! NACKs the response naming its Secret and what is wrong, so the gateway
//! keeps serving the certificates it had rather than fewer.

use mycel_api::v1 as pb;

use super::{ConvertError, Ctx};
use crate::core::directory::gateway_certs::{GatewayCertificate, GatewayCertificates};
use crate::core::server_cert::ServerCert;

/// The Gateway API's own bound: 64 listeners of 64 certificate refs each.
/// Every certificate is parsed on each update, so a resource holding more
/// is refused rather than worked through.
const MAX_CERTIFICATES: usize = 64 * 64;

pub(super) fn gateway_certificates(
    ctx: &Ctx,
    c: &pb::GatewayCertificates,
) -> Result<GatewayCertificates, ConvertError> {
    if c.certificates.len() > MAX_CERTIFICATES {
        return Err(ctx.err(
            "gateway_certificates.certificates",
            format!(
                "{} certificates; at most {MAX_CERTIFICATES}",
                c.certificates.len()
            ),
        ));
    }
    let certificates = c
        .certificates
        .iter()
        .enumerate()
        .map(|(i, cert)| {
            let at = format!("gateway_certificates.certificates[{i}]");
            if cert.source.is_empty() {
                return Err(ctx.err(format!("{at}.source"), "missing"));
            }
            let served = ServerCert::from_pem(&cert.chain_pem, &cert.key_pem).map_err(|e| {
                let field = if e.is_key() { "key_pem" } else { "chain_pem" };
                ctx.err(
                    format!("{at}.{field}"),
                    format!("certificate {}: {e}", cert.source),
                )
            })?;
            Ok(GatewayCertificate {
                source: cert.source.clone(),
                cert: served,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(GatewayCertificates { certificates })
}

#[cfg(test)]
mod tests {
    use super::super::tests::key;
    use super::super::{resource, Converted};
    use super::*;
    use crate::discovery::cache::Cache;
    use pb::resource::Body;

    fn pair(hosts: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    }

    fn cert(source: &str, (chain_pem, key_pem): (Vec<u8>, Vec<u8>)) -> pb::GatewayCertificate {
        pb::GatewayCertificate {
            source: source.into(),
            chain_pem,
            key_pem,
        }
    }

    fn certs_resource(version: &str, certs: Vec<pb::GatewayCertificate>) -> pb::Resource {
        pb::Resource {
            key: key(pb::ResourceType::GatewayCertificates, "shop-gw.shop"),
            version: version.into(),
            body: Some(Body::GatewayCertificates(pb::GatewayCertificates {
                certificates: certs,
            })),
        }
    }

    fn response(resources: Vec<pb::Resource>) -> pb::DiscoveryResponse {
        pb::DiscoveryResponse {
            nonce: "n".into(),
            resources,
            ..Default::default()
        }
    }

    #[test]
    fn gateway_certificates_reach_the_snapshot_without_their_keys() {
        let mut cache = Cache::default();
        let r = certs_resource(
            "c1",
            vec![
                cert("shop/www-tls", pair(&["a.test"])),
                cert("shop/api-tls", pair(&["*.api.test"])),
            ],
        );
        cache.apply(&response(vec![r])).unwrap();
        let snap = cache.snapshot(&[]);
        let held = &snap.gateway_certificates["shop-gw.shop"];
        assert_eq!(held.certificates.len(), 2);
        assert_eq!(held.certificates[0].source, "shop/www-tls");
        assert_eq!(held.certificates[1].cert.names, ["*.api.test"]);
        assert_eq!(
            snap.versions["gateway_certificates/shop-gw.shop"], "c1",
            "versioned like every resource"
        );
        assert!(cache
            .known()
            .iter()
            .any(|v| v.key.as_ref().map(|k| k.r#type)
                == Some(pb::ResourceType::GatewayCertificates as i32)));

        // Neither the JSON of /config_dump nor a debug print holds a key.
        let json = serde_json::to_string(&snap).unwrap();
        let debug = format!("{snap:?}");
        for shown in [&json, &debug] {
            assert!(
                shown.contains("shop/www-tls") && shown.contains("a.test"),
                "{shown}"
            );
            assert!(!shown.contains("PRIVATE"), "{shown}");
        }
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let first = &v["gateway_certificates"]["shop-gw.shop"]["certificates"][0];
        let mut fields: Vec<_> = first.as_object().unwrap().keys().cloned().collect();
        fields.sort();
        assert_eq!(fields, ["names", "not_after_unix", "source"]);

        // An empty list: none any more.
        cache
            .apply(&response(vec![certs_resource("c2", vec![])]))
            .unwrap();
        assert!(cache.snapshot(&[]).gateway_certificates["shop-gw.shop"]
            .certificates
            .is_empty());
    }

    #[test]
    fn bad_gateway_certificates_nack_naming_the_secret_and_keep_the_last_good_set() {
        let good = cert("shop/good", pair(&["a.test"]));
        let mut cache = Cache::default();
        cache
            .apply(&response(vec![certs_resource("c1", vec![good.clone()])]))
            .unwrap();

        let (chain, own_key) = pair(&["b.test"]);
        let (_, other_key) = pair(&["c.test"]);
        let no_san = pair(&[]);
        let cases = [
            (
                cert("shop/empty", (vec![], own_key.clone())),
                "certificates[1].chain_pem",
                "no CERTIFICATE block",
            ),
            (
                cert("shop/garbage", (b"not a pem".to_vec(), own_key.clone())),
                "certificates[1].chain_pem",
                "no CERTIFICATE block",
            ),
            (
                cert("shop/garbage-key", (chain.clone(), b"junk".to_vec())),
                "certificates[1].key_pem",
                "no PRIVATE KEY block",
            ),
            (
                cert("shop/swapped", (chain.clone(), other_key)),
                "certificates[1].key_pem",
                "does not belong to the certificate",
            ),
            (
                cert("shop/no-san", no_san),
                "certificates[1].chain_pem",
                "names no DNS host",
            ),
            (
                cert("", (chain, own_key)),
                "certificates[1].source",
                "missing",
            ),
        ];
        for (bad, field, want) in cases {
            let source = bad.source.clone();
            let r = certs_resource("c2", vec![good.clone(), bad]);
            let e = cache.apply(&response(vec![r])).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(field) && msg.contains(want) && msg.contains(&source),
                "{source}: {msg}"
            );
            assert!(!msg.contains("PRIVATE KEY-----"), "{msg}");
            let snap = cache.snapshot(&[]);
            assert_eq!(snap.versions["gateway_certificates/shop-gw.shop"], "c1");
            assert_eq!(
                snap.gateway_certificates["shop-gw.shop"].certificates[0].source,
                "shop/good"
            );
        }
    }

    #[test]
    fn gateway_certificates_keys_and_bodies_are_checked() {
        let mut r = certs_resource("c1", vec![]);
        r.key = key(pb::ResourceType::GatewayCertificates, "not a key");
        let e = resource(0, &r).unwrap_err();
        assert_eq!(e.field, "key.name", "{e}");

        let mut r = certs_resource("c1", vec![]);
        r.body = Some(Body::Routes(pb::Routes::default()));
        let e = resource(0, &r).unwrap_err();
        assert_eq!(e.field, "body", "{e}");

        // `not_found` (no such Gateway) holds no certificates.
        let mut r = certs_resource("c1", vec![]);
        r.body = Some(Body::NotFound(pb::NotFound::default()));
        match resource(0, &r).unwrap() {
            Converted::GatewayCertificates { key, certs } => {
                assert_eq!(key, "shop-gw.shop");
                assert!(certs.certificates.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}
