//! The application protocol of a port, as mesh.yaml, the wire and both
//! sides' models name it.

use std::fmt;

use crate::v1;

/// Application protocol of a service or workload port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// HTTP/1.1 to the app (the default, as in Kubernetes).
    #[default]
    Http,
    /// HTTP/2 with prior knowledge (h2c) to the app.
    Http2,
    /// gRPC: HTTP/2 to the app, gRPC-shaped errors to callers.
    Grpc,
    /// Opaque TCP: never parsed, never detected.
    Tcp,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Self::Http, Self::Http2, Self::Grpc, Self::Tcp];

    /// The `appProtocol` spelling (`http`, `http2`, `grpc`, `tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Http2 => "http2",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
        }
    }

    /// Parses the `appProtocol` spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The protocol a Kubernetes port name announces by its prefix, as
    /// Istio and Linkerd users write them: `grpc`/`grpc-*`, `http2`/`http2-*`,
    /// `tcp`/`tcp-*`, `http`/`http-*`; `None` for any other name.
    pub fn from_port_name(name: &str) -> Option<Self> {
        let head = name.split_once('-').map_or(name, |(head, _)| head);
        Self::parse(head)
    }

    /// Whether the app on this port speaks HTTP/2 (h2c) rather than HTTP/1.1.
    pub fn is_h2(self) -> bool {
        matches!(self, Self::Http2 | Self::Grpc)
    }

    pub fn to_proto(self) -> v1::Protocol {
        match self {
            Self::Http => v1::Protocol::Http,
            Self::Http2 => v1::Protocol::Http2,
            Self::Grpc => v1::Protocol::Grpc,
            Self::Tcp => v1::Protocol::Tcp,
        }
    }

    /// Reads a wire value; unspecified means HTTP, an unknown number is an
    /// error (a newer controller's protocol this proxy cannot carry).
    pub fn from_proto(raw: i32) -> Option<Self> {
        match v1::Protocol::try_from(raw).ok()? {
            v1::Protocol::Unspecified | v1::Protocol::Http => Some(Self::Http),
            v1::Protocol::Http2 => Some(Self::Http2),
            v1::Protocol::Grpc => Some(Self::Grpc),
            v1::Protocol::Tcp => Some(Self::Tcp),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_and_wire_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(p.as_str()), Some(p));
            assert_eq!(Protocol::from_proto(p.to_proto() as i32), Some(p));
        }
        assert_eq!(Protocol::parse("HTTP"), None);
        assert_eq!(Protocol::from_proto(0), Some(Protocol::Http));
        assert_eq!(Protocol::from_proto(99), None);
    }

    #[test]
    fn port_name_prefixes() {
        for (name, want) in [
            ("grpc", Some(Protocol::Grpc)),
            ("grpc-api", Some(Protocol::Grpc)),
            ("http2-web", Some(Protocol::Http2)),
            ("tcp-db", Some(Protocol::Tcp)),
            ("http-metrics", Some(Protocol::Http)),
            ("grpcweb", None),
            ("web", None),
            ("", None),
        ] {
            assert_eq!(Protocol::from_port_name(name), want, "{name}");
        }
    }
}
