//! Certificates for the nginx and HAProxy pairs: a CA of their own, a server
//! certificate for the mesh side and a client certificate for the client
//! side, written as PEM files the way those servers want them. Also the
//! public certificate of the gateway scenario ([`write_web_pki`]): one CA
//! and one leaf for [`GATEWAY_HOST`], served alike by every TLS front.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// DNS name on the server certificate; the client side checks it.
pub const SERVER_NAME: &str = "backend.bench";

/// The public name of the gateway scenario's TLS fronts: on their
/// certificate, sent as SNI and as the request's host by the load
/// generator, which connects to 127.0.0.1 (nothing resolves it).
pub const GATEWAY_HOST: &str = "shop.bench.test";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Paths of the files written by [`write_pki`].
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Certificate then key in one file (HAProxy's `crt`).
    pub server_combined: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub client_combined: PathBuf,
    /// DER of the client chain and key, for the handshake test.
    pub client_chain_der: Vec<Vec<u8>>,
    pub client_key_der: Vec<u8>,
}

fn leaf(
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
    name: &str,
    eku: ExtendedKeyUsagePurpose,
) -> Result<(rcgen::Certificate, KeyPair), CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::new(vec![name.to_string()])?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![eku];
    let cert = p.signed_by(&key, ca, ca_key)?;
    Ok((cert, key))
}

fn write(path: &Path, text: &str) -> Result<(), CertError> {
    std::fs::write(path, text).map_err(|source| CertError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Generates the CA and both leaves (ECDSA P-256, as Mycel uses) into `dir`.
pub fn write_pki(dir: &Path) -> Result<Pki, CertError> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bench ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let (server, server_key) = leaf(
        &ca,
        &ca_key,
        SERVER_NAME,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client, client_key) = leaf(
        &ca,
        &ca_key,
        "client.bench",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let pki = Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        server_combined: dir.join("server-combined.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        client_combined: dir.join("client-combined.pem"),
        client_chain_der: vec![client.der().to_vec()],
        client_key_der: client_key.serialize_der(),
    };
    write(&pki.ca, &ca.pem())?;
    write(&pki.server_cert, &server.pem())?;
    write(&pki.server_key, &server_key.serialize_pem())?;
    write(
        &pki.server_combined,
        &format!("{}{}", server.pem(), server_key.serialize_pem()),
    )?;
    write(&pki.client_cert, &client.pem())?;
    write(&pki.client_key, &client_key.serialize_pem())?;
    write(
        &pki.client_combined,
        &format!("{}{}", client.pem(), client_key.serialize_pem()),
    )?;
    Ok(pki)
}

/// The gateway scenario's certificate files and what the load generator
/// trusts, from [`write_web_pki`].
#[derive(Clone, Debug)]
pub struct WebPki {
    /// The CA's certificate (PEM file) and its DER, which clients trust.
    pub ca: PathBuf,
    pub ca_der: Vec<u8>,
    /// The leaf for [`GATEWAY_HOST`] (PEM chain, leaf first) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The same chain and PKCS#8 key as DER, for the in-process TLS server.
    pub chain_der: Vec<Vec<u8>>,
    pub key_der: Vec<u8>,
}

/// A CA of its own and a server certificate for [`GATEWAY_HOST`] (ECDSA
/// P-256), written to `dir` as `web-ca.pem`, `web.crt` and `web.key`.
pub fn write_web_pki(dir: &Path) -> Result<WebPki, CertError> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bench web ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let (leaf, leaf_key) = leaf(
        &ca,
        &ca_key,
        GATEWAY_HOST,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let pki = WebPki {
        ca: dir.join("web-ca.pem"),
        ca_der: ca.der().to_vec(),
        cert: dir.join("web.crt"),
        key: dir.join("web.key"),
        chain_der: vec![leaf.der().to_vec()],
        key_der: leaf_key.serialize_der(),
    };
    write(&pki.ca, &ca.pem())?;
    write(&pki.cert, &leaf.pem())?;
    write(&pki.key, &leaf_key.serialize_pem())?;
    Ok(pki)
}
