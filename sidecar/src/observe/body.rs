//! The response body of an observed request: counts its bytes, reads a
//! gRPC trailer's status, and ends the span and writes the access line
//! once, when the body ends or is dropped (the caller went away).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::span::RequestSpan;
use super::{grpc_status, Observer, RequestLine, Served};
use crate::core::http::{Body, BoxError};
use crate::metrics::{Direction, RequestHandles};

/// What is written when the body ends.
pub(super) struct End {
    pub observer: Arc<Observer>,
    pub direction: Direction,
    pub at: Instant,
    pub code: u16,
    pub service: String,
    pub served: Served,
    pub grpc_status: Option<u32>,
    /// Set when the gRPC status is still to come, in trailers.
    pub grpc_handles: Option<RequestHandles>,
    pub span: Option<RequestSpan>,
    pub request: Option<RequestLine>,
}

impl End {
    fn complete(mut self, bytes: u64) {
        if let (Some(h), Some(s)) = (&self.grpc_handles, self.grpc_status) {
            h.grpc_status(s);
        }
        let ids = self.span.as_ref().map(RequestSpan::ids);
        if let (Some(log), Some(request)) = (&self.observer.access_log, self.request.take()) {
            log.write(&super::access_log::Line {
                direction: self.direction,
                request: &request,
                code: self.code,
                service: &self.service,
                served: &self.served,
                grpc_status: self.grpc_status,
                bytes,
                duration: self.at.elapsed(),
                trace: ids.as_ref().map(|(t, s)| (t.as_str(), s.as_str())),
            });
        }
        if let Some(span) = self.span.take() {
            span.end(
                self.code,
                &self.service,
                &self.served,
                self.grpc_status,
                bytes,
            );
        }
    }
}

pin_project_lite::pin_project! {
    struct Observed {
        #[pin]
        inner: Body,
        end: Option<End>,
        bytes: u64,
    }

    impl PinnedDrop for Observed {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(end) = this.end.take() {
                end.complete(*this.bytes);
            }
        }
    }
}

pub(super) fn observed(inner: Body, end: End) -> Body {
    use http_body_util::BodyExt as _;
    Observed {
        inner,
        end: Some(end),
        bytes: 0,
    }
    .boxed()
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let Some(end) = this.end.as_mut() {
                        if let Some(s) = grpc_status(trailers) {
                            end.grpc_status = Some(s);
                        }
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(end) = this.end.take() {
                    end.complete(*this.bytes);
                }
            }
            _ => {}
        }
        if this.inner.is_end_stream() {
            if let Some(end) = this.end.take() {
                end.complete(*this.bytes);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
