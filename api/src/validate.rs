//! Field rules both sides apply to what travels on the wire, so that the
//! controller never accepts a value a proxy would refuse (which would make
//! every subscriber NACK a whole response).

use std::net::IpAddr;

/// A field that breaks a wire rule: which field and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A port number in 1..=65535.
pub fn port(field: &str, raw: u32) -> Result<u16, FieldError> {
    u16::try_from(raw)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| FieldError::new(field, format!("{raw} is not a port number (1-65535)")))
}

/// A dialable unicast IP address: the only form an endpoint address may take
/// (no hostnames: a proxy must never resolve names a peer gave it).
pub fn address(field: &str, raw: &str) -> Result<IpAddr, FieldError> {
    let ip: IpAddr = raw
        .parse()
        .map_err(|_| FieldError::new(field, format!("{raw:?} is not an IP address")))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(FieldError::new(
            field,
            format!("{raw} is not a dialable unicast address"),
        ));
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Err(FieldError::new(
                field,
                format!("{raw} is not a dialable unicast address"),
            ));
        }
    }
    Ok(ip)
}

/// Caps on what one message may carry, shared so the controller never sends
/// what a proxy would refuse.
pub mod limits {
    /// Labels on one workload.
    pub const MAX_LABELS: usize = 64;
    /// Bytes in one label key or value.
    pub const MAX_LABEL_LEN: usize = 253;
    /// Ports one workload declares.
    pub const MAX_PORTS: usize = 64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in ["127.0.0.2", "198.18.0.5", "::1"] {
            assert!(address("a", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "localhost",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "1.2.3.4:80",
        ] {
            let err = address("workload.address", bad).unwrap_err();
            assert_eq!(err.field, "workload.address", "{bad}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(port("p", 80), Ok(80));
        assert!(port("p", 0).is_err());
        assert!(port("p", 65536).is_err());
    }
}
