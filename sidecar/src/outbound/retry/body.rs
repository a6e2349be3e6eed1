//! Keeping a request body so that it can be sent again.
//!
//! A body is read into memory only while it fits the policy's limit; a
//! larger one is handed on as a stream that first replays what was read,
//! so the request still goes out whole, just without a retry. At most
//! `limit` bytes plus the one frame that crossed it are ever held.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::core::http::{boxed, Body, BoxError};

/// The request body could not be read from the caller; the request cannot
/// be sent at all (the caller decides the status, typically 400).
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("reading the request body: {0}")]
    Read(#[source] BoxError),
}

/// A request body after [`buffer_for_retry`].
pub enum Buffered {
    /// Whole in memory: each try gets a fresh copy.
    Replayable(ReplayBody),
    /// Too large to keep: sent once, as it came.
    Streaming(Body),
}

impl std::fmt::Debug for Buffered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Buffered::Replayable(r) => f.debug_tuple("Replayable").field(r).finish(),
            Buffered::Streaming(_) => f.write_str("Streaming(..)"),
        }
    }
}

/// A whole request body, cheap to clone: its chunks are shared, not copied.
#[derive(Clone, Debug, Default)]
pub struct ReplayBody {
    chunks: Arc<[Bytes]>,
    trailers: Option<Arc<HeaderMap>>,
    len: u64,
}

impl ReplayBody {
    /// A fresh body with the same data and trailers, for one try.
    pub fn body(&self) -> Body {
        boxed(Replay {
            chunks: self.chunks.clone(),
            next: 0,
            trailers: self.trailers.clone(),
            left: self.len,
        })
    }

    /// Bytes of data (trailers not counted).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.trailers.is_none()
    }
}

/// Reads `body` while it fits in `limit` bytes. Returns without reading
/// when the body is already known to be empty or too large.
pub async fn buffer_for_retry(mut body: Body, limit: usize) -> Result<Buffered, BufferError> {
    if body.is_end_stream() {
        return Ok(Buffered::Replayable(ReplayBody::default()));
    }
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    if body.size_hint().lower() > limit {
        return Ok(Buffered::Streaming(body));
    }
    let mut chunks = Vec::new();
    let mut len: u64 = 0;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BufferError::Read)?;
        match frame.into_data() {
            Ok(data) => {
                len = len.saturating_add(data.len() as u64);
                chunks.push(data);
                if len > limit {
                    let prefix = chunks.into_iter().map(Frame::data).collect();
                    return Ok(Buffered::Streaming(boxed(Prefixed { prefix, rest: body })));
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(Arc::new(t));
                }
            }
        }
    }
    Ok(Buffered::Replayable(ReplayBody {
        chunks: chunks.into(),
        trailers,
        len,
    }))
}

/// One try's copy of a [`ReplayBody`].
struct Replay {
    chunks: Arc<[Bytes]>,
    next: usize,
    trailers: Option<Arc<HeaderMap>>,
    left: u64,
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.chunks.get(this.next) {
            this.next += 1;
            this.left = this.left.saturating_sub(chunk.len() as u64);
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        let trailers = this.trailers.take();
        Poll::Ready(trailers.map(|t| Ok(Frame::trailers(HeaderMap::clone(&t)))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.chunks.len() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// The frames already read, then the rest of the original body.
struct Prefixed {
    prefix: VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .prefix
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(buffered));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint
    }
}

#[cfg(test)]
mod tests;
