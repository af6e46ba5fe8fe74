//! One upstream HTTP/2 connection as the pool sees it: the task that drives it, reading
//! the peer's `SETTINGS_MAX_CONCURRENT_STREAMS` (`http2::Connection::current_max_send_streams`)
//! so the pool knows how many streams the connection takes.
//!
//! hyper runs the h2 connection itself in a task of its own; the `http2::Connection`
//! driven here is its request dispatcher, polled when a request is handed over. So the
//! limit is read after each of those polls (a later SETTINGS is seen at the next request
//! on the connection), and before the first SETTINGS has been seen the socket wakes the
//! driver too: a read that finds nothing more to read comes after h2 has handled (and
//! applied) every frame read before it ([`Watched`]).

use super::client::Io;
use crate::coalesce::Coalesced;
use crate::http::body::RequestBody;
use futures_util::task::AtomicWaker;
use hyper::client::conn::http2;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};

/// An upstream connection that can wake its driver while the peer's SETTINGS are awaited.
#[derive(Debug)]
pub struct Signalled {
    io: Coalesced<Io>,
    signal: Arc<Signal>,
}

#[derive(Debug)]
pub struct Signal {
    /// Until the driver has seen the peer's limit.
    armed: AtomicBool,
    driver: AtomicWaker,
}

impl Signalled {
    /// `io` with its writes batched ([`Coalesced`]).
    pub fn new(io: Io) -> (Self, Arc<Signal>) {
        let signal = Arc::new(Signal {
            armed: AtomicBool::new(true),
            driver: AtomicWaker::new(),
        });
        (
            Signalled {
                io: Coalesced::new(io),
                signal: signal.clone(),
            },
            signal,
        )
    }
}

impl Read for Signalled {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if read.is_pending() && self.signal.armed.load(Relaxed) {
            self.signal.driver.wake();
        }
        read
    }
}

impl Write for Signalled {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

pub type Connection = http2::Connection<Signalled, RequestBody, TokioExecutor>;

/// The connection's dispatcher, calling `publish` with the peer's stream limit (0 until
/// its first SETTINGS) whenever it changes; completes when the connection closes.
pub struct Watched<F> {
    conn: Connection,
    signal: Arc<Signal>,
    seen: u32,
    publish: F,
}

impl<F: FnMut(u32) + Unpin> Watched<F> {
    pub fn new(conn: Connection, signal: Arc<Signal>, publish: F) -> Self {
        Watched {
            conn,
            signal,
            seen: 0,
            publish,
        }
    }
}

impl<F: FnMut(u32) + Unpin> Future for Watched<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.signal.armed.load(Relaxed) {
            this.signal.driver.register(cx.waker());
        }
        let done = Pin::new(&mut this.conn).poll(cx);
        let limit = u32::try_from(this.conn.current_max_send_streams()).unwrap_or(u32::MAX);
        if limit != this.seen {
            this.seen = limit;
            this.signal.armed.store(false, Relaxed);
            (this.publish)(limit);
        }
        match done {
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "upstream HTTP/2 connection closed");
                Poll::Ready(())
            }
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }
}
