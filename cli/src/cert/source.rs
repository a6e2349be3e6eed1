//! Certificates from PEM text: a file, or standard input for `-`.

use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("reading {name}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} is not PEM: {reason}")]
    NotPem { name: String, reason: String },
    #[error("{name} holds no CERTIFICATE block (found: {found})")]
    NoCertificate { name: String, found: String },
    #[error("{name} is larger than {limit} bytes; a certificate chain is a few KB")]
    TooLarge { name: String, limit: u64 },
}

/// The most PEM read from a file or standard input. Chains are kilobytes;
/// the cap keeps `/dev/zero` or a mistaken multi-gigabyte file from
/// exhausting memory.
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// Where certificates come from, named as the user named it.
#[derive(Clone, Debug)]
pub enum PemSource {
    File(PathBuf),
    Stdin,
}

impl PemSource {
    pub fn from_arg(arg: &Path) -> Self {
        if arg == Path::new("-") {
            Self::Stdin
        } else {
            Self::File(arg.to_path_buf())
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Stdin => "standard input".into(),
        }
    }

    /// The DER of every CERTIFICATE block, in file order.
    pub fn certificates(&self) -> Result<Vec<Vec<u8>>, PemError> {
        let name = self.name();
        let read = |source| PemError::Read {
            name: name.clone(),
            source,
        };
        let bytes = match self {
            Self::File(p) => read_capped(std::fs::File::open(p).map_err(read)?, &name)?,
            Self::Stdin => read_capped(std::io::stdin().lock(), &name)?,
        };
        certificates(&name, &bytes)
    }
}

/// All of `reader`, refused past [`MAX_PEM_BYTES`].
fn read_capped(reader: impl Read, name: &str) -> Result<Vec<u8>, PemError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| PemError::Read {
            name: name.to_string(),
            source,
        })?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(PemError::TooLarge {
            name: name.to_string(),
            limit: MAX_PEM_BYTES,
        });
    }
    Ok(bytes)
}

/// Parses PEM `bytes` (named `name` in errors) into certificate DERs. Other
/// blocks (a key next to a chain) are skipped; a file with none is an error.
pub fn certificates(name: &str, bytes: &[u8]) -> Result<Vec<Vec<u8>>, PemError> {
    let not_pem = |reason: String| PemError::NotPem {
        name: name.to_string(),
        reason,
    };
    let blocks = pem::parse_many(bytes).map_err(|e| not_pem(e.to_string()))?;
    if blocks.is_empty() {
        return Err(not_pem("no -----BEGIN ...----- block".into()));
    }
    let found: Vec<String> = blocks.iter().map(|b| b.tag().to_string()).collect();
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            name: name.to_string(),
            found: found.join(", "),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_keys_only_are_refused_naming_the_file() {
        for (bytes, want) in [
            (&b"hello, world\n"[..], "x.pem is not PEM"),
            (&b""[..], "x.pem is not PEM"),
            (
                &b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"[..],
                "x.pem holds no CERTIFICATE block (found: PRIVATE KEY)",
            ),
            (
                &b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"[..],
                "x.pem is not PEM",
            ),
        ] {
            let err = certificates("x.pem", bytes).expect_err(want).to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }
}
