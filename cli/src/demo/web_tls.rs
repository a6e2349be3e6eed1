//! The demo's HTTPS certificate: a local CA kept in the data dir (so a
//! browser told to trust it once keeps trusting it across runs) and a
//! server certificate for `localhost` it signs at every start.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::plan::Paths;

/// The names the shop is served as over HTTPS.
pub const HOSTS: [&str; 2] = ["localhost", "shop.localhost"];

const CA_LIFETIME: Duration = Duration::days(3650);
/// Under the 398 days browsers accept for a server certificate.
const SERVER_LIFETIME: Duration = Duration::days(90);

/// Makes sure the CA exists (created the first time) and writes a fresh
/// server certificate and key for [`HOSTS`] and 127.0.0.1.
pub fn prepare(paths: &Paths) -> anyhow::Result<()> {
    let dir = paths.web_tls_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_cert, ca_key) = ca(paths)?;

    let key = KeyPair::generate().context("generating the demo server key")?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = HOSTS
        .iter()
        .map(|h| Ok(SanType::DnsName((*h).try_into()?)))
        .collect::<Result<Vec<_>, rcgen::Error>>()
        .context("demo host names")?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params
        .distinguished_name
        .push(DnType::CommonName, "Mycel demo shop");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + SERVER_LIFETIME;
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .context("signing the demo server certificate")?;
    write(&paths.web_cert(), &cert.pem(), 0o644)?;
    write(&paths.web_key(), &key.serialize_pem(), 0o600)?;
    Ok(())
}

/// The CA of an earlier run, or a new one written for the next runs, as
/// an issuer (an earlier run's is re-signed in memory from its file: same
/// key and name, so what it signs verifies against that file).
fn ca(paths: &Paths) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let (cert_path, key_path) = (paths.web_ca(), paths.web_ca_key());
    if cert_path.exists() && key_path.exists() {
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let key = KeyPair::from_pem(&read(&key_path)?)
            .with_context(|| format!("{}: not a private key", key_path.display()))?;
        let params = CertificateParams::from_ca_cert_pem(&read(&cert_path)?)
            .with_context(|| format!("{}: not a CA certificate", cert_path.display()))?;
        let cert = params
            .self_signed(&key)
            .context("signing the demo CA certificate")?;
        return Ok((cert, key));
    }
    let key = KeyPair::generate().context("generating the demo CA key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Mycel demo local CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + CA_LIFETIME;
    let cert = params
        .self_signed(&key)
        .context("signing the demo CA certificate")?;
    write(&key_path, &key.serialize_pem(), 0o600)?;
    write(&cert_path, &cert.pem(), 0o644)?;
    Ok((cert, key))
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_and_issuer(pem_text: &str) -> (Vec<String>, String) {
        let der = pem::parse(pem_text).unwrap().into_contents();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        (names, cert.issuer().to_string())
    }

    #[test]
    fn the_ca_is_kept_across_runs_and_signs_a_fresh_server_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            data: dir.path().to_path_buf(),
        };
        prepare(&paths).unwrap();
        let ca_first = std::fs::read_to_string(paths.web_ca()).unwrap();
        let leaf_first = std::fs::read_to_string(paths.web_cert()).unwrap();
        let (names, issuer) = names_and_issuer(&leaf_first);
        assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
        assert!(
            names.iter().any(|n| n.contains("7f:00:00:01")),
            "127.0.0.1: {names:?}"
        );
        assert_eq!(issuer, "CN=Mycel demo local CA");
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(&paths.web_key()), 0o600);
        assert_eq!(mode(&paths.web_ca_key()), 0o600);

        prepare(&paths).unwrap();
        assert_eq!(std::fs::read_to_string(paths.web_ca()).unwrap(), ca_first);
        let leaf_second = std::fs::read_to_string(paths.web_cert()).unwrap();
        assert_ne!(leaf_second, leaf_first, "a fresh server certificate");

        // The second leaf verifies against the CA file of the first run.
        let ca_der = pem::parse(&ca_first).unwrap().into_contents();
        let leaf_der = pem::parse(&leaf_second).unwrap().into_contents();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        leaf.verify_signature(Some(ca.public_key())).unwrap();
    }

    #[test]
    fn a_broken_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            data: dir.path().to_path_buf(),
        };
        prepare(&paths).unwrap();
        std::fs::write(paths.web_ca_key(), "not a key").unwrap();
        let e = format!("{:#}", prepare(&paths).unwrap_err());
        assert!(e.contains("ca.key"), "{e}");
    }
}
