//! The demo shop's token issuer, shared by `mycelctl demo` (local mode:
//! the JWKS and a token as files) and `mycel-demo issuer` (Kubernetes: the
//! JWKS served over HTTP, tokens printed by `mycel-demo token`): an ES256
//! (P-256) signing key, its public JWK set, and tokens with the claims the
//! demo's GatewayPolicies check.
//!
//! The key's `kid` is its RFC 7638 thumbprint: a key made again gets a new
//! `kid`, and a gateway meeting a token naming a `kid` it does not hold
//! reads the JWKS again.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// `iss` of the demo's tokens, checked by the gateway.
pub const ISSUER: &str = "https://demo.mycel.local";
/// `aud` of the demo's tokens, checked by the gateway.
pub const AUDIENCE: &str = "shop";
/// `sub` of the token the demo hands out: the gateway forwards it to
/// orders as `x-user-id`.
pub const SUBJECT: &str = "demo-user";
/// What the demo's token may do: list (`orders:read`) and place
/// (`orders:write`) orders.
pub const SCOPE: &str = "orders:read orders:write";
/// How long a demo token is valid: a day of trying things.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The longest lifetime a demo token may be given: a week.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// What went wrong making the key, reading it or signing.
#[derive(Debug, thiserror::Error)]
pub enum DemoTokenError {
    #[error("generating the demo's token signing key: {0}")]
    Generate(String),
    #[error("{path}: not an ES256 (P-256) private key in PKCS#8 PEM: {reason}")]
    NotP256 { path: String, reason: String },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the public JWK of the demo's signing key: {0}")]
    PublicKey(String),
    #[error("token lifetime {0:?} is outside 1 s ..= 7 days")]
    Lifetime(Duration),
    #[error("signing the demo token: {0}")]
    Sign(String),
}

/// The claims of a demo token.
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    pub sub: &'a str,
    pub scope: &'a str,
    pub iat: u64,
    pub exp: u64,
}

/// A signing key with its public JWK.
pub struct Issuer {
    key: EncodingKey,
    jwk: Jwk,
    kid: String,
    pem: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("Issuer").field("kid", &self.kid).finish()
    }
}

impl Issuer {
    /// A new P-256 key.
    pub fn generate() -> Result<Issuer, DemoTokenError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| DemoTokenError::Generate(e.to_string()))?;
        Issuer::from_pem(&pair.serialize_pem(), "the generated key")
    }

    /// The key in `pem` (PKCS#8); `origin` names it in errors.
    pub fn from_pem(pem: &str, origin: &str) -> Result<Issuer, DemoTokenError> {
        let key =
            EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| DemoTokenError::NotP256 {
                path: origin.to_string(),
                reason: e.to_string(),
            })?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)
            .map_err(|e| DemoTokenError::PublicKey(e.to_string()))?;
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| DemoTokenError::PublicKey(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        Ok(Issuer {
            key,
            jwk,
            kid,
            pem: pem.to_string(),
        })
    }

    /// The key kept in `path`, or a new one written there (0600,
    /// atomically) for the next runs, so tokens signed by an earlier run
    /// still verify.
    pub fn load_or_create(path: &Path) -> Result<Issuer, DemoTokenError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(pem) => Issuer::from_pem(&pem, &shown),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let issuer = Issuer::generate()?;
                crate::files::write_private(path, issuer.pem.as_bytes()).map_err(|source| {
                    DemoTokenError::Write {
                        path: shown,
                        source,
                    }
                })?;
                Ok(issuer)
            }
            Err(source) => Err(DemoTokenError::Read {
                path: shown,
                source,
            }),
        }
    }

    /// The thumbprint naming the key in tokens and in the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as the gateway reads it: `kty: EC`, P-256,
    /// `alg: ES256`, `use: sig`, the thumbprint as `kid`.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// `{"keys": [<the public JWK>]}`, pretty-printed.
    pub fn jwks_json(&self) -> String {
        let set = JwkSet {
            keys: vec![self.jwk.clone()],
        };
        // A JwkSet of plain strings always serializes.
        serde_json::to_string_pretty(&set).unwrap_or_default()
    }

    /// A token of [`ISSUER`] for [`AUDIENCE`], `subject` and `scope`, valid
    /// from now for `lifetime`.
    pub fn token(
        &self,
        subject: &str,
        scope: &str,
        lifetime: Duration,
    ) -> Result<String, DemoTokenError> {
        if lifetime < Duration::from_secs(1) || lifetime > MAX_TOKEN_LIFETIME {
            return Err(DemoTokenError::Lifetime(lifetime));
        }
        let now = jsonwebtoken::get_current_timestamp();
        self.sign(&Claims {
            iss: ISSUER,
            aud: AUDIENCE,
            sub: subject,
            scope,
            iat: now,
            exp: now + lifetime.as_secs(),
        })
    }

    /// `claims` signed with ES256, the header naming the key.
    pub fn sign(&self, claims: &Claims<'_>) -> Result<String, DemoTokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| DemoTokenError::Sign(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn verify(issuer: &Issuer, token: &str) -> serde_json::Value {
        let set: JwkSet = serde_json::from_str(&issuer.jwks_json()).unwrap();
        let key = DecodingKey::from_jwk(&set.keys[0]).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .unwrap()
            .claims
    }

    #[test]
    fn a_token_verifies_against_the_published_jwks() {
        let issuer = Issuer::generate().unwrap();
        let token = issuer
            .token("alice", "orders:read", Duration::from_secs(60))
            .unwrap();
        let claims = verify(&issuer, &token);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["scope"], "orders:read");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(issuer.kid()));
    }

    #[test]
    fn the_key_file_is_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key.pem");
        let first = Issuer::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Issuer::load_or_create(&path).unwrap();
        assert_eq!(first.kid(), again.kid());
        let token = first.token(SUBJECT, SCOPE, TOKEN_LIFETIME).unwrap();
        assert_eq!(verify(&again, &token)["sub"], SUBJECT);
    }

    #[test]
    fn a_file_that_is_not_a_p256_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key.pem");
        std::fs::write(&path, "not a key").unwrap();
        let err = Issuer::load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains("signing-key.pem") && err.contains("P-256"),
            "{err}"
        );
    }

    #[test]
    fn lifetimes_outside_a_second_to_a_week_are_refused() {
        let issuer = Issuer::generate().unwrap();
        for bad in [Duration::ZERO, MAX_TOKEN_LIFETIME + Duration::from_secs(1)] {
            assert!(matches!(
                issuer.token(SUBJECT, SCOPE, bad),
                Err(DemoTokenError::Lifetime(_))
            ));
        }
    }
}
