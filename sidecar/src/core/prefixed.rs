//! A stream that hands out bytes already read from it before reading on.
//!
//! Protocol detection has to read a connection's first bytes to decide how
//! to serve it; whoever serves it next (hyper, a tunnel) must still see the
//! connection from its first byte. [`Prefixed`] puts those bytes back in
//! front of the socket; writes go straight to the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, read as if `prefix` had not been taken out of it yet.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: impl Into<Bytes>, inner: S) -> Self {
        Prefixed {
            prefix: prefix.into(),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            // The rest of the prefix first, never mixed with socket bytes
            // in one read: the caller sees the stream as it arrived.
            let n = this.prefix.remaining().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_is_read_before_the_stream_and_writes_pass_through() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut s = Prefixed::new(&b"GET / HT"[..], client);
        server.write_all(b"TP/1.1\r\n\r\n").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");

        s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let mut back = [0u8; 19];
        server.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"HTTP/1.1 200 OK\r\n\r\n");
    }

    #[tokio::test]
    async fn a_small_read_buffer_gets_the_prefix_in_pieces() {
        let (client, server) = tokio::io::duplex(64);
        drop(server);
        let mut s = Prefixed::new(&b"abcdef"[..], client);
        let mut piece = [0u8; 4];
        assert_eq!(s.read(&mut piece).await.unwrap(), 4);
        assert_eq!(&piece, b"abcd");
        assert_eq!(s.read(&mut piece).await.unwrap(), 2);
        assert_eq!(&piece[..2], b"ef");
        assert_eq!(s.read(&mut piece).await.unwrap(), 0);
    }
}
