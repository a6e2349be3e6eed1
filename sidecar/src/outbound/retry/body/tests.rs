use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use http::HeaderValue;
use http_body_util::Full;

use super::*;
use crate::core::http::empty;

/// A body of scripted frames that counts how many were pulled from it,
/// with an exact size when `exact` is set.
struct Script {
    frames: VecDeque<Result<Frame<Bytes>, BoxError>>,
    pulled: Arc<AtomicUsize>,
    exact: Option<u64>,
}

impl HttpBody for Script {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = this.frames.pop_front();
        if frame.is_some() {
            this.pulled.fetch_add(1, Ordering::SeqCst);
        }
        Poll::Ready(frame)
    }

    fn size_hint(&self) -> SizeHint {
        self.exact.map_or_else(SizeHint::new, SizeHint::with_exact)
    }
}

fn script(
    chunks: &[&[u8]],
    trailers: Option<HeaderMap>,
    exact: Option<u64>,
) -> (Body, Arc<AtomicUsize>) {
    let mut frames: VecDeque<_> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    if let Some(t) = trailers {
        frames.push_back(Ok(Frame::trailers(t)));
    }
    let pulled = Arc::new(AtomicUsize::new(0));
    let body = Script {
        frames,
        pulled: pulled.clone(),
        exact,
    };
    (boxed(body), pulled)
}

fn trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("x-checksum", HeaderValue::from_static("abc123"));
    t
}

async fn collect(body: Body) -> (Bytes, Option<HeaderMap>) {
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[tokio::test]
async fn small_body_replays_identically_each_try() {
    let (body, _) = script(&[b"hello ", b"mesh"], Some(trailers()), Some(10));
    let Buffered::Replayable(replay) = buffer_for_retry(body, 64).await.unwrap() else {
        panic!("a 10-byte body fits in 64");
    };
    assert_eq!(replay.len(), 10);
    for _ in 0..3 {
        let body = replay.body();
        assert_eq!(body.size_hint().exact(), Some(10));
        let (data, t) = collect(body).await;
        assert_eq!(data, "hello mesh");
        assert_eq!(t, Some(trailers()));
    }
}

#[tokio::test]
async fn chunked_body_that_fits_is_replayable() {
    // Unknown size; exactly at the limit still fits.
    let (body, pulled) = script(&[b"abc", b"defg", b"hij"], None, None);
    let Buffered::Replayable(replay) = buffer_for_retry(body, 10).await.unwrap() else {
        panic!("10 bytes fit in 10");
    };
    assert_eq!(pulled.load(Ordering::SeqCst), 3);
    let clone = replay.clone();
    assert_eq!(
        collect(replay.body()).await,
        (Bytes::from("abcdefghij"), None)
    );
    assert_eq!(
        collect(clone.body()).await,
        (Bytes::from("abcdefghij"), None)
    );
}

#[tokio::test]
async fn body_over_the_limit_streams_every_byte_unchanged() {
    let chunk = [7u8; 1000];
    let chunks: Vec<&[u8]> = (0..10).map(|_| &chunk[..]).collect();
    let (body, pulled) = script(&chunks, Some(trailers()), None);
    let Buffered::Streaming(body) = buffer_for_retry(body, 2500).await.unwrap() else {
        panic!("10000 bytes do not fit in 2500");
    };
    // Read up to the frame that crossed the limit, and no further.
    assert_eq!(pulled.load(Ordering::SeqCst), 3);
    assert_eq!(body.size_hint().lower(), 3000);
    let (data, t) = collect(body).await;
    assert_eq!(data.len(), 10_000);
    assert!(data.iter().all(|b| *b == 7));
    assert_eq!(t, Some(trailers()));
    assert_eq!(pulled.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn body_known_to_be_too_large_is_not_read() {
    let (body, pulled) = script(&[b"0123456789"], None, Some(10));
    let Buffered::Streaming(body) = buffer_for_retry(body, 9).await.unwrap() else {
        panic!("10 bytes do not fit in 9");
    };
    assert_eq!(pulled.load(Ordering::SeqCst), 0);
    assert_eq!(collect(body).await.0, "0123456789");

    let full = boxed(Full::new(Bytes::from_static(b"too big")));
    let buffered = buffer_for_retry(full, 3).now_or_never().unwrap().unwrap();
    assert!(matches!(buffered, Buffered::Streaming(_)));
}

#[test]
fn empty_body_is_replayable_at_once() {
    let buffered = buffer_for_retry(empty(), 0).now_or_never();
    let Some(Ok(Buffered::Replayable(replay))) = buffered else {
        panic!("an empty body needs no reading: {buffered:?}");
    };
    assert!(replay.is_empty());
    let body = replay.body();
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
}

#[tokio::test]
async fn body_that_fails_midway_is_an_error() {
    let frames: VecDeque<Result<Frame<Bytes>, BoxError>> = VecDeque::from([
        Ok(Frame::data(Bytes::from_static(b"part"))),
        Err("client went away".into()),
        Ok(Frame::data(Bytes::from_static(b"never"))),
    ]);
    let body = boxed(Script {
        frames,
        pulled: Arc::new(AtomicUsize::new(0)),
        exact: None,
    });
    let err = buffer_for_retry(body, 1024).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "reading the request body: client went away"
    );
}
