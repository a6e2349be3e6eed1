//! The demo's token issuer for `/api/orders`: an ES256 signing key kept
//! in the data dir (so a token printed by one run still works in the
//! next, as the web CA is kept), the public JWK set the gateway's
//! GatewayPolicy reads, and one token for the user `demo-user`, signed
//! fresh at every start.
//!
//! The key's `kid` is its RFC 7638 thumbprint: a key made again (the file
//! deleted) gets a new `kid`, and the gateway, meeting a token naming a
//! `kid` it does not hold, reads the JWKS again.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::plan::Paths;

/// `iss` of the demo's tokens, checked by the gateway.
pub const ISSUER: &str = "https://demo.mycel.local";
/// `aud` of the demo's tokens, checked by the gateway.
pub const AUDIENCE: &str = "shop";
/// `sub` of the token the demo prints: the gateway forwards it to orders
/// as `x-user-id`.
pub const SUBJECT: &str = "demo-user";
/// What the printed token may do: list (`orders:read`) and place
/// (`orders:write`) orders.
pub const SCOPE: &str = "orders:read orders:write";
/// How long the printed token is valid: a day of trying things.
pub const TOKEN_LIFETIME_SECS: u64 = 24 * 3600;

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

/// Makes sure the signing key exists (created the first time, 0600),
/// writes its JWKS and a fresh token for [`SUBJECT`] (0600: it is a
/// credential) for the next [`TOKEN_LIFETIME_SECS`].
pub fn prepare(paths: &Paths) -> anyhow::Result<()> {
    let dir = paths.jwt_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pem = signing_key(&paths.jwt_key())?;
    let key = EncodingKey::from_ec_pem(pem.as_bytes())
        .with_context(|| format!("{}: not an ES256 (P-256) key", paths.jwt_key().display()))?;
    let jwk = public_jwk(&key)?;
    let kid = jwk.common.key_id.clone().context("the JWK has no kid")?;
    let set =
        serde_json::to_string_pretty(&JwkSet { keys: vec![jwk] }).context("encoding the JWKS")?;
    write(&paths.jwks(), &set, 0o644)?;
    let now = jsonwebtoken::get_current_timestamp();
    let token = sign(
        &key,
        &kid,
        &Claims {
            iss: ISSUER,
            aud: AUDIENCE,
            sub: SUBJECT,
            scope: SCOPE,
            iat: now,
            exp: now + TOKEN_LIFETIME_SECS,
        },
    )?;
    write(&paths.demo_token(), &token, 0o600)?;
    Ok(())
}

/// The PKCS#8 PEM of an earlier run's key, or of a new P-256 key written
/// for the next runs.
fn signing_key(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        return std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()));
    }
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating the demo's token signing key")?;
    let pem = pair.serialize_pem();
    write(path, &pem, 0o600)?;
    Ok(pem)
}

/// The public half of `key` as the gateway reads it: `kty: EC`, P-256,
/// `alg: ES256`, `use: sig`, and the thumbprint as `kid`.
pub fn public_jwk(key: &EncodingKey) -> anyhow::Result<Jwk> {
    let mut jwk = Jwk::from_encoding_key(key, Algorithm::ES256)
        .context("the public key of the demo's signing key")?;
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .context("the thumbprint of the demo's signing key")?;
    jwk.common.key_id = Some(kid);
    Ok(jwk)
}

/// `claims` signed with ES256, the header naming `kid`.
pub fn sign(key: &EncodingKey, kid: &str, claims: &Claims<'_>) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).context("signing the demo token")
}

/// Writes `text` to a new file of `mode` and renames it over `path`, so a
/// reader (the gateway re-reading the JWKS) never sees half a file and the
/// mode holds even when `path` existed with another.
fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn paths() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            data: dir.path().to_path_buf(),
        };
        (dir, paths)
    }

    /// Verifies `token` against the JWKS file as the gateway would: by
    /// `kid`, ES256 only, issuer and audience checked.
    fn verify(
        paths: &Paths,
        token: &str,
    ) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
        let set: JwkSet =
            serde_json::from_str(&std::fs::read_to_string(paths.jwks()).unwrap()).unwrap();
        let kid = jsonwebtoken::decode_header(token)?.kid.unwrap();
        let jwk = set.find(&kid).expect("the token's kid is in the JWKS");
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        let key = DecodingKey::from_jwk(jwk)?;
        Ok(jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)?.claims)
    }

    #[test]
    fn the_token_verifies_against_the_jwks_with_the_demo_claims() {
        let (_dir, paths) = paths();
        prepare(&paths).unwrap();
        let token = std::fs::read_to_string(paths.demo_token()).unwrap();
        let claims = verify(&paths, &token).unwrap();
        assert_eq!(claims["sub"], SUBJECT);
        assert_eq!(claims["scope"], SCOPE);
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, TOKEN_LIFETIME_SECS);
        let set: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(paths.jwks()).unwrap()).unwrap();
        let jwk = &set["keys"][0];
        assert_eq!(set["keys"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        assert_eq!(
            (jwk["alg"].as_str(), jwk["use"].as_str()),
            (Some("ES256"), Some("sig"))
        );
        // The public set holds no private part.
        assert!(jwk.get("d").is_none(), "{jwk}");
        assert_eq!(mode(&paths.jwt_key()), 0o600);
        assert_eq!(mode(&paths.demo_token()), 0o600);
        assert_eq!(mode(&paths.jwks()), 0o644);
    }

    #[test]
    fn the_key_is_kept_across_runs_and_old_tokens_still_verify() {
        let (_dir, paths) = paths();
        prepare(&paths).unwrap();
        let key_first = std::fs::read_to_string(paths.jwt_key()).unwrap();
        let token_first = std::fs::read_to_string(paths.demo_token()).unwrap();
        let jwks_first = std::fs::read_to_string(paths.jwks()).unwrap();
        prepare(&paths).unwrap();
        assert_eq!(std::fs::read_to_string(paths.jwt_key()).unwrap(), key_first);
        assert_eq!(std::fs::read_to_string(paths.jwks()).unwrap(), jwks_first);
        assert_eq!(mode(&paths.jwt_key()), 0o600);
        verify(&paths, &token_first).expect("the first run's token, after a restart");

        // A key made again (the file removed) gets another kid, and the
        // old token no longer verifies.
        std::fs::remove_file(paths.jwt_key()).unwrap();
        prepare(&paths).unwrap();
        assert_ne!(std::fs::read_to_string(paths.jwks()).unwrap(), jwks_first);
        let set: JwkSet =
            serde_json::from_str(&std::fs::read_to_string(paths.jwks()).unwrap()).unwrap();
        let old_kid = jsonwebtoken::decode_header(&token_first)
            .unwrap()
            .kid
            .unwrap();
        assert!(set.find(&old_kid).is_none());
    }

    #[test]
    fn a_tampered_signature_does_not_verify() {
        let (_dir, paths) = paths();
        prepare(&paths).unwrap();
        let token = std::fs::read_to_string(paths.demo_token()).unwrap();
        let (signed, sig) = token.rsplit_once('.').unwrap();
        // A character in the middle of the signature: every bit of it counts.
        let mut sig: Vec<u8> = sig.bytes().collect();
        let i = sig.len() / 2;
        sig[i] = if sig[i] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{signed}.{}", String::from_utf8(sig).unwrap());
        assert!(verify(&paths, &tampered).is_err());
    }

    #[test]
    fn a_broken_key_file_is_named() {
        let (_dir, paths) = paths();
        prepare(&paths).unwrap();
        std::fs::write(paths.jwt_key(), "not a key").unwrap();
        let e = format!("{:#}", prepare(&paths).unwrap_err());
        assert!(e.contains("signing.key"), "{e}");
    }
}
