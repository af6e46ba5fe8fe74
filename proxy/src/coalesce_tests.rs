use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Wake;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// What a [`Recorder`] saw: every write call that took bytes, in order.
#[derive(Default)]
struct Log {
    writes: Mutex<Vec<Vec<u8>>>,
    flushes: AtomicUsize,
    /// How many of `writes` came from vectored calls (only with `Recorder::vectored`).
    vectored: AtomicUsize,
}

impl Log {
    fn writes(&self) -> Vec<Vec<u8>> {
        self.writes.lock().expect("log").clone()
    }
}

/// A socket stand-in that records writes; it takes at most `step` bytes a call and
/// refuses every other call (`Pending`, after waking) when `stall` is set.
struct Recorder {
    log: Arc<Log>,
    step: usize,
    stall: bool,
    refused: bool,
    /// Takes every slice of a vectored write, as a socket does (else only the first).
    vectored: bool,
}

impl Recorder {
    fn new(step: usize, stall: bool) -> (Self, Arc<Log>) {
        let log = Arc::new(Log::default());
        let io = Recorder {
            log: log.clone(),
            step,
            stall,
            refused: false,
            vectored: false,
        };
        (io, log)
    }

    /// A recorder that takes vectored writes whole, up to `step` bytes.
    fn vectored(step: usize) -> (Self, Arc<Log>) {
        let (mut io, log) = Recorder::new(step, false);
        io.vectored = true;
        (io, log)
    }
}

impl Write for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.stall && !self.refused {
            self.refused = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.refused = false;
        let n = data.len().min(self.step);
        self.log
            .writes
            .lock()
            .expect("log")
            .push(data[..n].to_vec());
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.vectored {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            return self.poll_write(cx, first);
        }
        let mut joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        joined.truncate(self.step);
        let n = joined.len();
        self.log.vectored.fetch_add(1, Relaxed);
        self.log.writes.lock().expect("log").push(joined);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.log.flushes.fetch_add(1, Relaxed);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// Polls `f` until it is ready (the recorder wakes before every `Pending`).
fn drive<T>(
    io: &mut Coalesced<Recorder>,
    waker: &std::task::Waker,
    mut f: impl FnMut(Pin<&mut Coalesced<Recorder>>, &mut Context<'_>) -> Poll<io::Result<T>>,
) -> T {
    let mut cx = Context::from_waker(waker);
    for _ in 0..10_000 {
        if let Poll::Ready(r) = f(Pin::new(io), &mut cx) {
            return r.expect("io");
        }
    }
    panic!("no progress");
}

fn frame(head: &[u8], payload: &[u8]) -> [Vec<u8>; 2] {
    [head.to_vec(), payload.to_vec()]
}

fn write_frame(io: &mut Coalesced<Recorder>, waker: &std::task::Waker, parts: &[Vec<u8>]) {
    let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let len = drive(io, waker, |io, cx| io.poll_write_vectored(cx, &slices));
    assert_eq!(len, parts.iter().map(Vec::len).sum::<usize>());
}

#[test]
fn frames_flushed_one_by_one_leave_in_one_write_at_the_batch_end() {
    let (rec, log) = Recorder::new(usize::MAX, false);
    let mut io = Coalesced::new(rec);
    let count = Arc::new(Count::default());
    let waker = count.clone().into();
    for i in 0..5u8 {
        write_frame(&mut io, &waker, &frame(&[i; 9], &[i; 300]));
        // h2's flush to free its frame slot: put off, with a wake for a later poll.
        drive(&mut io, &waker, |io, cx| io.poll_flush(cx));
        assert!(
            log.writes().is_empty(),
            "nothing written before the batch ends"
        );
    }
    assert_eq!(
        count.0.load(Relaxed),
        5,
        "every put-off flush wakes the task"
    );
    // The flush that ends h2's poll: no write of several slices before it.
    drive(&mut io, &waker, |io, cx| io.poll_flush(cx));
    let writes = log.writes();
    assert_eq!(writes.len(), 1);
    let expected: Vec<u8> = (0..5u8)
        .flat_map(|i| [vec![i; 9], vec![i; 300]].concat())
        .collect();
    assert_eq!(writes[0], expected);
    assert_eq!(log.flushes.load(Relaxed), 1);
    assert_eq!(
        io.buf.capacity(),
        0,
        "a written batch leaves no buffer behind"
    );
}

#[test]
fn a_flush_after_a_single_slice_write_is_not_put_off() {
    let (rec, log) = Recorder::new(usize::MAX, false);
    let mut io = Coalesced::new(rec);
    let waker = Arc::new(Count::default()).into();
    write_frame(&mut io, &waker, &[b"settings".to_vec()]);
    drive(&mut io, &waker, |io, cx| io.poll_flush(cx));
    assert_eq!(log.writes(), vec![b"settings".to_vec()]);
}

#[test]
fn short_and_refused_writes_keep_every_byte_in_order() {
    let (rec, log) = Recorder::new(7, true);
    let mut io = Coalesced::new(rec);
    let waker = Arc::new(Count::default()).into();
    let mut sent = Vec::new();
    for i in 0..40u8 {
        let parts = frame(&[i; 9], &vec![i.wrapping_mul(7); 100 + usize::from(i)]);
        sent.extend(parts.concat());
        write_frame(&mut io, &waker, &parts);
        drive(&mut io, &waker, |io, cx| io.poll_flush(cx));
    }
    drive(&mut io, &waker, |io, cx| io.poll_shutdown(cx));
    assert_eq!(log.writes().concat(), sent);
    assert!(log.writes().iter().all(|w| w.len() <= 7));
}

#[test]
fn the_buffer_is_written_out_before_it_would_pass_its_capacity() {
    let (rec, log) = Recorder::new(usize::MAX, false);
    let mut io = Coalesced::new(rec);
    let waker = Arc::new(Count::default()).into();
    let payload = vec![1u8; 16 * 1024];
    for _ in 0..5 {
        write_frame(&mut io, &waker, &frame(&[0; 9], &payload));
        drive(&mut io, &waker, |io, cx| io.poll_flush(cx));
    }
    let held: usize = log.writes().iter().map(Vec::len).sum();
    assert_eq!(
        held,
        3 * (16 * 1024 + 9),
        "three frames fit in 64 KiB, a fourth does not"
    );
    assert!(log.writes().iter().all(|w| w.len() <= CAPACITY));
    drive(&mut io, &waker, |io, cx| io.poll_shutdown(cx));
    let total: usize = log.writes().iter().map(Vec::len).sum();
    assert_eq!(total, 5 * (16 * 1024 + 9), "shutdown writes out the rest");
}

#[test]
fn a_write_larger_than_the_buffer_goes_straight_through() {
    let (rec, log) = Recorder::new(usize::MAX, false);
    let mut io = Coalesced::new(rec);
    let waker = Arc::new(Count::default()).into();
    let big = vec![9u8; CAPACITY + 1];
    let n = drive(&mut io, &waker, |io, cx| io.poll_write(cx, &big));
    assert_eq!(n, big.len());
    assert_eq!(log.writes(), vec![big]);
}

#[test]
fn through_mode_writes_at_once() {
    let (rec, log) = Recorder::new(usize::MAX, false);
    let mut io = Coalesced::through(rec);
    let waker = Arc::new(Count::default()).into();
    let n = drive(&mut io, &waker, |io, cx| io.poll_write(cx, b"head"));
    assert_eq!(n, 4);
    assert_eq!(
        log.writes(),
        vec![b"head".to_vec()],
        "written before any flush"
    );
}

/// An unbatched vectored write of `parts`: what it returned, each write the recorder took,
/// and how many of those were vectored.
fn through_vectored(step: usize, parts: &[&[u8]]) -> (usize, Vec<Vec<u8>>, usize) {
    let (rec, log) = Recorder::vectored(step);
    let mut io = Coalesced::through(rec);
    assert!(io.is_write_vectored(), "hyper queues slices for it");
    let waker = Arc::new(Count::default()).into();
    let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let n = drive(&mut io, &waker, |io, cx| {
        io.poll_write_vectored(cx, &slices)
    });
    (n, log.writes(), log.vectored.load(Relaxed))
}

#[test]
fn a_head_and_a_short_body_leave_in_one_plain_write() {
    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    let (n, writes, vectored) = through_vectored(usize::MAX, &[head, b"", b"hello"]);
    assert_eq!(n, head.len() + 5);
    assert_eq!(writes, vec![[&head[..], b"hello"].concat()]);
    assert_eq!(vectored, 0, "one send, not a writev");
}

#[test]
fn a_lone_slice_is_written_plainly_and_a_short_write_is_reported_short() {
    let (n, writes, vectored) = through_vectored(usize::MAX, &[b"", b"GET / HTTP/1.1\r\n\r\n"]);
    assert_eq!((n, vectored), (18, 0));
    assert_eq!(writes, vec![b"GET / HTTP/1.1\r\n\r\n".to_vec()]);
    // The socket takes 7 bytes of the joined 10: 7 is what the caller hears.
    let (n, writes, _) = through_vectored(7, &[b"abcde", b"fghij"]);
    assert_eq!(n, 7);
    assert_eq!(writes, vec![b"abcdefg".to_vec()]);
}

#[test]
fn slices_over_the_gather_bound_stay_one_vectored_write() {
    let body = vec![7u8; GATHER];
    let (n, writes, vectored) = through_vectored(usize::MAX, &[b"head", &body]);
    assert_eq!(n, 4 + GATHER);
    assert_eq!(writes, vec![[&b"head"[..], &body].concat()]);
    assert_eq!(vectored, 1);
    // At the bound exactly, still joined.
    let (n, _, vectored) = through_vectored(usize::MAX, &[b"head", &body[4..]]);
    assert_eq!((n, vectored), (GATHER, 0));
}

/// The read half of a duplex pipe, for sniffing.
fn sniffed(first: &[u8]) -> (bool, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut a, b) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut a, first)
            .await
            .expect("write");
        let mut io = Coalesced::sniff(TokioIo::new(b));
        let mut got = vec![0u8; 64];
        let mut buf = hyper::rt::ReadBuf::new(&mut got);
        std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, buf.unfilled()))
            .await
            .expect("read");
        let n = buf.filled().len();
        got.truncate(n);
        (io.is_batching(), got)
    })
}

#[test]
fn sniffing_batches_after_the_http2_preface_only() {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    assert_eq!(sniffed(preface), (true, preface.to_vec()));
    let get = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
    assert_eq!(sniffed(get), (false, get.to_vec()));
    assert_eq!(sniffed(b"PR"), (false, b"PR".to_vec()), "too short to tell");
}

/// A duplex pipe end that counts the write calls that reach it.
struct Counted {
    io: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if r.is_ready() {
            self.writes.fetch_add(1, Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

const STREAMS: usize = 16;
const CHUNKS: usize = 50;
/// Over 1 KiB: h2 chains such a payload (writes it from its own buffer) even on I/O
/// without vectored writes, as the duplex pipe is.
const CHUNK: usize = 2000;

/// A real hyper HTTP/2 server writing through [`Coalesced`] (or not) to a real hyper
/// client: every stream's body arrives whole, and the server's write calls are counted.
async fn serve_streams(batch: bool) -> usize {
    let (client_end, server_end) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let server_io = TokioIo::new(Counted {
        io: server_end,
        writes: writes.clone(),
    });
    let server_io = match batch {
        true => Coalesced::new(server_io),
        false => Coalesced::through(server_io),
    };
    let service =
        hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            let id: u8 = req.uri().path()[1..].parse().expect("stream id");
            let chunks = (0..CHUNKS).map(move |i| {
                let byte = id.wrapping_add(i as u8);
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![byte; CHUNK])))
            });
            Ok::<_, std::convert::Infallible>(hyper::Response::new(StreamBody::new(
                futures_util::stream::iter(chunks),
            )))
        });
    tokio::spawn(
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(server_io, service),
    );
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(client_end))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut calls = Vec::new();
    for id in 0..STREAMS {
        let mut send = send.clone();
        calls.push(tokio::spawn(async move {
            let req = hyper::Request::get(format!("http://t/{id}"))
                .body(http_body_util::Empty::new())
                .expect("request");
            let resp = send.send_request(req).await.expect("response");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (id, body)
        }));
    }
    for call in calls {
        let (id, body) = call.await.expect("stream task");
        let want: Vec<u8> = (0..CHUNKS)
            .flat_map(|i| vec![(id as u8).wrapping_add(i as u8); CHUNK])
            .collect();
        assert!(
            body == want,
            "stream {id}: its body arrived whole and in order"
        );
    }
    writes.load(Relaxed)
}

#[test]
fn an_http2_server_batches_its_data_frames_and_loses_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let frames = STREAMS * CHUNKS;
    let plain = rt.block_on(serve_streams(false));
    let batched = rt.block_on(serve_streams(true));
    assert!(
        plain >= frames,
        "without batching, a write per DATA frame at least: {plain}"
    );
    assert!(
        batched * 4 <= frames,
        "batched: {batched} writes for {frames} DATA frames"
    );
}
