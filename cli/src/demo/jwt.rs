//! The demo's token issuer for `/api/orders`, as files in the data dir:
//! the ES256 signing key (kept, so a token printed by one run still works
//! in the next, as the web CA is kept), the public JWK set the gateway's
//! GatewayPolicy reads, and one token for the user `demo-user`, signed
//! fresh at every start. The key and the claims are
//! [`mycel_api::demo_tokens`], shared with the cluster's `mycel-demo issuer`.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use mycel_api::demo_tokens::{Issuer, TOKEN_LIFETIME};
pub use mycel_api::demo_tokens::{AUDIENCE, ISSUER, SCOPE, SUBJECT};

use super::plan::Paths;

/// Makes sure the signing key exists (created the first time, 0600),
/// writes its JWKS and a fresh token for [`SUBJECT`] (0600: it is a
/// credential) for the next [`TOKEN_LIFETIME`].
pub fn prepare(paths: &Paths) -> anyhow::Result<()> {
    let dir = paths.jwt_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let issuer = Issuer::load_or_create(&paths.jwt_key())?;
    write(&paths.jwks(), &issuer.jwks_json(), 0o644)?;
    let token = issuer.token(SUBJECT, SCOPE, TOKEN_LIFETIME)?;
    write(&paths.demo_token(), &token, 0o600)?;
    Ok(())
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
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

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
        assert_eq!(exp - iat, TOKEN_LIFETIME.as_secs());
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
