//! Protocol detection on a captured connection: is the client speaking
//! HTTP? Pure functions over the first bytes; the listener peeks them
//! with a short timeout.

use std::time::Duration;

use crate::discovery::Protocol;

/// How long the client gets to send its first bytes. A client-first
/// protocol sends at once; one that stays silent is treated as opaque TCP.
pub const DETECT_TIMEOUT: Duration = Duration::from_millis(300);

/// How many bytes are peeked at most: enough for a request head.
pub const PEEK_LIMIT: usize = 4096;

/// Well-known server-first ports: the server speaks first, so waiting for
/// the client would only add the timeout to every connection.
pub const SERVER_FIRST_PORTS: &[u16] = &[
    21,   // FTP
    22,   // SSH (both sides send a banner; the server's often first)
    25,   // SMTP
    110,  // POP3
    143,  // IMAP
    587,  // SMTP submission
    3306, // MySQL
    4222, // NATS
    5222, // XMPP (server greets after the stream header)
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1 request: routed per request.
    Http1,
    /// The HTTP/2 prior-knowledge preface (gRPC, h2c).
    Http2,
    /// An HTTP/1 request asking to switch protocols (WebSocket): the whole
    /// connection is tunnelled so the upgraded bytes flow end to end.
    Upgrade,
    /// Anything else.
    Opaque,
    /// Not enough bytes to tell yet.
    NeedMore,
}

impl Detected {
    /// Per-request HTTP routing applies.
    pub fn is_http(self) -> bool {
        matches!(self, Detected::Http1 | Detected::Http2)
    }
}

/// The `protocol` label of a captured outbound connection: `http`,
/// `upgrade` (tunnelled HTTP/1 upgrade), `opaque` (bytes that are not
/// HTTP), `opaque_silent` (the client sent nothing before the timeout) or
/// `opaque_declared` (detection skipped for the port).
pub fn protocol_label(skipped: bool, detected: Detected, seen: usize) -> &'static str {
    match (skipped, detected) {
        (true, _) => "opaque_declared",
        (false, Detected::Http1 | Detected::Http2) => "http",
        (false, Detected::Upgrade) => "upgrade",
        (false, _) if seen == 0 => "opaque_silent",
        (false, _) => "opaque",
    }
}

/// Whether to sniff at all: declared TCP ports, opaque ports and
/// server-first ports skip it.
pub fn should_detect(port: u16, declared: Protocol, opaque_ports: &[u16]) -> bool {
    declared != Protocol::Tcp
        && !opaque_ports.contains(&port)
        && !SERVER_FIRST_PORTS.contains(&port)
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
];

/// What `buf` (the first bytes the client sent) is. `complete` says no more
/// bytes will come in time (timeout or end of stream), so a partial match
/// must be decided now.
pub fn detect(buf: &[u8], complete: bool) -> Detected {
    if buf.is_empty() {
        return if complete {
            Detected::Opaque
        } else {
            Detected::NeedMore
        };
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return match (n == H2_PREFACE.len(), complete) {
            (true, _) => Detected::Http2,
            (false, false) => Detected::NeedMore,
            (false, true) => Detected::Opaque,
        };
    }
    let method = METHODS.iter().find(|m| {
        let k = buf.len().min(m.len());
        buf[..k] == m[..k]
    });
    let Some(method) = method else {
        return Detected::Opaque;
    };
    if buf.len() < method.len() {
        return if complete {
            Detected::Opaque
        } else {
            Detected::NeedMore
        };
    }
    // A method matched; look for an Upgrade header in the head.
    match head_end(buf) {
        Some(end) if has_upgrade(&buf[..end]) => Detected::Upgrade,
        Some(_) => Detected::Http1,
        None if complete || buf.len() >= PEEK_LIMIT => Detected::Http1,
        None => Detected::NeedMore,
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn has_upgrade(head: &[u8]) -> bool {
    head.split(|b| *b == b'\n').skip(1).any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.len() > 8
            && line[..8].eq_ignore_ascii_case(b"upgrade:")
            && !line[8..].iter().all(u8::is_ascii_whitespace)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection() {
        let ws =
            b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let cases: Vec<(&[u8], bool, Detected)> = vec![
            (b"", false, Detected::NeedMore),
            (b"", true, Detected::Opaque),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, Detected::Http1),
            (
                b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
                false,
                Detected::Http1,
            ),
            (b"GET / HTTP/1.1\r\nHost: x\r\n", false, Detected::NeedMore),
            (b"GET / HTTP/1.1\r\nHost: x\r\n", true, Detected::Http1),
            (b"GE", false, Detected::NeedMore),
            (b"GE", true, Detected::Opaque),
            (ws, false, Detected::Upgrade),
            (
                b"GET / HTTP/1.1\r\nX-Upgrade: no\r\n\r\n",
                false,
                Detected::Http1,
            ),
            (
                b"GET / HTTP/1.1\r\nupgrade: h2c\r\n\r\n",
                false,
                Detected::Upgrade,
            ),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00",
                false,
                Detected::Http2,
            ),
            (b"PRI * HTTP/2", false, Detected::NeedMore),
            (b"PRI * HTTP/2", true, Detected::Opaque),
            // redis RESP, postgres startup, TLS client hello
            (b"*1\r\n$4\r\nPING\r\n", false, Detected::Opaque),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", false, Detected::Opaque),
            (b"\x16\x03\x01\x02\x00\x01", false, Detected::Opaque),
            (b"get / HTTP/1.1\r\n\r\n", false, Detected::Opaque),
        ];
        for (buf, complete, want) in cases {
            assert_eq!(
                detect(buf, complete),
                want,
                "{:?} complete={complete}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn labels() {
        let cases = [
            (true, Detected::Opaque, 0, "opaque_declared"),
            (false, Detected::Http1, 40, "http"),
            (false, Detected::Http2, 24, "http"),
            (false, Detected::Upgrade, 90, "upgrade"),
            (false, Detected::Opaque, 8, "opaque"),
            (false, Detected::Opaque, 0, "opaque_silent"),
        ];
        for (skipped, d, seen, want) in cases {
            assert_eq!(protocol_label(skipped, d, seen), want, "{d:?}");
        }
    }

    #[test]
    fn skipping() {
        let cases = [
            (80, Protocol::Http, &[][..], true),
            (8080, Protocol::Grpc, &[][..], true),
            (6379, Protocol::Tcp, &[][..], false),
            (3306, Protocol::Http, &[][..], false),
            (25, Protocol::Http, &[][..], false),
            (587, Protocol::Http, &[][..], false),
            (5432, Protocol::Http, &[][..], true),
            (9000, Protocol::Http, &[9000][..], false),
        ];
        for (port, proto, opaque, want) in cases {
            assert_eq!(should_detect(port, proto, opaque), want, "{port}");
        }
    }
}
