//! Real keys, real signatures: tokens signed with jsonwebtoken, JWKS built
//! from the public halves, served from files, a counting fetcher and a
//! local HTTP server on 127.0.0.1.
//!
//! The RSA keys in testdata/ were generated for these tests only (rcgen
//! with ring cannot make RSA keys); they protect nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Mutex;

use base64::Engine;
use bytes::Bytes;
use http::HeaderName;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::jwks::{FileFetch, HttpFetch, Keys};
use super::*;

const RSA_A: &[u8] = include_bytes!("testdata/rsa-a.pem");
const RSA_B: &[u8] = include_bytes!("testdata/rsa-b.pem");
const RSA_A_PUBLIC: &[u8] = include_bytes!("testdata/rsa-a.pub.pem");
const ISS: &str = "https://issuer.test";
const AUD: &str = "mycel-api";

/// A private key to sign with and its public JWK.
struct TestKey {
    enc: EncodingKey,
    alg: Algorithm,
    kid: String,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_key(pem: &[u8], kid: &str) -> TestKey {
    let enc = EncodingKey::from_rsa_pem(pem).expect("test RSA key");
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::RS256).expect("jwk"))
            .expect("json");
    jwk["kid"] = json!(kid);
    TestKey {
        enc,
        alg: Algorithm::RS256,
        kid: kid.into(),
        jwk,
    }
}

fn ec_key(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 65);
    TestKey {
        enc: EncodingKey::from_ec_der(&pair.serialize_der()),
        alg: Algorithm::ES256,
        kid: kid.into(),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..])}),
    }
}

fn ed_key(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
    TestKey {
        enc: EncodingKey::from_ed_der(&pair.serialize_der()),
        alg: Algorithm::EdDSA,
        kid: kid.into(),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(pair.public_key_raw())}),
    }
}

fn jwks(keys: &[&TestKey]) -> Bytes {
    Bytes::from(json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string())
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims valid for the next hour.
fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 3600, "iat": now()})
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.enc).expect("sign")
}

/// A token from raw header and claims JSON and signature bytes.
fn raw_token(header: Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

/// Serves a JWKS from memory and counts fetches.
struct MemFetch {
    body: Mutex<Result<Bytes, u16>>,
    fetches: AtomicUsize,
}

impl MemFetch {
    fn new(body: Bytes) -> Arc<MemFetch> {
        Arc::new(MemFetch {
            body: Mutex::new(Ok(body)),
            fetches: AtomicUsize::new(0),
        })
    }

    fn set(&self, body: Result<Bytes, u16>) {
        *self.body.lock().expect("lock") = body;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// Shared, so a test can change what it serves after handing it over.
struct Shared(Arc<MemFetch>);

impl JwksFetch for Shared {
    fn name(&self) -> String {
        "memory".into()
    }

    fn fetch(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, JwksError>> + Send + '_>>
    {
        self.0.fetches.fetch_add(1, Ordering::SeqCst);
        let body = self.0.body.lock().expect("lock").clone();
        Box::pin(async move {
            body.map_err(|status| JwksError::Status {
                source_name: "memory".into(),
                status,
            })
        })
    }
}

fn rule() -> JwtRule {
    let mut r = JwtRule::new(ISS, JwksSource::File("unused".into()));
    r.audiences = vec![AUD.into(), "other".into()];
    r
}

async fn verifier_with(rule: JwtRule, keys: &[&TestKey]) -> (JwtVerifier, Arc<MemFetch>) {
    let mem = MemFetch::new(jwks(keys));
    let set = KeySet::load(Box::new(Shared(mem.clone())), rule.refresh)
        .await
        .expect("load");
    (JwtVerifier::new(Arc::new(rule), set).expect("rule"), mem)
}

async fn verifier(keys: &[&TestKey]) -> JwtVerifier {
    verifier_with(rule(), keys).await.0
}

#[tokio::test]
async fn valid_tokens_of_each_algorithm() {
    let (rsa, ec, ed) = (rsa_key(RSA_A, "rsa"), ec_key("ec"), ed_key("ed"));
    let v = verifier(&[&rsa, &ec, &ed]).await;
    for key in [&rsa, &ec, &ed] {
        let got = v.verify(&bearer(&sign(key, &claims()))).await;
        let got = got.unwrap_or_else(|e| panic!("{:?}: {e}", key.alg));
        assert_eq!(got.subject(), Some("alice"));
        assert_eq!(got.alg, key.alg);
        assert_eq!(got.kid.as_deref(), Some(key.kid.as_str()));
    }
}

#[tokio::test]
async fn token_without_kid_is_tried_against_keys_of_its_algorithm() {
    let (rsa_b, rsa_a) = (rsa_key(RSA_B, "b"), rsa_key(RSA_A, "a"));
    let v = verifier(&[&rsa_b, &rsa_a]).await;
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims(), &rsa_a.enc).expect("sign");
    let got = v
        .verify(&bearer(&token))
        .await
        .expect("second key verifies");
    assert_eq!(got.kid, None);
    let ec = ec_key("ec");
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(), &ec.enc).expect("sign");
    assert_eq!(
        v.verify(&bearer(&token)).await,
        Err(JwtError::UnknownKey { kid: None })
    );
}

#[tokio::test]
async fn expiry_and_not_before_with_leeway() {
    let key = ec_key("k");
    let v = verifier(&[&key]).await;
    let mut c = claims();
    c["exp"] = json!(now() - 120);
    assert_eq!(
        v.verify(&bearer(&sign(&key, &c))).await,
        Err(JwtError::Expired)
    );
    // Within the 30 s leeway: a clock a little behind the issuer's.
    c["exp"] = json!(now() - 10);
    assert!(v.verify(&bearer(&sign(&key, &c))).await.is_ok());
    let mut c = claims();
    c["nbf"] = json!(now() + 120);
    assert_eq!(
        v.verify(&bearer(&sign(&key, &c))).await,
        Err(JwtError::NotYetValid)
    );
    c["nbf"] = json!(now() + 10);
    assert!(v.verify(&bearer(&sign(&key, &c))).await.is_ok());
    // No exp at all: a token that never expires is refused.
    let mut c = claims();
    c.as_object_mut().expect("object").remove("exp");
    assert!(matches!(
        v.verify(&bearer(&sign(&key, &c))).await,
        Err(JwtError::Malformed(_))
    ));
    c["exp"] = json!("tomorrow");
    assert!(matches!(
        v.verify(&bearer(&sign(&key, &c))).await,
        Err(JwtError::Malformed(_))
    ));
}

#[tokio::test]
async fn issuer_and_audience() {
    let key = ec_key("k");
    let v = verifier(&[&key]).await;
    let check = |c: Value| {
        let token = sign(&key, &c);
        let v = &v;
        async move { v.verify(&bearer(&token)).await }
    };
    let mut c = claims();
    c["aud"] = json!("someone-else");
    assert_eq!(check(c.clone()).await, Err(JwtError::WrongAudience));
    c["aud"] = json!(["someone-else", "other"]);
    assert!(check(c.clone()).await.is_ok(), "any one audience is enough");
    c.as_object_mut().expect("object").remove("aud");
    assert_eq!(
        check(c).await,
        Err(JwtError::WrongAudience),
        "no aud at all"
    );
    let mut c = claims();
    c["iss"] = json!("https://evil.test");
    assert_eq!(check(c.clone()).await, Err(JwtError::WrongIssuer));
    c.as_object_mut().expect("object").remove("iss");
    assert_eq!(check(c).await, Err(JwtError::WrongIssuer), "no iss at all");

    // No audiences configured: aud is not checked.
    let mut r = rule();
    r.audiences.clear();
    let (v, _) = verifier_with(r, &[&key]).await;
    let mut c = claims();
    c["aud"] = json!("anyone");
    assert!(v.verify(&bearer(&sign(&key, &c))).await.is_ok());
}

#[tokio::test]
async fn wrong_key_with_the_same_kid_is_a_bad_signature() {
    let served = rsa_key(RSA_A, "k");
    let attacker = rsa_key(RSA_B, "k");
    let v = verifier(&[&served]).await;
    assert_eq!(
        v.verify(&bearer(&sign(&attacker, &claims()))).await,
        Err(JwtError::BadSignature)
    );
    // The signature is checked before the claims: an expired token from
    // the wrong key says nothing about its claims.
    let mut c = claims();
    c["exp"] = json!(now() - 3600);
    assert_eq!(
        v.verify(&bearer(&sign(&attacker, &c))).await,
        Err(JwtError::BadSignature)
    );
    // A valid token with its signature bytes altered.
    let token = sign(&served, &claims());
    let (rest, sig) = token.rsplit_once('.').expect("three parts");
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .expect("b64");
    sig[10] ^= 1;
    let forged = format!("{rest}.{}", b64(&sig));
    assert_eq!(
        v.verify(&bearer(&forged)).await,
        Err(JwtError::BadSignature)
    );
    // Claims changed after signing.
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("admin");
    let body = b64(c.to_string().as_bytes());
    parts[1] = &body;
    assert_eq!(
        v.verify(&bearer(&parts.join("."))).await,
        Err(JwtError::BadSignature)
    );
}

#[tokio::test]
async fn unknown_kid_refreshes_once_and_finds_a_rotated_key() {
    let old = ec_key("old");
    let new = ed_key("new");
    let (v, mem) = verifier_with(rule(), &[&old]).await;
    assert_eq!(mem.fetches(), 1);
    // The issuer rotates: the set now has both keys.
    mem.set(Ok(jwks(&[&old, &new])));
    let got = v
        .verify(&bearer(&sign(&new, &claims())))
        .await
        .expect("rotated key found");
    assert_eq!(got.kid.as_deref(), Some("new"));
    assert_eq!(mem.fetches(), 2);
    let summary = v.keys().summary();
    assert_eq!(summary.kids, ["old", "new"]);
    assert_eq!((summary.source.as_str(), summary.keys), ("memory", 2));
    // Known now: no more fetches.
    v.verify(&bearer(&sign(&new, &claims())))
        .await
        .expect("verifies");
    assert_eq!(mem.fetches(), 2);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_makes_at_most_one_refresh_per_gap() {
    let key = ec_key("k");
    let mut r = rule();
    r.refresh.unknown_kid_gap = Duration::from_millis(300);
    let (v, mem) = verifier_with(r, &[&key]).await;
    let v = Arc::new(v);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let v = v.clone();
        let token = {
            let mut k = ec_key("x");
            k.kid = format!("random-{i}");
            sign(&k, &claims())
        };
        tasks.push(tokio::spawn(async move { v.verify(&bearer(&token)).await }));
    }
    for t in tasks {
        let got = t.await.expect("task");
        assert!(
            matches!(got, Err(JwtError::UnknownKey { kid: Some(_) })),
            "{got:?}"
        );
    }
    assert_eq!(mem.fetches(), 2, "the load and one refresh");
    // After the gap, one more is allowed.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut k = ec_key("x");
    k.kid = "later".into();
    let _ = v.verify(&bearer(&sign(&k, &claims()))).await;
    let _ = v.verify(&bearer(&sign(&k, &claims()))).await;
    assert_eq!(mem.fetches(), 3);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let key = rsa_key(RSA_A, "k");
    let v = verifier(&[&key]).await;
    for alg in ["none", "None", "NONE"] {
        let token = raw_token(json!({"alg": alg, "kid": "k"}), &claims(), b"");
        let got = v.verify(&bearer(&token)).await;
        assert!(
            matches!(got, Err(JwtError::AlgorithmNotAllowed { .. })),
            "{alg}: {got:?}"
        );
        // The same with the signature part left out entirely.
        let token = token.trim_end_matches('.').to_string();
        assert!(v.verify(&bearer(&token)).await.is_err());
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The HS/RS confusion attack: the attacker knows the issuer's public
    // key and uses its bytes as the HMAC secret.
    let key = rsa_key(RSA_A, "k");
    let v = verifier(&[&key]).await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(RSA_A_PUBLIC).expect("secret"),
    )
    .expect("sign");
    assert_eq!(
        v.verify(&bearer(&forged)).await,
        Err(JwtError::AlgorithmNotAllowed {
            alg: "HS256".into()
        })
    );
    // Below the rule's algorithm list: jsonwebtoken itself refuses to use
    // an RSA key as an HMAC secret, even when told HS256 is fine.
    let keys = v.keys().keys();
    let rsa_decoding = &keys.by_kid("k").expect("key").decoding;
    let mut lax = Validation::new(Algorithm::HS256);
    lax.validate_aud = false;
    let got = jsonwebtoken::decode::<Value>(&forged, rsa_decoding, &lax)
        .expect_err("asymmetric key refused");
    assert_eq!(error_of(got.kind()), JwtError::BadSignature, "{got:?}");
    assert!(
        matches!(
            got.kind(),
            ErrorKind::InvalidKeyFormat | ErrorKind::InvalidAlgorithm
        ),
        "{got:?}"
    );
    // And our own key check: an RSA key never allows HS*.
    assert!(!jwks::KeyKind::Rsa.allows(Algorithm::HS256));
    // Nor can HS256 be configured.
    let mut r = rule();
    r.algorithms.push(Algorithm::HS256);
    let err = r.check().expect_err("HS256 refused");
    assert!(
        err.to_string().contains("HS256") && err.to_string().contains("symmetric"),
        "{err}"
    );
    assert!(matches!(
        parse_algorithm("HS512"),
        Err(JwtConfigError::Symmetric(_))
    ));
    assert!(matches!(
        parse_algorithm("none"),
        Err(JwtConfigError::NoneAlgorithm)
    ));
    assert!(matches!(
        parse_algorithm("XS1"),
        Err(JwtConfigError::UnknownAlgorithm(_))
    ));
    assert_eq!(parse_algorithm("EdDSA").expect("EdDSA"), Algorithm::EdDSA);
}

#[tokio::test]
async fn an_algorithm_the_key_does_not_fit_is_refused() {
    // The token says ES256 and names an RSA key; ES256 is allowed.
    let rsa = rsa_key(RSA_A, "k");
    let v = verifier(&[&rsa]).await;
    let mut ec = ec_key("k");
    ec.kid = "k".into();
    assert_eq!(
        v.verify(&bearer(&sign(&ec, &claims()))).await,
        Err(JwtError::AlgorithmNotAllowed {
            alg: "ES256".into()
        })
    );
    // Allowed by the key, not by the rule.
    let mut r = rule();
    r.algorithms = vec![Algorithm::ES256];
    let (v, _) = verifier_with(r, &[&rsa]).await;
    assert!(matches!(
        v.verify(&bearer(&sign(&rsa, &claims()))).await,
        Err(JwtError::AlgorithmNotAllowed { .. })
    ));
}

#[tokio::test]
async fn oversized_garbage_and_missing_tokens() {
    let key = ec_key("k");
    let v = verifier(&[&key]).await;
    let mut big = claims();
    big["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
    let got = v.verify(&bearer(&sign(&key, &big))).await;
    assert_eq!(got, Err(JwtError::Malformed("token over the size limit")));
    for garbage in [
        "abc",
        "a.b.c",
        "a.b.c.d.e",
        "....",
        "eyJhbGciOiJFUzI1NiJ9.x.y",
        "Zm9v.e30.e30",
    ] {
        let got = v.verify(&bearer(garbage)).await;
        assert!(
            matches!(got, Err(JwtError::Malformed(_))),
            "{garbage}: {got:?}"
        );
    }
    // A header naming critical extensions.
    let token = raw_token(
        json!({"alg": "ES256", "kid": "k", "crit": ["exp"]}),
        &claims(),
        b"sig",
    );
    assert!(matches!(
        v.verify(&bearer(&token)).await,
        Err(JwtError::Malformed(_))
    ));
    assert_eq!(v.verify(&HeaderMap::new()).await, Err(JwtError::Missing));
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_static("Basic YWxpY2U6c2VjcmV0"),
    );
    assert_eq!(v.verify(&h).await, Err(JwtError::Missing));
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer "),
    );
    assert_eq!(v.verify(&h).await, Err(JwtError::Missing));
    let token = sign(&key, &claims());
    let mut h = bearer(&token);
    h.append(
        http::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer x"),
    );
    assert!(matches!(v.verify(&h).await, Err(JwtError::Malformed(_))));
    // The scheme is case-insensitive (RFC 7235).
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("bearer {token}")).expect("value"),
    );
    assert!(v.verify(&h).await.is_ok());
}

#[tokio::test]
async fn token_from_another_header() {
    let key = ec_key("k");
    let mut r = rule();
    r.token_source = TokenSource::Header(HeaderName::from_static("x-jwt-assertion"));
    let (v, _) = verifier_with(r, &[&key]).await;
    let mut h = HeaderMap::new();
    h.insert(
        "x-jwt-assertion",
        HeaderValue::from_str(&sign(&key, &claims())).expect("value"),
    );
    assert!(v.verify(&h).await.is_ok());
    assert_eq!(
        v.verify(&bearer(&sign(&key, &claims()))).await,
        Err(JwtError::Missing)
    );
}

#[tokio::test]
async fn required_claims_answer_403() {
    let key = ec_key("k");
    let mut r = rule();
    r.required_claims = vec![
        RequiredClaim {
            name: "scope".into(),
            requirement: ClaimRequirement::Equals("orders:read".into()),
        },
        RequiredClaim {
            name: "groups".into(),
            requirement: ClaimRequirement::Equals("ops".into()),
        },
        RequiredClaim {
            name: "tenant".into(),
            requirement: ClaimRequirement::Present,
        },
    ];
    let (v, _) = verifier_with(r, &[&key]).await;
    let mut c = claims();
    c["scope"] = json!("profile orders:read");
    c["groups"] = json!(["dev", "ops"]);
    c["tenant"] = json!(7);
    assert!(v.verify(&bearer(&sign(&key, &c))).await.is_ok());

    let mut missing = c.clone();
    missing.as_object_mut().expect("object").remove("tenant");
    let err = v
        .verify(&bearer(&sign(&key, &missing)))
        .await
        .expect_err("403");
    assert_eq!(
        err,
        JwtError::MissingClaim {
            name: "tenant".into()
        }
    );
    let (status, value) = err.challenge();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        value,
        "Bearer realm=\"mycel\", error=\"insufficient_scope\", error_description=\"required claim missing\""
    );

    let mut wrong = c.clone();
    wrong["scope"] = json!("orders:readx profile");
    let err = v
        .verify(&bearer(&sign(&key, &wrong)))
        .await
        .expect_err("403");
    assert_eq!(
        err,
        JwtError::WrongClaim {
            name: "scope".into()
        }
    );
    assert_eq!(err.challenge().0, StatusCode::FORBIDDEN);
    let mut wrong = c;
    wrong["groups"] = json!("dev");
    assert_eq!(
        v.verify(&bearer(&sign(&key, &wrong))).await,
        Err(JwtError::WrongClaim {
            name: "groups".into()
        })
    );
}

#[test]
fn challenges_follow_rfc_6750() {
    let (status, value) = JwtError::Missing.challenge();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(value, "Bearer realm=\"mycel\"");
    let (status, value) = JwtError::Expired.challenge();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        value,
        "Bearer realm=\"mycel\", error=\"invalid_token\", error_description=\"token expired\""
    );
    for e in [
        JwtError::Malformed("x"),
        JwtError::UnknownKey {
            kid: Some("\"\r\n".into()),
        },
        JwtError::BadSignature,
        JwtError::AlgorithmNotAllowed { alg: "none".into() },
        JwtError::NotYetValid,
        JwtError::WrongIssuer,
        JwtError::WrongAudience,
    ] {
        let (status, value) = e.challenge();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{e}");
        let value = value.to_str().expect("ascii");
        assert!(value.contains("error=\"invalid_token\""), "{e}: {value}");
        assert!(
            !value.contains('\r') && !value.contains("none"),
            "no token text: {value}"
        );
    }
}

#[tokio::test]
async fn claims_are_forwarded_and_client_copies_stripped() {
    let key = ec_key("k");
    let mut r = rule();
    let fwd = |claim: &str, header: &'static str| ForwardClaim {
        claim: claim.into(),
        header: HeaderName::from_static(header),
    };
    r.forward = vec![
        fwd("sub", "x-user"),
        fwd("tenant", "x-tenant"),
        fwd("admin", "x-admin"),
        fwd("groups", "x-groups"),
        fwd("name", "x-name"),
        fwd("absent", "x-absent"),
    ];
    let (v, _) = verifier_with(r.clone(), &[&key]).await;
    let mut c = claims();
    c["tenant"] = json!(42);
    c["admin"] = json!(false);
    c["groups"] = json!(["a", "b"]);
    c["name"] = json!("line\r\nx-injected: 1");
    let mut headers = bearer(&sign(&key, &c));
    // What a client tries to slip through.
    for h in ["x-user", "x-absent", "x-name", "x-tenant"] {
        headers.append(h, HeaderValue::from_static("forged"));
        headers.append(h, HeaderValue::from_static("forged-again"));
    }
    let claims = v.verify(&headers).await.expect("valid");
    forward_claims(&claims, &r, &mut headers);
    assert_eq!(headers["x-user"], "alice");
    assert_eq!(headers.get_all("x-user").iter().count(), 1);
    assert_eq!(headers["x-tenant"], "42");
    assert_eq!(headers["x-admin"], "false");
    assert_eq!(headers["x-groups"], "[\"a\",\"b\"]");
    assert!(
        !headers.contains_key("x-name"),
        "not a header value: dropped"
    );
    assert!(!headers.contains_key("x-absent"));
    assert!(!headers.contains_key("x-injected"));
    assert!(
        headers.contains_key(http::header::AUTHORIZATION),
        "token kept by default"
    );

    r.forward_token = false;
    forward_claims(&claims, &r, &mut headers);
    assert!(!headers.contains_key(http::header::AUTHORIZATION));
    assert_eq!(headers["x-user"], "alice");

    // Without a verified token, the headers still go.
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_static("forged"));
    strip_forwarded(&r, &mut headers);
    assert!(headers.is_empty());
}

#[test]
fn rule_checks() {
    assert!(rule().check().is_ok());
    let mut r = rule();
    r.forward = vec![ForwardClaim {
        claim: "sub".into(),
        header: http::header::HOST,
    }];
    assert!(matches!(r.check(), Err(JwtConfigError::ReservedHeader(_))));
    let mut r = rule();
    let f = ForwardClaim {
        claim: "sub".into(),
        header: HeaderName::from_static("x-user"),
    };
    r.forward = vec![f.clone(), f];
    assert!(matches!(r.check(), Err(JwtConfigError::DuplicateHeader(_))));
    let mut r = rule();
    r.issuer.clear();
    assert!(matches!(r.check(), Err(JwtConfigError::NoIssuer)));
    let mut r = rule();
    r.algorithms.clear();
    assert!(matches!(r.check(), Err(JwtConfigError::NoAlgorithm)));
    let mut r = rule();
    r.leeway = Duration::from_secs(3600);
    assert!(matches!(r.check(), Err(JwtConfigError::Leeway { .. })));
    let mut r = rule();
    r.jwks = JwksSource::Url("https://issuer.test/jwks".parse().expect("uri"));
    let err = r.check().expect_err("https refused for now");
    assert!(err.to_string().contains("only http://"), "{err}");
    r.jwks = JwksSource::Url("http://issuer.test/jwks".parse().expect("uri"));
    assert!(r.check().is_ok());
}

#[test]
fn bad_jwks_entries_are_skipped() {
    let good = ec_key("good");
    let rsa = rsa_key(RSA_A, "rsa");
    let set = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "short", "x": "AAAA", "y": "AAAA"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "weak", "n": b64(&[0xc5; 128]), "e": "AQAB"},
        {"kty": "RSA", "kid": "huge", "n": b64(&[0xc5; 1025]), "e": "AQAB"},
        {"kty": "RSA", "kid": "bad64", "n": "!!!", "e": "AQAB"},
        {"kty": "XYZ", "kid": "alien"},
        {"kid": 5},
        "not an object",
        {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": good.jwk["x"], "y": good.jwk["y"]},
        {"kty": "EC", "crv": "P-256", "kid": "wrong-alg", "alg": "RS256", "x": good.jwk["x"], "y": good.jwk["y"]},
        {"kty": "EC", "crv": "P-256", "kid": "hs-alg", "alg": "HS256", "x": good.jwk["x"], "y": good.jwk["y"]},
        good.jwk,
        rsa.jwk,
    ]});
    let keys = Keys::parse("test.json", set.to_string().as_bytes()).expect("usable keys left");
    assert_eq!(keys.len(), 2);
    assert!(keys.by_kid("good").is_some() && keys.by_kid("rsa").is_some());
    for skipped in [
        "short",
        "hmac",
        "weak",
        "bad64",
        "alien",
        "enc",
        "wrong-alg",
        "hs-alg",
    ] {
        assert!(keys.by_kid(skipped).is_none(), "{skipped}");
    }
    // Past the cap, the rest of a set is not read.
    let many: Vec<Value> = (0..jwks::MAX_KEYS + 5)
        .map(|i| {
            let mut k = good.jwk.clone();
            k["kid"] = json!(format!("k{i}"));
            k
        })
        .collect();
    let keys = Keys::parse("many", json!({ "keys": many }).to_string().as_bytes()).expect("keys");
    assert_eq!(keys.len(), jwks::MAX_KEYS);
    let none_usable = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
    let err = Keys::parse("/etc/mycel/jwks.json", none_usable.to_string().as_bytes())
        .expect_err("no key");
    assert!(matches!(err, JwksError::NoUsableKey { total: 1, .. }));
    assert!(err.to_string().contains("/etc/mycel/jwks.json"), "{err}");
    let err = Keys::parse("x", b"{\"keys\": {}}").expect_err("not a set");
    assert!(matches!(err, JwksError::Parse { .. }));
}

#[tokio::test]
async fn jwks_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    let key = ed_key("k");
    std::fs::write(&path, jwks(&[&key])).expect("write");
    let fetch = KeySet::fetcher(
        &JwksSource::File(path.clone()),
        Duration::from_secs(1),
        1024,
    )
    .expect("fetcher");
    let set = KeySet::load(fetch, RefreshSettings::default())
        .await
        .expect("load");
    let v = JwtVerifier::new(Arc::new(rule()), set.clone()).expect("rule");
    assert!(v.verify(&bearer(&sign(&key, &claims()))).await.is_ok());
    // Over the cap: refused, keys kept.
    std::fs::write(&path, vec![b' '; 2048]).expect("write");
    let err = set.refresh().await.expect_err("too large");
    assert!(
        matches!(err, JwksError::TooLarge { max: 1024, .. }),
        "{err}"
    );
    assert_eq!(set.keys().len(), 1);
    // A bad edit: keys kept.
    std::fs::write(&path, b"{\"keys\": [").expect("write");
    assert!(set.refresh().await.is_err());
    assert!(v.verify(&bearer(&sign(&key, &claims()))).await.is_ok());
    std::fs::remove_file(&path).expect("remove");
    let err = set.refresh().await.expect_err("gone");
    assert!(err.to_string().contains("jwks.json"), "{err}");
    assert_eq!(set.keys().len(), 1);
    // A file that never loaded: an error naming it.
    let fetch = Box::new(FileFetch {
        path: dir.path().join("missing.json"),
        max_bytes: 1024,
    });
    let err = KeySet::load(fetch, RefreshSettings::default())
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("missing.json"), "{err}");
}

/// What the local JWKS server answers.
struct ServerState {
    status: AtomicU16,
    body: Mutex<Bytes>,
    /// Sent in chunks without a Content-Length.
    chunked: std::sync::atomic::AtomicBool,
    hang: std::sync::atomic::AtomicBool,
    hits: AtomicUsize,
}

async fn jwks_server(body: Bytes) -> (SocketAddr, Arc<ServerState>) {
    let state = Arc::new(ServerState {
        status: AtomicU16::new(200),
        body: Mutex::new(body),
        chunked: false.into(),
        hang: false.into(),
        hits: AtomicUsize::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let st = state.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let st = st.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let st = st.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/.well-known/jwks.json");
                            st.hits.fetch_add(1, Ordering::SeqCst);
                            if st.hang.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                            }
                            let body = st.body.lock().expect("lock").clone();
                            let body = if st.chunked.load(Ordering::SeqCst) {
                                let chunks: Vec<Result<hyper::body::Frame<Bytes>, Infallible>> =
                                    body.chunks(4096)
                                        .map(|c| {
                                            Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c)))
                                        })
                                        .collect();
                                StreamBody::new(futures::stream::iter(chunks)).boxed()
                            } else {
                                Full::new(body).boxed()
                            };
                            let status = st.status.load(Ordering::SeqCst);
                            Ok::<_, Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(body)
                                    .expect("response"),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, state)
}

#[tokio::test]
async fn jwks_from_a_local_http_server() {
    let old = rsa_key(RSA_A, "old");
    let (addr, state) = jwks_server(jwks(&[&old])).await;
    let url: http::Uri = format!("http://{addr}/.well-known/jwks.json")
        .parse()
        .expect("url");
    let fetch = KeySet::fetcher(&JwksSource::Url(url), Duration::from_millis(500), 64 * 1024)
        .expect("fetcher");
    let settings = RefreshSettings {
        every: Duration::from_secs(300),
        unknown_kid_gap: Duration::ZERO,
    };
    let set = KeySet::load(fetch, settings).await.expect("load");
    let v = JwtVerifier::new(Arc::new(rule()), set.clone()).expect("rule");
    assert!(v.verify(&bearer(&sign(&old, &claims()))).await.is_ok());
    assert_eq!(state.hits.load(Ordering::SeqCst), 1);

    // Rotation: an unknown kid fetches the new set.
    let new = ec_key("new");
    *state.body.lock().expect("lock") = jwks(&[&old, &new]);
    assert!(v.verify(&bearer(&sign(&new, &claims()))).await.is_ok());
    assert_eq!(state.hits.load(Ordering::SeqCst), 2);

    // The server fails: keys kept.
    state.status.store(500, Ordering::SeqCst);
    let err = set.refresh().await.expect_err("500");
    assert!(
        matches!(err, JwksError::Status { status: 500, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&addr.to_string()),
        "names the source: {err}"
    );
    assert_eq!(set.keys().len(), 2);
    assert!(v.verify(&bearer(&sign(&new, &claims()))).await.is_ok());

    // Too large, declared or streamed: keys kept.
    state.status.store(200, Ordering::SeqCst);
    *state.body.lock().expect("lock") = Bytes::from(vec![b' '; 100 * 1024]);
    let err = set.refresh().await.expect_err("too large");
    assert!(matches!(err, JwksError::TooLarge { .. }), "{err}");
    state.chunked.store(true, Ordering::SeqCst);
    let err = set.refresh().await.expect_err("too large");
    assert!(matches!(err, JwksError::TooLarge { .. }), "{err}");
    assert_eq!(set.keys().len(), 2);

    // A set with no usable key: keys kept.
    *state.body.lock().expect("lock") = Bytes::from_static(b"{\"keys\": []}");
    assert!(matches!(
        set.refresh().await,
        Err(JwksError::NoUsableKey { .. })
    ));
    assert_eq!(set.keys().len(), 2);

    // A server that never answers: the timeout, keys kept.
    state.hang.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let err = set.refresh().await.expect_err("timeout");
    assert!(matches!(err, JwksError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(v.verify(&bearer(&sign(&old, &claims()))).await.is_ok());

    // Back to normal, streamed within the cap.
    state.hang.store(false, Ordering::SeqCst);
    let third = ed_key("third");
    *state.body.lock().expect("lock") = jwks(&[&third]);
    assert_eq!(set.refresh().await.expect("refresh"), 1);
    assert!(v.verify(&bearer(&sign(&third, &claims()))).await.is_ok());
    assert_eq!(
        v.verify(&bearer(&sign(&old, &claims()))).await,
        Err(JwtError::UnknownKey {
            kid: Some("old".into())
        })
    );
}

#[tokio::test]
async fn background_refresh_picks_up_changes_and_keeps_keys_on_failure() {
    let a = ec_key("a");
    let mem = MemFetch::new(jwks(&[&a]));
    let settings = RefreshSettings {
        every: Duration::from_millis(50),
        unknown_kid_gap: Duration::from_secs(3600),
    };
    let set = KeySet::load(Box::new(Shared(mem.clone())), settings)
        .await
        .expect("load");
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let o = outcomes.clone();
    let task = tokio::spawn(
        set.clone()
            .run_refresh(move |ok| o.lock().expect("lock").push(ok)),
    );
    mem.set(Err(503));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(outcomes.lock().expect("lock").contains(&false));
    assert!(set.keys().by_kid("a").is_some(), "kept");
    let b = ed_key("b");
    mem.set(Ok(jwks(&[&b])));
    tokio::time::sleep(Duration::from_millis(120)).await;
    task.abort();
    assert!(outcomes.lock().expect("lock").contains(&true));
    assert!(set.keys().by_kid("b").is_some() && set.keys().by_kid("a").is_none());
}

#[tokio::test]
async fn an_empty_set_refuses_tokens_until_a_refresh_succeeds() {
    let key = ec_key("k");
    let mem = MemFetch::new(Bytes::new());
    mem.set(Err(503));
    let set = KeySet::empty(Box::new(Shared(mem.clone())), RefreshSettings::default());
    let v = JwtVerifier::new(Arc::new(rule()), set.clone()).expect("rule");
    assert!(matches!(
        v.verify(&bearer(&sign(&key, &claims()))).await,
        Err(JwtError::UnknownKey { .. })
    ));
    mem.set(Ok(jwks(&[&key])));
    set.refresh().await.expect("refresh");
    assert!(v.verify(&bearer(&sign(&key, &claims()))).await.is_ok());

    // The background refresh of a set that starts empty fetches at once.
    let mem = MemFetch::new(jwks(&[&key]));
    let set = KeySet::empty(Box::new(Shared(mem.clone())), RefreshSettings::default());
    let task = tokio::spawn(set.clone().run_refresh(|_| {}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    task.abort();
    assert_eq!(mem.fetches(), 1);
    assert_eq!(set.keys().len(), 1);
}

#[test]
fn url_checks() {
    let url = |s: &str| -> http::Uri { s.parse().expect("uri") };
    let t = Duration::from_secs(1);
    assert!(matches!(
        HttpFetch::new(url("https://idp.test/jwks"), t, 10),
        Err(JwksError::UnsupportedScheme { .. })
    ));
    assert!(matches!(
        HttpFetch::new(url("http://u:p@idp.test/jwks"), t, 10),
        Err(JwksError::BadUrl { .. })
    ));
    assert!(matches!(
        HttpFetch::new(url("/jwks"), t, 10),
        Err(JwksError::BadUrl { .. })
    ));
    assert!(HttpFetch::new(url("http://[::1]:8080/jwks"), t, 10).is_ok());
}
