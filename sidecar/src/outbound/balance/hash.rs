//! Hashes for consistent hashing: of a request (its affinity key) and of
//! endpoints (their places on a ring or in a Maglev table).
//!
//! FNV-1a followed by a 64-bit finalizer. FNV alone is stable across
//! builds and platforms (every proxy of the mesh must send a key to the
//! same endpoint) but its high bits barely change when only the last byte
//! does; the finalizer spreads every input bit over the whole word, which
//! a ring ordered by the full 64-bit value needs.

use std::net::{IpAddr, SocketAddr};

use http::header::COOKIE;
use http::HeaderMap;

use crate::core::directory::policy::HashKey;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A request's hash for ring hash and Maglev, or None when the request has
/// no key (missing header or cookie, unknown caller address): such
/// requests are spread without affinity.
pub fn request_hash(key: &HashKey, headers: &HeaderMap, source: Option<IpAddr>) -> Option<u64> {
    match key {
        HashKey::Header(name) => headers.get(name.as_str()).map(|v| hash(&[v.as_bytes()])),
        HashKey::Cookie(name) => cookie(headers, name.as_bytes()).map(|v| hash(&[v])),
        // A v4 caller seen through a dual-stack socket as ::ffff:a.b.c.d is
        // the same caller.
        HashKey::SourceIp => source.map(|ip| match ip.to_canonical() {
            IpAddr::V4(v4) => hash(&[&v4.octets()]),
            IpAddr::V6(v6) => hash(&[&v6.octets()]),
        }),
    }
}

/// The value of cookie `name`, from any `cookie` header. Bytes, not
/// strings: a peer may send anything and the key only needs to be stable.
fn cookie<'a>(headers: &'a HeaderMap, name: &[u8]) -> Option<&'a [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (k, v) = pair.split_at(eq);
            (k.trim_ascii() == name).then(|| v[1..].trim_ascii())
        })
}

/// Where an endpoint's `n`-th point lies (`n` also salts the Maglev
/// offset and skip).
pub(super) fn endpoint_hash(addr: SocketAddr, n: u32) -> u64 {
    let port = addr.port().to_be_bytes();
    let n = n.to_be_bytes();
    match addr.ip() {
        IpAddr::V4(ip) => hash(&[&ip.octets(), &port, &n]),
        IpAddr::V6(ip) => hash(&[&ip.octets(), &port, &n]),
    }
}

pub(super) fn hash(parts: &[&[u8]]) -> u64 {
    finalize(fnv1a(parts))
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The splitmix64 finalizer.
fn finalize(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(&[b"foobar"]), 0x8594_4171_f739_67e8);
        // Parts hash as their concatenation.
        assert_eq!(fnv1a(&[b"foo", b"bar"]), fnv1a(&[b"foobar"]));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn request_hashes() {
        let user = |s: &str| Some(hash(&[s.as_bytes()]));
        let v4 = Some(IpAddr::from([10, 0, 0, 7]));
        let mapped = Some("::ffff:10.0.0.7".parse().unwrap());
        let hdr = HashKey::Header("x-user".into());
        let ck = HashKey::Cookie("sid".into());
        let bad = HashKey::Header("bad name".into());
        type Case<'a> = (&'a str, &'a HashKey, HeaderMap, Option<IpAddr>, Option<u64>);
        let cases: Vec<Case> = vec![
            (
                "header",
                &hdr,
                headers(&[("x-user", "alice")]),
                None,
                user("alice"),
            ),
            (
                "header absent",
                &hdr,
                headers(&[("x-other", "alice")]),
                v4,
                None,
            ),
            (
                "header empty",
                &hdr,
                headers(&[("x-user", "")]),
                None,
                user(""),
            ),
            (
                "header name no header can have",
                &bad,
                headers(&[("x-user", "a")]),
                None,
                None,
            ),
            (
                "cookie",
                &ck,
                headers(&[("cookie", "a=1; sid=abc; b=2")]),
                None,
                user("abc"),
            ),
            (
                "cookie first",
                &ck,
                headers(&[("cookie", "sid=abc")]),
                None,
                user("abc"),
            ),
            (
                "cookie in second header",
                &ck,
                headers(&[("cookie", "a=1"), ("cookie", "sid=xyz")]),
                None,
                user("xyz"),
            ),
            (
                "cookie name is whole",
                &ck,
                headers(&[("cookie", "xsid=1; sidx=2")]),
                None,
                None,
            ),
            (
                "cookie without value",
                &ck,
                headers(&[("cookie", "sid")]),
                None,
                None,
            ),
            ("no cookie header", &ck, HeaderMap::new(), v4, None),
            (
                "source ip",
                &HashKey::SourceIp,
                HeaderMap::new(),
                v4,
                Some(hash(&[&[10, 0, 0, 7]])),
            ),
            (
                "v4-mapped v6 is the v4 caller",
                &HashKey::SourceIp,
                HeaderMap::new(),
                mapped,
                Some(hash(&[&[10, 0, 0, 7]])),
            ),
            (
                "no source",
                &HashKey::SourceIp,
                HeaderMap::new(),
                None,
                None,
            ),
        ];
        for (name, key, h, src, want) in cases {
            assert_eq!(request_hash(key, &h, src), want, "{name}");
        }
    }

    #[test]
    fn endpoint_points_differ_by_address_port_and_index() {
        let a: SocketAddr = "10.0.0.1:15001".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:15002".parse().unwrap();
        let c: SocketAddr = "[fd00::1]:15001".parse().unwrap();
        let all = [
            endpoint_hash(a, 0),
            endpoint_hash(a, 1),
            endpoint_hash(b, 0),
            endpoint_hash(c, 0),
        ];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_eq!(endpoint_hash(a, 3), endpoint_hash(a, 3));
    }
}
