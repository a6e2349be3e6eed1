//! The little of RESP2 (the Redis protocol) the global limiter speaks:
//! commands as arrays of bulk strings, and replies parsed incrementally
//! from a buffer with bounds on every length, since a reply is data from
//! the network.

use std::fmt;

/// Longest simple string, error or length line.
const MAX_LINE: usize = 4096;
/// Largest bulk string: the limiter's replies are a few dozen bytes.
const MAX_BULK: usize = 64 * 1024;
/// Most elements in an array.
const MAX_ARRAY: usize = 64;
/// Deepest nesting of arrays.
const MAX_DEPTH: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `None` is the nil bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None` is the nil array.
    Array(Option<Vec<Reply>>),
}

impl fmt::Display for Reply {
    /// Short, for error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "+{s}"),
            Reply::Error(e) => write!(f, "-{e}"),
            Reply::Integer(i) => write!(f, ":{i}"),
            Reply::Bulk(None) => write!(f, "nil"),
            Reply::Bulk(Some(b)) => write!(f, "bulk of {} bytes", b.len()),
            Reply::Array(None) => write!(f, "nil array"),
            Reply::Array(Some(a)) => write!(f, "array of {}", a.len()),
        }
    }
}

/// Why bytes from Redis are not a reply this client accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RespError {
    #[error("unexpected type byte {0:#04x}")]
    Type(u8),
    #[error("line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("not a number: {0:?}")]
    Number(String),
    #[error("bulk string of {0} bytes (at most {MAX_BULK})")]
    BulkTooLarge(i64),
    #[error("array of {0} elements (at most {MAX_ARRAY})")]
    ArrayTooLarge(i64),
    #[error("arrays nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("bulk string not followed by CRLF")]
    MissingCrlf,
}

/// Appends `args` as one command.
pub(crate) fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The first reply in `buf` and the bytes it took, or `None` when `buf`
/// holds only part of one.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((line, mut next)) = line(buf, pos + 1)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let reply = match tag {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Integer(number(line)?),
        b'$' => {
            let len = number(line)?;
            if len == -1 {
                Reply::Bulk(None)
            } else {
                let n = usize::try_from(len)
                    .ok()
                    .filter(|n| *n <= MAX_BULK)
                    .ok_or(RespError::BulkTooLarge(len))?;
                let Some(end) = buf.get(next..next + n + 2) else {
                    return Ok(None);
                };
                if &end[n..] != b"\r\n" {
                    return Err(RespError::MissingCrlf);
                }
                let bytes = end[..n].to_vec();
                next += n + 2;
                Reply::Bulk(Some(bytes))
            }
        }
        b'*' => {
            let len = number(line)?;
            if len == -1 {
                Reply::Array(None)
            } else {
                let n = usize::try_from(len)
                    .ok()
                    .filter(|n| *n <= MAX_ARRAY)
                    .ok_or(RespError::ArrayTooLarge(len))?;
                if depth >= MAX_DEPTH {
                    return Err(RespError::TooDeep);
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let Some((item, after)) = parse_at(buf, next, depth + 1)? else {
                        return Ok(None);
                    };
                    items.push(item);
                    next = after;
                }
                Reply::Array(Some(items))
            }
        }
        other => return Err(RespError::Type(other)),
    };
    Ok(Some((reply, next)))
}

/// The line starting at `pos` (without CRLF) and where the next begins.
fn line(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = buf.get(pos..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&rest[..end], pos + end + 2))),
        None if rest.len() > MAX_LINE + 1 => Err(RespError::LineTooLong),
        None => Ok(None),
    }
}

fn number(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RespError::Number(String::from_utf8_lossy(line).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode(&[b"GET", b"k\r\n"], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n");
    }

    #[test]
    fn parses_every_type() {
        let cases: [(&[u8], Reply); 7] = [
            (b"+OK\r\n", Reply::Simple("OK".into())),
            (
                b"-NOSCRIPT No matching script\r\n",
                Reply::Error("NOSCRIPT No matching script".into()),
            ),
            (b":-42\r\n", Reply::Integer(-42)),
            (b"$3\r\na\r\n\r\n", Reply::Bulk(Some(b"a\r\n".to_vec()))),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Array(None)),
            (
                b"*3\r\n:1\r\n*1\r\n:2\r\n$0\r\n\r\n",
                Reply::Array(Some(vec![
                    Reply::Integer(1),
                    Reply::Array(Some(vec![Reply::Integer(2)])),
                    Reply::Bulk(Some(vec![])),
                ])),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), Ok(Some((want.clone(), bytes.len()))));
            // Every strict prefix is incomplete, not an error.
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut]), Ok(None), "{want:?} cut at {cut}");
            }
        }
        // Two replies back to back: the first, and where the second starts.
        assert_eq!(parse(b":1\r\n:2\r\n"), Ok(Some((Reply::Integer(1), 4))));
    }

    #[test]
    fn refuses_what_it_should_not_buffer() {
        assert_eq!(parse(b"!x\r\n"), Err(RespError::Type(b'!')));
        assert_eq!(parse(b":x\r\n"), Err(RespError::Number("x".into())));
        assert_eq!(
            parse(b"$99999999\r\n"),
            Err(RespError::BulkTooLarge(99_999_999))
        );
        assert_eq!(parse(b"$-2\r\n"), Err(RespError::BulkTooLarge(-2)));
        assert_eq!(parse(b"*65\r\n"), Err(RespError::ArrayTooLarge(65)));
        assert_eq!(parse(b"$1\r\nab\r\n"), Err(RespError::MissingCrlf));
        assert_eq!(
            parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"),
            Err(RespError::TooDeep)
        );
        let endless = vec![b'+'; MAX_LINE + 10];
        assert_eq!(parse(&endless), Err(RespError::LineTooLong));
        let mut longest = vec![b'+'; MAX_LINE + 1];
        longest.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&longest), Ok(Some(_))));
    }
}
