//! Token signatures checked with `ring`, the crypto the proxy's TLS
//! already links, instead of `jsonwebtoken`'s pure-Rust provider: the
//! gateway checks one signature per request, and an ES256 check took
//! about 340 µs with the pure-Rust curves against about 60 µs with `ring`
//! on the bench machine (docs/benchmarks.md, "Gateway"). Signing, key
//! utilities and HMAC (which the gateway refuses anyway) stay with the
//! pure-Rust provider.

use std::sync::LazyLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use ring::signature::{self as ring_sig, RsaParameters, UnparsedPublicKey, VerificationAlgorithm};

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| {
    let pure = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    CryptoProvider {
        signer_factory: pure.signer_factory,
        verifier_factory: verifier,
        key_utils: pure.key_utils.clone(),
    }
});

/// Makes `ring` check token signatures in this process. The first
/// provider `jsonwebtoken` uses stays for the life of the process, so this
/// runs before any token is checked; if another was chosen first (a test
/// that signed a token before building a verifier), tokens are still
/// checked, by that one.
pub fn install() {
    if CryptoProvider::install_default(&PROVIDER).is_err() {
        tracing::debug!("JWT signatures are checked by the provider installed first");
    }
}

/// How one key checks signatures.
enum Key {
    /// SEC1 point (ECDSA), raw Ed25519 key, or PKCS#1 DER RSA key.
    Unparsed(UnparsedPublicKey<Vec<u8>>),
    /// An RSA key from a JWK's `n` and `e`.
    Rsa {
        params: &'static RsaParameters,
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

struct RingVerifier {
    algorithm: Algorithm,
    key: Key,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let checked = match &self.key {
            Key::Unparsed(key) => key.verify(msg, sig),
            Key::Rsa { params, n, e } => {
                ring_sig::RsaPublicKeyComponents { n, e }.verify(params, msg, sig)
            }
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    let algorithm = *algorithm;
    let (unparsed, rsa): (
        &'static dyn VerificationAlgorithm,
        Option<&'static RsaParameters>,
    ) = match algorithm {
        Algorithm::ES256 => (&ring_sig::ECDSA_P256_SHA256_FIXED, None),
        Algorithm::ES384 => (&ring_sig::ECDSA_P384_SHA384_FIXED, None),
        Algorithm::EdDSA => (&ring_sig::ED25519, None),
        Algorithm::RS256 => rsa_pair(&ring_sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => rsa_pair(&ring_sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => rsa_pair(&ring_sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => rsa_pair(&ring_sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => rsa_pair(&ring_sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => rsa_pair(&ring_sig::RSA_PSS_2048_8192_SHA512),
        // HMAC (refused by the gateway's rules anyway) and whatever a
        // later version adds: the pure-Rust provider's.
        _ => {
            let pure = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
            return (pure.verifier_factory)(&algorithm, key);
        }
    };
    if key.family() != algorithm.family() {
        return Err(Error::from(ErrorKind::InvalidKeyFormat));
    }
    let key = match (key.kind(), rsa) {
        (DecodingKeyKind::SecretOrDer(bytes), _) => {
            Key::Unparsed(UnparsedPublicKey::new(unparsed, bytes.clone()))
        }
        (DecodingKeyKind::RsaModulusExponent { n, e }, Some(params)) => Key::Rsa {
            params,
            n: n.clone(),
            e: e.clone(),
        },
        (DecodingKeyKind::RsaModulusExponent { .. }, None) => {
            return Err(Error::from(ErrorKind::InvalidKeyFormat))
        }
    };
    Ok(Box::new(RingVerifier { algorithm, key }))
}

fn rsa_pair(
    params: &'static RsaParameters,
) -> (
    &'static dyn VerificationAlgorithm,
    Option<&'static RsaParameters>,
) {
    (params, Some(params))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    /// A token signed by the pure-Rust provider verifies with `ring`, and
    /// a changed byte does not, for every algorithm the gateway accepts.
    #[test]
    fn ring_agrees_with_the_signer_for_every_asymmetric_algorithm() {
        let ec256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ec384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let rsa_pem = include_str!("testdata/rsa-a.pem");
        let rsa_pub = include_str!("testdata/rsa-a.pub.pem");
        let cases: Vec<(Algorithm, EncodingKey, DecodingKey)> = vec![
            (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(ec256.serialize_pem().as_bytes()).unwrap(),
                DecodingKey::from_ec_pem(ec256.public_key_pem().as_bytes()).unwrap(),
            ),
            (
                Algorithm::ES384,
                EncodingKey::from_ec_pem(ec384.serialize_pem().as_bytes()).unwrap(),
                DecodingKey::from_ec_pem(ec384.public_key_pem().as_bytes()).unwrap(),
            ),
            (
                Algorithm::EdDSA,
                EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(),
                DecodingKey::from_ed_pem(ed.public_key_pem().as_bytes()).unwrap(),
            ),
            (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).unwrap(),
                DecodingKey::from_rsa_pem(rsa_pub.as_bytes()).unwrap(),
            ),
            (
                Algorithm::PS512,
                EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).unwrap(),
                DecodingKey::from_rsa_pem(rsa_pub.as_bytes()).unwrap(),
            ),
        ];
        for (alg, signing, checking) in cases {
            let token = encode(&Header::new(alg), &json!({"sub": "alice"}), &signing).unwrap();
            let (message, sig) = token.rsplit_once('.').unwrap();
            let sig =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
                    .unwrap();
            let v = verifier(&alg, &checking).unwrap();
            assert!(
                signature::Verifier::verify(&*v, message.as_bytes(), &sig).is_ok(),
                "{alg:?}"
            );
            let mut bad = sig.clone();
            bad[3] ^= 1;
            assert!(
                signature::Verifier::verify(&*v, message.as_bytes(), &bad).is_err(),
                "{alg:?} with a changed signature"
            );
            assert!(
                signature::Verifier::verify(&*v, b"another message", &sig).is_err(),
                "{alg:?} over another message"
            );
        }
    }
}
