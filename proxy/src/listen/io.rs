//! A client connection's byte stream, plain or TLS, carrying the listener slot it
//! occupies. The slot lives as long as the socket: through an upgrade (WebSocket) the
//! stream moves into the tunnel, and the slot with it.

use prometheus::IntGauge;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::AcqRel};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// One of a listener's `max_connections` places, and its share of the open gauge.
#[derive(Debug)]
pub(super) struct Slot {
    open: Arc<AtomicUsize>,
    gauge: IntGauge,
}

impl Slot {
    /// Takes a place unless `max` are taken.
    pub fn take(open: &Arc<AtomicUsize>, max: usize, gauge: &IntGauge) -> Option<Slot> {
        if open.fetch_add(1, AcqRel) >= max {
            open.fetch_sub(1, AcqRel);
            return None;
        }
        gauge.inc();
        Some(Slot {
            open: open.clone(),
            gauge: gauge.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, AcqRel);
        self.gauge.dec();
    }
}

/// What hyper reads from and writes to.
pub(super) struct ClientIo {
    stream: Stream,
    _slot: Slot,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientIo {
    pub fn plain(stream: TcpStream, slot: Slot) -> Self {
        ClientIo {
            stream: Stream::Plain(stream),
            _slot: slot,
        }
    }

    pub fn tls(stream: Box<TlsStream<TcpStream>>, slot: Slot) -> Self {
        ClientIo {
            stream: Stream::Tls(stream),
            _slot: slot,
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_and_come_back() {
        let open = Arc::new(AtomicUsize::new(0));
        let gauge = IntGauge::new("g", "g").expect("gauge");
        let a = Slot::take(&open, 2, &gauge).expect("first");
        let _b = Slot::take(&open, 2, &gauge).expect("second");
        assert!(Slot::take(&open, 2, &gauge).is_none());
        assert_eq!(gauge.get(), 2);
        drop(a);
        assert!(Slot::take(&open, 2, &gauge).is_some());
        assert_eq!(open.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
