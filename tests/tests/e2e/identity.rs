//! The controller's CA: what a join token can and cannot get.

use mycel_api::v1::identity_client::IdentityClient;
use mycel_api::v1::CertifyRequest;
use mycel_test_support::ca::Csr;
use mycel_tests::grpc;
use mycel_tests::mesh::{spiffe, Mesh};
use mycel_tests::shop::mesh_yaml;
use tonic::transport::Channel;

async fn identity_client(mesh: &Mesh) -> IdentityClient<Channel> {
    IdentityClient::new(grpc::controller(mesh, None).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_for_another_identity_gets_the_tokens_identity_only() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let token = std::fs::read_to_string(mesh.token("shop", "frontend")).unwrap();
    let mut client = identity_client(&mesh).await;
    let wanted = spiffe("kube-system", "admin");
    let reply = client
        .certify(CertifyRequest {
            token,
            csr_der: Csr::asking_for(&wanted).der,
            requested_ttl_seconds: 0,
        })
        .await;
    let reply = match reply {
        // Refusing outright is also acceptable; issuing the asked identity is not.
        Err(status) => {
            assert_ne!(status.code(), tonic::Code::Ok);
            return;
        }
        Ok(r) => r.into_inner(),
    };
    assert_eq!(reply.spiffe_id, spiffe("shop", "frontend"));
    let leaf = reply.chain_der.first().expect("leaf");
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
    let text = format!("{:?}", cert.subject_alternative_name());
    assert!(text.contains(&spiffe("shop", "frontend")), "{text}");
    assert!(
        !text.contains("admin"),
        "leaf carries the asked identity: {text}"
    );
    assert!(
        !cert.subject().to_string().contains("admin"),
        "leaf subject copied from the CSR: {}",
        cert.subject()
    );
    // Default lifetime is 24 hours.
    let life = reply.not_after_unix - reply.not_before_unix;
    assert!((86_000..=86_500).contains(&life), "lifetime {life}s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_refused_clearly() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let mut client = identity_client(&mesh).await;
    for (token, what) in [
        ("", "missing token"),
        (
            "mycel.0000000000000000000000000000000000000000000000000000000000000000",
            "unknown token",
        ),
    ] {
        let err = client
            .certify(CertifyRequest {
                token: token.into(),
                csr_der: Csr::asking_for(&spiffe("shop", "x")).der,
                requested_ttl_seconds: 0,
            })
            .await
            .expect_err(what);
        assert!(
            matches!(
                err.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ),
            "{what}: {err:?}"
        );
        assert!(
            !err.message().is_empty(),
            "{what}: status without a message"
        );
    }
}
