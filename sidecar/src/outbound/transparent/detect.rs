//! Protocol detection on a captured connection: is the client speaking
//! HTTP? [`detect`] is a pure function over the first bytes;
//! [`read_and_detect`] reads them under one short timeout.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::core::directory::Protocol;

/// How long the client gets to send its first bytes. A client-first
/// protocol sends at once; one that stays silent is treated as opaque TCP.
pub const DETECT_TIMEOUT: Duration = Duration::from_millis(300);

/// How many bytes are read at most before deciding: enough for a request
/// head. They are replayed to whoever serves the connection.
pub const DETECT_LIMIT: usize = 4096;

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
/// The methods taken for HTTP, each with the space after it. Bytes that
/// cannot begin one of these are opaque at once, without waiting for more.
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
/// Header fields parsed to look for `Upgrade`; a head with more is still
/// HTTP/1 (hyper applies its own limits to it).
const MAX_HEADERS: usize = 128;

/// What `buf` (the first bytes the client sent) is. `complete` says no more
/// bytes will come in time (timeout or end of stream), so a partial match
/// must be decided now; a full buffer ([`DETECT_LIMIT`]) counts as complete.
///
/// HTTP/1 is a known method and a request line `httparse` accepts up to the
/// version; the head is read on (while it stays valid) only to see whether
/// it asks for an upgrade. A request line that is not finished when the
/// bytes stop is opaque: it is carried unchanged, never guessed at.
pub fn detect(buf: &[u8], complete: bool) -> Detected {
    let complete = complete || buf.len() >= DETECT_LIMIT;
    if buf.is_empty() {
        return undecided(complete);
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Detected::Http2
        } else {
            undecided(complete)
        };
    }
    let Some(method) = METHODS.iter().find(|m| {
        let k = buf.len().min(m.len());
        buf[..k] == m[..k]
    }) else {
        return Detected::Opaque;
    };
    if buf.len() < method.len() {
        return undecided(complete);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(buf);
    // The version is set once the request line is read up to it.
    let request_line = req.version.is_some();
    match parsed {
        Ok(httparse::Status::Complete(_)) if has_upgrade(req.headers) => Detected::Upgrade,
        Ok(httparse::Status::Complete(_)) => Detected::Http1,
        // A valid request line followed by a header hyper will refuse: it
        // is still HTTP, and hyper answers it as such.
        Err(_) if request_line => Detected::Http1,
        Err(_) => Detected::Opaque,
        Ok(httparse::Status::Partial) if !complete => Detected::NeedMore,
        Ok(httparse::Status::Partial) if request_line => Detected::Http1,
        Ok(httparse::Status::Partial) => Detected::Opaque,
    }
}

fn undecided(complete: bool) -> Detected {
    if complete {
        Detected::Opaque
    } else {
        Detected::NeedMore
    }
}

fn has_upgrade(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade") && !h.value.iter().all(u8::is_ascii_whitespace)
    })
}

/// Reads the connection's first bytes until [`detect`] decides, the buffer
/// is full, the stream ends or `timeout` passes, all under that one
/// timeout. Returns the decision and every byte read, which the caller
/// must replay in front of the stream ([`crate::core::prefixed`]).
pub async fn read_and_detect<R>(io: &mut R, timeout: Duration) -> (Detected, Vec<u8>)
where
    R: AsyncRead + Unpin,
{
    let mut buf = vec![0u8; DETECT_LIMIT];
    let mut seen = 0;
    let reading = async {
        loop {
            match io.read(&mut buf[seen..]).await {
                // End of stream, or a broken one: decided on what came.
                Ok(0) | Err(_) => return detect(&buf[..seen], true),
                Ok(n) => {
                    seen += n;
                    let d = detect(&buf[..seen], false);
                    if d != Detected::NeedMore {
                        return d;
                    }
                }
            }
        }
    };
    let outcome = tokio::time::timeout(timeout, reading).await;
    let detected = outcome.unwrap_or_else(|_| detect(&buf[..seen], true));
    buf.truncate(seen);
    (detected, buf)
}

#[cfg(test)]
mod tests;
