//! The shop's identity provider in a cluster: `mycel-demo issuer` serves
//! the public JWK set of its signing key over plain HTTP (`GET
//! /jwks.json`), which the gateway's GatewayPolicies name as `jwks.url`,
//! and `mycel-demo token` signs a token with that key (run with `kubectl
//! exec` in the issuer's pod, where the key is).
//!
//! Like an identity provider of a real shop it stands outside the mesh:
//! the gateway proxy fetches the keys from it directly. The key and the
//! claims are those of `mycelctl demo`'s issuer
//! ([`mycel_api::demo_tokens`]), so the same GatewayPolicies admit the
//! same tokens in both modes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use mycel_api::demo_tokens::{DemoTokenError, Issuer, SCOPE, SUBJECT};

use crate::http::{text, Body, Handler};

/// The key's file in `--key-dir`.
pub const KEY_FILE: &str = "signing-key.pem";
/// Where the public keys are served.
pub const JWKS_PATH: &str = "/jwks.json";
/// The longest subject or scope `mycel-demo token` signs: a claim the
/// gateway forwards as a header stays well under header limits.
const MAX_CLAIM_LEN: usize = 256;

/// `mycel-demo issuer --key-dir DIR --listen ADDR`.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct IssuerArgs {
    /// Where the signing key is kept (made, 0700, when missing; the key file is 0600).
    #[arg(long, value_name = "DIR")]
    pub key_dir: PathBuf,
    /// The address to serve GET /jwks.json and GET /healthz on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
}

/// `mycel-demo token --key-dir DIR [--subject S] [--scope S] [--lifetime-minutes N]`.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct TokenArgs {
    /// The issuer's key directory (the `--key-dir` of a running `mycel-demo issuer`).
    #[arg(long, value_name = "DIR")]
    pub key_dir: PathBuf,
    /// The token's `sub`: the user the gateway names to orders (x-user-id).
    #[arg(long, value_name = "NAME", default_value = SUBJECT)]
    pub subject: String,
    /// The token's `scope`, space-separated: orders:read lists orders, orders:write places them.
    #[arg(long, value_name = "SCOPES", default_value = SCOPE)]
    pub scope: String,
    /// How long the token is valid, in minutes (at most a week).
    #[arg(long = "lifetime-minutes", value_name = "N", default_value_t = 24 * 60,
          value_parser = clap::value_parser!(u64).range(1..=7 * 24 * 60))]
    pub lifetime_minutes: u64,
}

/// What `issuer` and `token` can refuse.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error(transparent)]
    Key(#[from] DemoTokenError),
    #[error(
        "no signing key at {0}: is `mycel-demo issuer --key-dir` running with this directory?"
    )]
    NoKey(String),
    #[error("--key-dir {dir}: {source}")]
    KeyDir { dir: String, source: std::io::Error },
    #[error("--{flag} must be 1 to {MAX_CLAIM_LEN} printable ASCII characters, got {value:?}")]
    Claim { flag: &'static str, value: String },
    #[error("--listen {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE)
}

/// Serves the JWKS until SIGTERM or Ctrl-C.
pub async fn serve(args: &IssuerArgs) -> Result<(), IssuerError> {
    // A directory that exists (a volume, mounted as root's) keeps its
    // mode, which this user may not change; the key file is 0600 anyway.
    if !args.key_dir.is_dir() {
        mycel_api::files::ensure_private_dir(&args.key_dir).map_err(|source| {
            IssuerError::KeyDir {
                dir: args.key_dir.display().to_string(),
                source,
            }
        })?;
    }
    let issuer = Issuer::load_or_create(&key_path(&args.key_dir))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| IssuerError::Listen {
            addr: args.listen,
            source,
        })?;
    tracing::info!(listen = %args.listen, kid = issuer.kid(), "issuer serving {JWKS_PATH}");
    let handler = Arc::new(Jwks::new(&issuer));
    crate::http::serve(listener, handler, crate::app::shutdown_signal())
        .await
        .map_err(|source| IssuerError::Listen {
            addr: args.listen,
            source,
        })
}

/// The token `args` asks for, signed with the key in `--key-dir`.
pub fn token(args: &TokenArgs) -> Result<String, IssuerError> {
    for (flag, value) in [("subject", &args.subject), ("scope", &args.scope)] {
        let printable = value.bytes().all(|b| (b' '..=b'~').contains(&b));
        if value.trim().is_empty() || value.len() > MAX_CLAIM_LEN || !printable {
            return Err(IssuerError::Claim {
                flag,
                value: value.clone(),
            });
        }
    }
    let path = key_path(&args.key_dir);
    let pem = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => IssuerError::NoKey(path.display().to_string()),
        _ => DemoTokenError::Read {
            path: path.display().to_string(),
            source: e,
        }
        .into(),
    })?;
    let issuer = Issuer::from_pem(&pem, &path.display().to_string())?;
    Ok(issuer.token(
        &args.subject,
        &args.scope,
        Duration::from_secs(args.lifetime_minutes * 60),
    )?)
}

/// The issuer's HTTP answers: the key set, computed once.
pub struct Jwks {
    body: String,
}

impl Jwks {
    pub fn new(issuer: &Issuer) -> Self {
        Jwks {
            body: issuer.jwks_json(),
        }
    }
}

impl Handler for Jwks {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, JWKS_PATH) => {
                let mut response = crate::http::text(StatusCode::OK, &self.body);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (_, JWKS_PATH | "/healthz") => text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"),
            (_, path) => text(StatusCode::NOT_FOUND, &format!("no route {path}\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> TokenArgs {
        TokenArgs {
            key_dir: dir.to_path_buf(),
            subject: SUBJECT.to_string(),
            scope: SCOPE.to_string(),
            lifetime_minutes: 60,
        }
    }

    #[test]
    fn a_token_without_a_running_issuers_key_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = token(&args(dir.path())).unwrap_err().to_string();
        assert!(err.contains(KEY_FILE) && err.contains("--key-dir"), "{err}");
    }

    #[test]
    fn a_subject_with_control_characters_or_too_long_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Issuer::load_or_create(&key_path(dir.path())).unwrap();
        for bad in [
            "",
            "  ",
            "a\r\nx-admin: yes",
            &"a".repeat(MAX_CLAIM_LEN + 1),
        ] {
            let mut a = args(dir.path());
            a.subject = bad.to_string();
            assert!(
                matches!(
                    token(&a),
                    Err(IssuerError::Claim {
                        flag: "subject",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(token(&args(dir.path())).is_ok());
    }
}
