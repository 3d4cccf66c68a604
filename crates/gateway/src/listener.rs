//! The TCP side of a node: how many connections it accepts at all and from one
//! address, before any HTTP is read. The WebSocket limits (`max_connections`,
//! per-address caps and rates) answer with a close code after the upgrade; these
//! come first, so that sockets which never send a request (or never finish one)
//! cannot hold every file descriptor (`docs/decisions/0018-http1-with-a-header-timeout.md`).

use crate::limits::{OpenCounts, OpenGuard};
use crate::TrustedProxies;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// TCP connections a node accepts at once: its WebSocket cap and a headroom for
/// plain HTTP requests and for WebSockets about to be refused with 1013 (a quarter
/// of the cap, at least 1 and at most 64).
pub fn socket_cap(max_connections: usize) -> usize {
    max_connections + (max_connections / 4).clamp(1, 64)
}

/// The largest WebSocket cap whose [`socket_cap`] fits in `sockets` (at least 1).
pub fn connections_within(sockets: usize) -> usize {
    // From an estimate (exact once the headroom is 64), a few steps either way.
    let mut c = sockets.saturating_sub(64).max(sockets / 5 * 4).max(1);
    while c > 1 && socket_cap(c) > sockets {
        c -= 1;
    }
    while socket_cap(c + 1) <= sockets {
        c += 1;
    }
    c
}

/// Connections one address may hold beyond its WebSocket cap: a browser's page
/// loads and API calls beside its chat.
const HTTP_PER_ADDRESS: usize = 32;

/// A TCP listener that refuses (closes at once) a connection over the node's
/// socket cap, or over its address's share unless the address is a trusted proxy
/// (whose clients are told apart by `X-Forwarded-For`, after the request is read).
pub(crate) struct GuardedListener {
    inner: TcpListener,
    total: Arc<AtomicUsize>,
    max_total: usize,
    per_address: OpenCounts,
    trusted: TrustedProxies,
}

impl GuardedListener {
    pub(crate) fn new(
        inner: TcpListener,
        max_connections: usize,
        max_connections_per_address: usize,
        trusted: TrustedProxies,
    ) -> Self {
        Self {
            inner,
            total: Arc::new(AtomicUsize::new(0)),
            max_total: socket_cap(max_connections),
            per_address: OpenCounts::new(
                max_connections_per_address.saturating_add(HTTP_PER_ADDRESS),
            ),
            trusted,
        }
    }

    /// A slot for a connection from `peer`, if it is within the caps.
    fn admit(&self, peer: IpAddr) -> Option<Slot> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return refused("sockets");
        }
        // Built now, so that a refusal below gives the count back.
        let mut slot = Slot {
            total: self.total.clone(),
            _address: None,
        };
        if !self.trusted.contains(peer) {
            slot._address = Some(
                self.per_address
                    .open(peer)
                    .or_else(|| refused("sockets_per_address"))?,
            );
        }
        Some(slot)
    }
}

fn refused<T>(limit: &'static str) -> Option<T> {
    metrics::counter!(pitboss_desk::telemetry::RATE_LIMITED, "limit" => limit).increment(1);
    tracing::debug!(limit, "a TCP connection over the limit was closed");
    None
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or a connection reset while queued: the
                    // listener itself is fine; pause so a full table can drain.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = self.admit(peer.ip()) else {
                continue;
            };
            // Chat frames are small and latency-bound: without TCP_NODELAY,
            // Nagle's algorithm holds a frame back until the peer's delayed ack.
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "cannot set TCP_NODELAY");
            }
            return (
                GuardedStream {
                    inner: stream,
                    _slot: slot,
                },
                peer,
            );
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One admitted connection's place in the counts, given back when it closes
/// (as plain HTTP, or as the WebSocket it became).
struct Slot {
    total: Arc<AtomicUsize>,
    /// Its address's share, unless the peer is a trusted proxy.
    _address: Option<OpenGuard>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP stream holding its [`Slot`].
pub(crate) struct GuardedStream {
    inner: TcpStream,
    _slot: Slot,
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_cap_and_its_inverse_agree() {
        for sockets in (1usize..2_000).chain([19_744, 50_000]) {
            let connections = connections_within(sockets);
            assert!(socket_cap(connections) <= sockets.max(2), "{sockets}");
            assert!(
                socket_cap(connections + 1) > sockets,
                "{sockets}: the largest"
            );
        }
        assert_eq!(socket_cap(50_000), 50_064);
        assert_eq!(connections_within(32), 26);
    }
}
