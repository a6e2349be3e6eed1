//! Where a captured connection was going before iptables redirected it.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// Reads a captured connection's original destination. A trait so the
/// listener is tested without root and iptables.
pub trait OrigDst: Send + Sync + 'static {
    fn original_dst(&self, tcp: &TcpStream) -> std::io::Result<SocketAddr>;
}

/// The kernel's answer: `SO_ORIGINAL_DST` (IPv4) on the accepted socket,
/// set by the `nat` table's `REDIRECT`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SockOpt;

impl OrigDst for SockOpt {
    fn original_dst(&self, tcp: &TcpStream) -> std::io::Result<SocketAddr> {
        let addr = socket2::SockRef::from(tcp).original_dst_v4()?;
        addr.as_socket().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "original destination is not an IP socket address",
            )
        })
    }
}

/// Any closure works as a fake: tests map a connection to the destination
/// they pretend it had.
impl<F> OrigDst for F
where
    F: Fn(&TcpStream) -> std::io::Result<SocketAddr> + Send + Sync + 'static,
{
    fn original_dst(&self, tcp: &TcpStream) -> std::io::Result<SocketAddr> {
        self(tcp)
    }
}
