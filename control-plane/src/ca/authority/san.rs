//! The subjectAltName extension, DER-encoded by hand so it can be marked
//! critical (rcgen writes it non-critical).

use rcgen::{CustomExtension, SanType};

const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];

/// A critical subjectAltName extension holding `names` (URI, DNS and IP
/// names; other kinds are not issued by this CA and are skipped).
pub(crate) fn critical_extension(names: &[SanType]) -> CustomExtension {
    let mut body = Vec::new();
    for name in names {
        // GeneralName choices are context-specific IMPLICIT tags.
        match name {
            SanType::DnsName(d) => tlv(&mut body, 0x82, d.as_str().as_bytes()),
            SanType::URI(u) => tlv(&mut body, 0x86, u.as_str().as_bytes()),
            SanType::IpAddress(std::net::IpAddr::V4(ip)) => tlv(&mut body, 0x87, &ip.octets()),
            SanType::IpAddress(std::net::IpAddr::V6(ip)) => tlv(&mut body, 0x87, &ip.octets()),
            _ => {}
        }
    }
    let mut seq = Vec::with_capacity(body.len() + 4);
    tlv(&mut seq, 0x30, &body);
    let mut ext = CustomExtension::from_oid_content(OID_SUBJECT_ALT_NAME, seq);
    ext.set_criticality(true);
    ext
}

/// Appends one DER tag-length-value.
fn tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_use_the_long_form() {
        let mut out = Vec::new();
        tlv(&mut out, 0x86, &[b'a'; 200]);
        assert_eq!(&out[..3], &[0x86, 0x81, 200]);
        let mut out = Vec::new();
        tlv(&mut out, 0x30, &[0; 300]);
        assert_eq!(&out[..4], &[0x30, 0x82, 0x01, 0x2c]);
    }
}
