//! `Coalesced`, the write batcher under every HTTP/2 connection (and the plain port's
//! preface sniffing), driven by arbitrary reads, writes, vectored writes, flushes and
//! shutdowns against a peer that hands out its bytes and takes writes in arbitrary
//! pieces, or not at all for a turn. Properties: no panic; the bytes read are the
//! peer's, in order; the bytes on the peer are always a prefix of the bytes the writes
//! were answered as taking, and all of them after shutdown or after a flush that is not
//! put off; a put-off flush is followed by one that writes out; at most the capacity is
//! held; only a connection whose first read is at least 3 bytes of the HTTP/2 preface
//! (or one made to batch) batches.
#![no_main]

use hyper::rt::{Read, ReadBuf, ReadBufCursor, Write};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use tollgate_proxy::fuzzing::{COALESCE_CAPACITY, Coalesced};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The far side of the connection, shared with the target to look at.
struct Peer(Rc<RefCell<Far>>);

struct Far {
    incoming: Vec<u8>,
    read_at: usize,
    /// Sizes of successive reads (bytes) and writes (x300 bytes); 0 is Pending.
    pieces: Vec<u8>,
    turn: usize,
    pending_last: bool,
    written: Vec<u8>,
    vectored: bool,
    shut: bool,
}

impl Far {
    /// The next piece size; never Pending twice in a row, so a retry progresses.
    fn piece(&mut self) -> usize {
        let p = match self.pieces.len() {
            0 => 255,
            n => self.pieces[self.turn % n],
        };
        self.turn += 1;
        if p == 0 && self.pending_last {
            self.pending_last = false;
            return 1;
        }
        self.pending_last = p == 0;
        usize::from(p)
    }

    fn take(&mut self, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        assert!(!self.shut, "write after shutdown");
        let mut room = self.piece() * 300;
        if room == 0 {
            return Poll::Pending;
        }
        let mut n = 0;
        for b in bufs {
            let k = b.len().min(room);
            self.written.extend_from_slice(&b[..k]);
            room -= k;
            n += k;
            if k < b.len() {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl Read for Peer {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut me = self.0.borrow_mut();
        let piece = me.piece();
        if piece == 0 {
            return Poll::Pending;
        }
        let n = piece
            .min(buf.remaining())
            .min(me.incoming.len() - me.read_at);
        buf.put_slice(&me.incoming[me.read_at..me.read_at + n]);
        me.read_at += n;
        Poll::Ready(Ok(()))
    }
}

impl Write for Peer {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.borrow_mut().take(&[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut me = self.0.borrow_mut();
        if me.vectored {
            me.take(bufs)
        } else {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            me.take(&[IoSlice::new(first)])
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.0.borrow().vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.borrow_mut().shut = true;
        Poll::Ready(Ok(()))
    }
}

/// Polls until ready; the peer never stalls twice in a row, so this ends.
fn drive<T>(mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..100_000 {
        if let Poll::Ready(t) = f(&mut cx) {
            return t;
        }
    }
    panic!("no progress");
}

/// Bytes of a write, distinct by position so that order shows.
fn payload(from: usize, len: usize) -> Vec<u8> {
    (from..from + len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// What holds between any two operations.
fn check(c: &Coalesced<Peer>, far: &Far, accepted: &[u8], got: &[u8]) {
    assert!(
        far.incoming.starts_with(got),
        "bytes read are not the peer's"
    );
    assert!(
        accepted.starts_with(&far.written),
        "bytes reached the peer out of order"
    );
    assert_eq!(
        c.held(),
        accepted.len() - far.written.len(),
        "bytes lost or made up"
    );
    assert!(c.held() <= COALESCE_CAPACITY);
    if !c.is_batching() {
        assert_eq!(c.held(), 0, "held without batching");
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, flags, incoming_len, pieces_len, rest @ ..] = data else {
        return;
    };
    let mut rest = rest.iter().copied();
    let mut incoming: Vec<u8> = if flags & 1 == 1 {
        PREFACE.to_vec()
    } else {
        Vec::new()
    };
    incoming.extend(rest.by_ref().take(usize::from(*incoming_len)));
    let pieces: Vec<u8> = rest.by_ref().take(usize::from(*pieces_len % 32)).collect();
    let far = Rc::new(RefCell::new(Far {
        incoming,
        read_at: 0,
        pieces,
        turn: 0,
        pending_last: false,
        written: Vec::new(),
        vectored: flags & 2 == 2,
        shut: false,
    }));
    let peer = Peer(far.clone());
    let mut c = match mode % 3 {
        0 => Coalesced::new(peer),
        1 => Coalesced::through(peer),
        _ => Coalesced::sniff(peer),
    };
    let sniffing = mode % 3 == 2;
    let mut decided = !sniffing;
    let mut accepted = Vec::new();
    let mut got = Vec::new();
    let mut split = false;
    let mut byte = move || rest.next();
    while let Some(op) = byte() {
        let mut c = Pin::new(&mut c);
        match op % 6 {
            0 | 1 => {
                let len = usize::from(byte().unwrap_or(0)) * 260 + usize::from(byte().unwrap_or(0));
                let bytes = payload(accepted.len(), len);
                let n =
                    drive(|cx| c.as_mut().poll_write(cx, &bytes)).expect("the peer never fails");
                assert!(n <= len && (n > 0 || len == 0));
                accepted.extend_from_slice(&bytes[..n]);
                split = false;
            }
            2 => {
                // A frame head and its payload, as h2 writes a DATA frame.
                let head = payload(accepted.len(), 9);
                let body = payload(accepted.len() + 9, usize::from(byte().unwrap_or(0)) * 37);
                let slices = [IoSlice::new(&head), IoSlice::new(&body)];
                let n = drive(|cx| c.as_mut().poll_write_vectored(cx, &slices))
                    .expect("the peer never fails");
                let all: Vec<u8> = head.iter().chain(&body).copied().collect();
                assert!(n <= all.len() && n > 0);
                accepted.extend_from_slice(&all[..n]);
                split = c.is_batching() && !body.is_empty();
            }
            3 => {
                drive(|cx| c.as_mut().poll_flush(cx)).expect("the peer never fails");
                if c.held() > 0 {
                    assert!(
                        split,
                        "a flush held bytes back without a split write before it"
                    );
                    drive(|cx| c.as_mut().poll_flush(cx)).expect("the peer never fails");
                }
                assert_eq!(c.held(), 0, "a second flush in a row wrote out");
                split = false;
            }
            4 => {
                let mut space = vec![0u8; usize::from(byte().unwrap_or(1)).max(1) * 32];
                let mut buf = ReadBuf::new(&mut space);
                drive(|cx| c.as_mut().poll_read(cx, buf.unfilled())).expect("the peer never fails");
                let seen = buf.filled().to_vec();
                if !decided {
                    decided = true;
                    let n = seen.len().min(14);
                    let preface = n >= 3 && PREFACE.starts_with(&seen[..n]);
                    assert_eq!(c.is_batching(), preface, "sniffed {seen:?}");
                }
                got.extend_from_slice(&seen);
            }
            _ => break,
        }
        check(&c, &far.borrow(), &accepted, &got);
    }
    // Whatever is left goes out on shutdown.
    drive(|cx| Pin::new(&mut c).poll_shutdown(cx)).expect("the peer never fails");
    check(&c, &far.borrow(), &accepted, &got);
    assert_eq!(
        far.borrow().written,
        accepted,
        "shutdown wrote out everything taken"
    );
});
