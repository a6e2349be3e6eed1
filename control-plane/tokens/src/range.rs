//! An IP address or CIDR block a join token allows its workload to
//! register with.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `10.0.0.5` (one address) or `10.0.0.0/24` (a block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("address {0:?} is not an IP address or CIDR block (e.g. 10.0.0.5 or 10.0.0.0/24)")]
pub struct RangeError(pub String);

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((bits & m).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((bits & m).to_be_bytes())
        }
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl AddressRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        max_prefix(ip) == max_prefix(self.network) && mask(ip, self.prefix) == self.network
    }
}

impl FromStr for AddressRange {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RangeError(s.to_string());
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let ip = ip.to_canonical();
        let prefix = match prefix {
            None => max_prefix(ip),
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max_prefix(ip))
                .ok_or_else(bad)?,
        };
        Ok(Self {
            network: mask(ip, prefix),
            prefix,
        })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == max_prefix(self.network) {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

impl Serialize for AddressRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddressRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.2", "127.0.0.2", true),
            ("127.0.0.2", "127.0.0.3", false),
            ("10.0.0.0/24", "10.0.0.77", true),
            ("10.0.0.9/24", "10.0.0.77", true),
            ("10.0.0.0/24", "10.0.1.1", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("0.0.0.0/0", "::1", false),
            ("fd00::/8", "fd12::1", true),
            ("127.0.0.1", "::ffff:127.0.0.1", true),
        ];
        for (range, ip, want) in cases {
            let r: AddressRange = range.parse().unwrap();
            assert_eq!(r.contains(ip.parse().unwrap()), *want, "{range} {ip}");
        }
        assert_eq!(
            "10.0.0.9/24".parse::<AddressRange>().unwrap().to_string(),
            "10.0.0.0/24"
        );
        for bad in [
            "",
            "host",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "1.2.3.4:80",
        ] {
            assert!(bad.parse::<AddressRange>().is_err(), "{bad}");
        }
    }
}
