//! Certificates and private keys from PEM files, for every part that reads
//! them (static identities, the gateway's HTTPS certificates): one reader,
//! one way of naming what is wrong with a file.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that cannot be used: its path and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct PemFileError {
    pub path: PathBuf,
    pub reason: String,
}

/// A PEM read error in the words of the file it came from; `missing` says
/// which block was looked for when the file holds none.
fn error(path: &Path, missing: &str, e: pem::Error) -> PemFileError {
    let reason = match e {
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => format!("no {missing} block found"),
        e => format!("bad PEM: {e}"),
    };
    PemFileError {
        path: path.to_path_buf(),
        reason,
    }
}

/// Every certificate in a PEM file, in order; an error when there is none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error(path, "CERTIFICATE", e))?;
    if certs.is_empty() {
        return Err(error(path, "CERTIFICATE", pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemFileError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| error(path, "PRIVATE KEY", e))
}
