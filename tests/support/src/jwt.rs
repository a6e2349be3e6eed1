//! An issuer for JWT tests: an ES256 key made for the test, its public
//! JWK, and tokens it signs.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A P-256 signing key with a `kid`, as an issuer publishes it.
pub struct Signer {
    enc: EncodingKey,
    kid: String,
    jwk: Value,
}

impl Signer {
    /// A fresh key: two signers made with the same `kid` hold different
    /// keys (the "wrong key, same kid" case).
    pub fn new(kid: &str) -> Signer {
        let pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key");
        let point = pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Signer {
            enc: EncodingKey::from_ec_der(&pair.serialize_der()),
            kid: kid.into(),
            jwk: json!({"kty": "EC", "crv": "P-256", "use": "sig", "kid": kid,
                        "x": b64(&point[1..33]), "y": b64(&point[33..])}),
        }
    }

    /// `claims` signed with ES256, the header naming this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.enc).expect("sign a token")
    }

    pub fn jwk(&self) -> &Value {
        &self.jwk
    }
}

/// The JWK set publishing `keys`.
pub fn jwks(keys: &[&Signer]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}
