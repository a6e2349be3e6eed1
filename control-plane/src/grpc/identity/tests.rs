use std::time::Duration;

use tonic::Code;

use super::*;
use crate::ca::tokens::{create_token, revoke_token, TokenSpec};

fn spec(ns: &str, sa: &str) -> TokenSpec {
    TokenSpec {
        namespace: ns.into(),
        service_account: sa.into(),
        ..TokenSpec::default()
    }
}

fn service(dir: &std::path::Path) -> IdentityService {
    let ca = Authority::load_or_generate(dir, "cluster.local", Duration::from_secs(3600)).unwrap();
    let tokens = TokenStore::new(dir).unwrap();
    IdentityService::new(Arc::new(ca), Arc::new(tokens), Arc::new(Metrics::new()))
}

fn csr() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(vec!["x.example".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec()
}

fn req(token: &str, csr: Vec<u8>) -> CertifyRequest {
    CertifyRequest {
        token: token.into(),
        csr_der: csr,
        requested_ttl_seconds: 0,
    }
}

#[test]
fn errors_map_to_codes_and_bounded_labels() {
    let cases = [
        (
            CertifyError::Auth(AuthError::Missing),
            Code::Unauthenticated,
            "unauthenticated",
        ),
        (
            CertifyError::Auth(AuthError::Malformed),
            Code::Unauthenticated,
            "unauthenticated",
        ),
        (
            CertifyError::Auth(AuthError::Unknown),
            Code::PermissionDenied,
            "unknown_token",
        ),
        (
            CertifyError::Auth(AuthError::Expired {
                id: "x".into(),
                at: 1,
            }),
            Code::PermissionDenied,
            "expired",
        ),
        (
            CertifyError::Auth(AuthError::Revoked("x".into())),
            Code::PermissionDenied,
            "revoked",
        ),
        (
            CertifyError::Auth(AuthError::Store("x".into())),
            Code::Unavailable,
            "error",
        ),
        (
            CertifyError::Limited(Limited::PerIp),
            Code::ResourceExhausted,
            "rate_limited",
        ),
        (CertifyError::EmptyCsr, Code::InvalidArgument, "invalid_csr"),
    ];
    for (e, code, label) in cases {
        assert_eq!(e.label(), label);
        assert_eq!(Status::from(e).code(), code, "{label}");
    }
}

#[tokio::test]
async fn certify_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let (good, rec) = create_token(dir.path(), &spec("shop", "catalog")).unwrap();
    let ok = svc
        .certify(Request::new(req(&good, csr())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.spiffe_id, "spiffe://cluster.local/ns/shop/sa/catalog");
    assert_eq!(ok.chain_der.len(), 2);
    // The leaf carries its token id, and still exactly one SPIFFE ID.
    assert_eq!(
        token_id_from_cert_der(&ok.chain_der[0]).as_deref(),
        Some(rec.id())
    );
    assert_eq!(
        SpiffeId::from_cert_der(&ok.chain_der[0])
            .unwrap()
            .to_string(),
        ok.spiffe_id
    );

    let e = svc.certify(Request::new(req("", csr()))).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unauthenticated, "missing join token")
    );
    let unknown = format!("mycel.{}", "ab".repeat(32));
    let e = svc
        .certify(Request::new(req(&unknown, csr())))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = svc
        .certify(Request::new(req(&good, vec![])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = svc
        .certify(Request::new(req(&good, vec![1, 2, 3])))
        .await
        .unwrap_err();
    assert!(e.message().contains("CSR"), "{}", e.message());
    let text = svc.metrics.encode();
    assert!(text.contains("result=\"ok\"} 1"), "{text}");
    assert!(text.contains("result=\"invalid_csr\"} 2"), "{text}");
    assert!(text.contains("result=\"unknown_token\"} 1"), "{text}");
}

#[tokio::test]
async fn renewal_is_authenticated_by_the_current_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let (token, rec) = create_token(dir.path(), &spec("shop", "catalog")).unwrap();
    let first = svc.certify_inner(None, &req(&token, csr())).await.unwrap();
    let leaf = first.chain_der[0].clone();
    // The token in the request is ignored on renewal (even a bogus one).
    let renewed = svc
        .certify_inner(Some(&leaf), &req("garbage", csr()))
        .await
        .unwrap();
    assert_eq!(renewed.spiffe_id, first.spiffe_id);
    assert_eq!(
        token_id_from_cert_der(&renewed.chain_der[0]).as_deref(),
        Some(rec.id())
    );

    revoke_token(dir.path(), rec.id()).unwrap();
    // The store looks at the file at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = svc
        .certify_inner(Some(&leaf), &req(&token, csr()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CertifyError::Auth(AuthError::Revoked(_))),
        "{e}"
    );
    let e = svc
        .certify_inner(None, &req(&token, csr()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CertifyError::Auth(AuthError::Revoked(_))),
        "{e}"
    );
}
