//! rustls's two crypto providers side by side on this CPU: ring (what the
//! mesh links) against aws-lc-rs. Both ends of a TLS 1.3 connection with
//! a client certificate, as between two sidecars, run in this process over
//! memory buffers, so only rustls and its provider are measured: full
//! handshakes per second, then MB/s of application data in 16 KiB and
//! 1 KiB writes (each write sealed by the client and opened by the server).
//!
//!   cargo run --release -p mycel-bench --features aws-lc --example tls_providers
//!
//! Not built without the feature, so the mesh's own builds never compile
//! aws-lc.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

/// Upper bounds of every measurement: whichever comes first.
const MAX_TIME: Duration = Duration::from_secs(2);
const MAX_HANDSHAKES: u32 = 20_000;
const MAX_BYTES: u64 = 4_000_000_000;

struct Configs {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

fn configs(provider: Arc<CryptoProvider>, dir: &std::path::Path) -> Result<Configs> {
    let pki = mycel_bench::certs::write_pki(dir)?;
    let ca = CertificateDer::from_pem_file(&pki.ca)?;
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let roots = Arc::new(roots);
    let server_chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&pki.server_cert)?.collect::<Result<_, _>>()?;
    let server_key = PrivateKeyDer::from_pem_file(&pki.server_key)?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(server_chain, server_key)?;
    let client_chain: Vec<CertificateDer<'static>> = pki
        .client_chain_der
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    let client_key = PrivateKeyDer::try_from(pki.client_key_der.clone())
        .map_err(|e| anyhow::anyhow!("client key: {e}"))?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(client_chain, client_key)?;
    // Every handshake a full one: signatures and key exchange included.
    client.resumption = rustls::client::Resumption::disabled();
    Ok(Configs {
        client: Arc::new(client),
        server: Arc::new(server),
    })
}

/// Moves every pending TLS byte from `from` to `to`.
fn pump(from: &mut Connection, to: &mut Connection, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf)?;
    }
    let mut slice = &buf[..];
    while !slice.is_empty() {
        to.read_tls(&mut slice)?;
        to.process_new_packets()?;
    }
    Ok(())
}

fn connected(c: &Configs) -> Result<(Connection, Connection)> {
    let name = ServerName::try_from(mycel_bench::certs::SERVER_NAME)?;
    let mut client = Connection::Client(ClientConnection::new(c.client.clone(), name)?);
    let mut server = Connection::Server(ServerConnection::new(c.server.clone())?);
    let mut buf = Vec::new();
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok((client, server));
        }
        pump(&mut client, &mut server, &mut buf)?;
        pump(&mut server, &mut client, &mut buf)?;
    }
    bail!("the handshake did not finish in 10 flights")
}

fn handshakes_per_s(c: &Configs) -> Result<f64> {
    let start = Instant::now();
    let mut n = 0;
    while n < MAX_HANDSHAKES && start.elapsed() < MAX_TIME {
        connected(c)?;
        n += 1;
    }
    Ok(f64::from(n) / start.elapsed().as_secs_f64())
}

/// MB/s (10⁶ bytes) from the client to the server in writes of `size`.
fn mb_per_s(c: &Configs, size: usize) -> Result<(f64, String)> {
    let (mut client, mut server) = connected(c)?;
    let suite = format!(
        "{}, {}",
        client
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
        client
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name()))
            .unwrap_or_default()
    );
    let chunk = vec![0x5a_u8; size];
    let mut sink = vec![0_u8; 64 * 1024];
    let mut buf = Vec::with_capacity(64 * 1024);
    let (mut sent, mut received) = (0_u64, 0_u64);
    let start = Instant::now();
    while sent < MAX_BYTES && start.elapsed() < MAX_TIME {
        client.writer().write_all(&chunk)?;
        sent += size as u64;
        pump(&mut client, &mut server, &mut buf)?;
        loop {
            match server.reader().read(&mut sink) {
                Ok(0) => break,
                Ok(n) => received += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("reading the plaintext"),
            }
        }
    }
    if received != sent {
        bail!("sent {sent} bytes, the server read {received}");
    }
    Ok((received as f64 / start.elapsed().as_secs_f64() / 1e6, suite))
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let providers: [(&str, CryptoProvider); 2] = [
        ("ring", rustls::crypto::ring::default_provider()),
        ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider()),
    ];
    println!("| provider | suite, key exchange | full mTLS handshakes / s | MB/s, 16 KiB writes | MB/s, 1 KiB writes |");
    println!("|---|---|---|---|---|");
    // Two rounds, alternating, so a provider is not favoured by going first.
    for round in 0..2 {
        for (name, provider) in &providers {
            let c = configs(Arc::new(provider.clone()), dir.path())?;
            let hs = handshakes_per_s(&c)?;
            let (big, suite) = mb_per_s(&c, 16 * 1024)?;
            let (small, _) = mb_per_s(&c, 1024)?;
            println!(
                "| {name} (round {}) | {suite} | {hs:.0} | {big:.0} | {small:.0} |",
                round + 1
            );
        }
    }
    Ok(())
}
