//! Write coalescing under the `h2` codec: the DATA frames one poll of an HTTP/2
//! connection produces leave in one write, not one write each.
//!
//! `h2` (0.4) holds at most one DATA frame whose payload it does not copy (anything
//! over 256 bytes with vectored I/O), and flushes the socket before it takes the next.
//! With many streams on a connection that is one `writev` per frame, and one wake-up
//! of the reader on the far side per frame (hyperium/h2#902). [`Coalesced`] copies
//! what `h2` writes into one buffer and puts it on the socket at the end of the batch:
//!
//! - a flush that follows a write of several slices (`h2`'s frame head and its
//!   payload: a flush it makes only to free that one frame slot) is put off, and the
//!   task is woken so a later poll flushes for certain;
//! - any other flush, the buffer reaching [`CAPACITY`], and shutdown write it out.
//!
//! `h2` ends every poll of its connection with a flush of its own (or a shutdown), so
//! what was put off leaves before the connection task sleeps. That is a property of
//! `h2`'s connection, not of I/O in general: this adapter is for HTTP/2 connections.
//! Before the first byte read, [`Coalesced::sniff`] leaves a connection alone unless the
//! client's first bytes are the HTTP/2 preface (HTTP/1.1 keeps hyper's own buffering).
//!
//! A connection that is not batched (HTTP/1.1, either side) still has its small gathered
//! writes joined: hyper writes a head and a short body as two slices, and one `send` of
//! the same bytes costs the kernel less than a `writev` (no iovec import, no VFS layer).
//! Up to [`GATHER`] bytes are copied into one buffer; a lone slice goes as it is.

use hyper::rt::{Read, ReadBufCursor, Write};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// The most bytes held before they are written, whatever the batch.
pub const CAPACITY: usize = 64 * 1024;
/// The most bytes of several slices an unbatched write copies to send them in one call.
pub const GATHER: usize = 1024;
/// What a batch's buffer starts with, so a batch of a few frames does not grow it in
/// steps. The buffer is let go once written: an idle connection holds none.
const FIRST: usize = 4096;
/// The start of the HTTP/2 client preface (RFC 9113 §3.4); `PRI` is no HTTP/1.1 method.
const PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// The most bytes the first read asks for when it looks for the preface (a request
/// head usually fits; a longer one is read on by the next call).
const SNIFF_READ: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every write goes straight to the socket.
    Through,
    /// Writes are batched.
    Batch,
    /// Undecided until the first bytes are read.
    Sniff,
}

/// A byte stream whose writes are batched for an HTTP/2 codec (module doc).
#[derive(Debug)]
pub struct Coalesced<T> {
    io: T,
    mode: Mode,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already on the socket.
    sent: usize,
    /// The last write since the last flush carried more than one slice.
    split: bool,
}

impl<T> Coalesced<T> {
    /// Batches every write (a connection known to speak HTTP/2).
    pub fn new(io: T) -> Self {
        Self::with_mode(io, Mode::Batch)
    }

    /// Never batches (HTTP/1.1).
    pub fn through(io: T) -> Self {
        Self::with_mode(io, Mode::Through)
    }

    /// Batches once the peer's first bytes turn out to be the HTTP/2 preface.
    pub fn sniff(io: T) -> Self {
        Self::with_mode(io, Mode::Sniff)
    }

    fn with_mode(io: T, mode: Mode) -> Self {
        Coalesced {
            io,
            mode,
            buf: Vec::new(),
            sent: 0,
            split: false,
        }
    }

    /// Whether writes are being batched.
    pub fn is_batching(&self) -> bool {
        self.mode == Mode::Batch
    }

    /// Bytes taken and not yet on the underlying stream.
    pub fn held(&self) -> usize {
        self.buf.len() - self.sent
    }
}

impl<T: Write + Unpin> Coalesced<T> {
    /// Writes out everything held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes `bufs` into the batch; what is held is written out first if they would
    /// not fit, and a write too big to hold goes straight to the socket.
    fn poll_hold(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum::<usize>();
        ready!(self.poll_room(cx, len))?;
        if self.buf.is_empty() && len >= CAPACITY {
            return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        }
        // A new batch starts with room for a few frames, so it does not grow in steps.
        self.buf.reserve(if self.buf.is_empty() {
            len.max(FIRST)
        } else {
            len
        });
        for b in bufs {
            self.buf.extend_from_slice(b);
        }
        self.split = bufs.iter().filter(|b| !b.is_empty()).count() > 1;
        Poll::Ready(Ok(len))
    }

    /// Makes room for `len` more bytes: writes out what is held if they would not fit.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() && self.buf.len() + len > CAPACITY {
            return self.poll_drain(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: Read + Unpin> Read for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if self.mode != Mode::Sniff {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        // The first read goes through a buffer of its own so its bytes can be seen
        // (once per connection).
        let mut first = [MaybeUninit::<u8>::uninit(); SNIFF_READ];
        let want = buf.remaining().min(SNIFF_READ);
        let mut probe = hyper::rt::ReadBuf::uninit(&mut first[..want]);
        ready!(Pin::new(&mut self.io).poll_read(cx, probe.unfilled()))?;
        let seen = probe.filled();
        buf.put_slice(seen);
        let n = seen.len().min(PREFACE.len());
        self.mode = if n >= 3 && PREFACE.starts_with(&seen[..n]) {
            Mode::Batch
        } else {
            Mode::Through
        };
        Poll::Ready(Ok(()))
    }
}

impl<T: Write + Unpin> Write for Coalesced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if me.mode != Mode::Batch {
            return Pin::new(&mut me.io).poll_write(cx, data);
        }
        me.poll_hold(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if me.mode != Mode::Batch {
            return poll_gathered(Pin::new(&mut me.io), cx, bufs);
        }
        me.poll_hold(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // Batched or not, several slices are taken in one call.
        self.mode != Mode::Through || self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if me.sent < me.buf.len() {
            if me.split {
                // h2 freeing its one DATA frame slot: more of the batch may follow. A
                // later poll flushes for certain; the wake makes sure there is one.
                me.split = false;
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            ready!(me.poll_drain(cx))?;
        }
        Pin::new(&mut me.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.io).poll_shutdown(cx)
    }
}

/// `bufs` written with one plain write when that takes no more than a copy of [`GATHER`]
/// bytes: the one non-empty slice as it is, or a few small ones joined. Otherwise a
/// vectored write, as given.
fn poll_gathered<T: Write>(
    io: Pin<&mut T>,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let mut filled = bufs.iter().filter(|b| !b.is_empty());
    match (filled.next(), filled.next()) {
        (None, _) => io.poll_write_vectored(cx, bufs),
        (Some(only), None) => io.poll_write(cx, only),
        (Some(_), Some(_)) => {
            let len = bufs.iter().map(|b| b.len()).sum::<usize>();
            if len > GATHER {
                return io.poll_write_vectored(cx, bufs);
            }
            let mut joined = [0u8; GATHER];
            let mut at = 0;
            for b in bufs {
                joined[at..at + b.len()].copy_from_slice(b);
                at += b.len();
            }
            io.poll_write(cx, &joined[..at])
        }
    }
}

#[cfg(test)]
#[path = "coalesce_tests.rs"]
mod tests;
