//! Storing a response while it streams: the backend's body is passed to the
//! client frame by frame as it arrives, and a copy is kept alongside, up to
//! a limit. Only a body that ends cleanly is handed on to be stored; a body
//! that errors, grows past the limit, carries trailers (which the stored
//! response could not replay), ends short of its `Content-Length`, or is
//! dropped before its end (the client went away) stores nothing and stops
//! copying at once. The client sees the same frames either way.
//!
//! Copies in flight are bounded twice: each by its limit, and all of them
//! together by an [`InFlight`] budget, so many slow concurrent misses
//! cannot buffer without bound; past the budget, responses pass through
//! uncopied.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

use crate::core::http::{boxed, Body, BoxError};

/// Called with the whole body when it ended cleanly.
pub type Complete = Box<dyn FnOnce(Bytes) + Send + Sync>;

/// Bytes being copied by all recordings together, at most `limit`.
#[derive(Debug)]
pub struct InFlight {
    used: AtomicUsize,
    limit: usize,
}

impl InFlight {
    pub fn new(limit: usize) -> InFlight {
        InFlight {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    fn reserve(&self, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.limit {
            self.used.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// The copy of one body being recorded.
pub struct Capture {
    buf: BytesMut,
    limit: usize,
    expected: Option<u64>,
    in_flight: Arc<InFlight>,
    reserved: usize,
    complete: Option<Complete>,
}

impl Capture {
    /// A copy of at most `limit` bytes, expected to be `expected` long
    /// (`Content-Length`) when known, handed to `complete` when whole.
    pub fn new(
        limit: usize,
        expected: Option<u64>,
        in_flight: Arc<InFlight>,
        complete: Complete,
    ) -> Capture {
        Capture {
            buf: BytesMut::new(),
            limit,
            expected,
            in_flight,
            reserved: 0,
            complete: Some(complete),
        }
    }

    /// Copies `data`; false when it does not fit (the copy is then
    /// abandoned).
    fn keep(&mut self, data: &[u8]) -> bool {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            return false;
        }
        if !self.in_flight.reserve(data.len()) {
            return false;
        }
        self.reserved += data.len();
        if self.buf.is_empty() {
            // The whole body at once when its length is known (and fits).
            let expected = self
                .expected
                .map_or(0, |e| e.min(self.limit as u64) as usize);
            self.buf.reserve(expected.max(data.len()));
        }
        self.buf.extend_from_slice(data);
        true
    }

    fn finish(mut self) {
        if self.expected.is_some_and(|e| e != self.buf.len() as u64) {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        // What is stored is counted by its length: spare capacity from
        // growth is not kept.
        let body = if buf.capacity() > buf.len() {
            Bytes::copy_from_slice(&buf)
        } else {
            buf.freeze()
        };
        if let Some(complete) = self.complete.take() {
            complete(body);
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.in_flight.release(self.reserved);
    }
}

pin_project_lite::pin_project! {
    struct Recording {
        #[pin]
        inner: Body,
        capture: Option<Capture>,
    }
}

/// `body`, copied into `capture` as it passes.
pub fn record(body: Body, capture: Capture) -> Body {
    boxed(Recording {
        inner: body,
        capture: Some(capture),
    })
}

impl http_body::Body for Recording {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = ready!(this.inner.as_mut().poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                let kept = match (this.capture.as_mut(), frame.data_ref()) {
                    (Some(capture), Some(data)) => capture.keep(data),
                    // Trailers: a stored response could not replay them.
                    (Some(_), None) => false,
                    (None, _) => true,
                };
                if !kept {
                    *this.capture = None;
                } else if this.inner.is_end_stream() {
                    // hyper stops polling once the body says it ended, so
                    // the last frame may be the last call.
                    if let Some(capture) = this.capture.take() {
                        capture.finish();
                    }
                }
            }
            Some(Err(_)) => *this.capture = None,
            None => {
                if let Some(capture) = this.capture.take() {
                    capture.finish();
                }
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
