//! The HTTP/1.1 pool against a hand-written upstream that closes connections and
//! streams bodies when the test says so.

use super::*;
use crate::upstream::client::{self, UpstreamClient};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tollgate_routing::{ClusterSpec, EndpointSpec};

/// What the upstream does after each request.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answers `200 ok` and keeps the connection.
    Keep,
    /// Answers `200 ok`, then closes the connection on `release`, saying so on `closed`.
    Close,
    /// Answers with a chunked body whose last chunk waits for `release`.
    Stream,
}

struct Upstream {
    authority: Authority,
    accepted: Arc<AtomicU32>,
    closed: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
}

async fn upstream(mode: Mode) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let authority = listener
        .local_addr()
        .expect("addr")
        .to_string()
        .parse()
        .expect("authority");
    let accepted = Arc::new(AtomicU32::new(0));
    let release = Arc::new(Notify::new());
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let (count, rel) = (accepted.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, SeqCst);
            tokio::spawn(serve(tcp, mode, closed_tx.clone(), rel.clone()));
        }
    });
    Upstream {
        authority,
        accepted,
        closed,
        release,
    }
}

async fn serve(
    mut tcp: TcpStream,
    mode: Mode,
    closed: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(body_len) = read_request(&mut tcp, &mut buf).await else {
            return;
        };
        let answer: &[u8] = match mode {
            Mode::Keep | Mode::Close => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Mode::Stream => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
        };
        assert!(body_len <= 64, "small request bodies only");
        if tcp.write_all(answer).await.is_err() {
            return;
        }
        match mode {
            Mode::Keep => {}
            Mode::Close => {
                release.notified().await;
                drop(tcp);
                let _ = closed.send(());
                return;
            }
            Mode::Stream => {
                release.notified().await;
                if tcp.write_all(b"4\r\nlast\r\n0\r\n\r\n").await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads one request head and its `content-length` body; `None` at the end of the stream.
async fn read_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tcp.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body_len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    while buf.len() < head_end + body_len {
        let n = tcp.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + body_len);
    Some(body_len)
}

fn client() -> UpstreamClient {
    let mut spec = ClusterSpec::empty();
    spec.endpoints = vec![EndpointSpec {
        address: "127.0.0.1:1".into(),
        weight: 1,
    }];
    client::build(&spec, 65536).expect("client")
}

fn post(authority: &Authority) -> Request<RequestBody> {
    Request::post(format!("http://{authority}/write"))
        .body(RequestBody::once(Bytes::from_static(b"payload")))
        .expect("request")
}

/// Sends `req` and reads the whole response body.
async fn exchange_text(
    pool: &H1Pool,
    client: &UpstreamClient,
    up: &Upstream,
    req: Request<RequestBody>,
) -> Result<String, Error> {
    let dialer = client.h1_dialer().expect("an HTTP/1.1 cluster");
    let resp = pool.send(dialer, &up.authority, req).await?;
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Waits (without a time limit of its own) until `pool` holds `n` idle connections.
async fn idle_becomes(pool: &H1Pool, n: usize) {
    while pool.idle() != n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let up = upstream(Mode::Keep).await;
    let (pool, client) = (H1Pool::default(), client());
    for _ in 0..5 {
        let text = exchange_text(&pool, &client, &up, post(&up.authority)).await;
        assert_eq!(text.expect("answered"), "ok");
        assert_eq!(pool.idle(), 1, "pooled as soon as the response was in");
    }
    assert_eq!(up.accepted.load(SeqCst), 1);
}

#[tokio::test]
async fn a_request_whose_idle_connection_was_closed_goes_on_a_new_one() {
    let mut up = upstream(Mode::Close).await;
    let (pool, client) = (H1Pool::default(), client());
    for round in 1..=3 {
        // A POST: never sent twice, so it can only succeed if the closed connection
        // handed it back unwritten.
        let text = exchange_text(&pool, &client, &up, post(&up.authority)).await;
        assert_eq!(text.expect("answered"), "ok", "round {round}");
        assert_eq!(pool.idle(), 1);
        up.release.notify_one();
        up.closed
            .recv()
            .await
            .expect("the upstream closed the connection");
        // Once the runtime has turned over, the client's socket has seen the close.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(up.accepted.load(SeqCst), 3);
}

#[tokio::test]
async fn a_streamed_response_returns_its_connection_once_read() {
    let up = upstream(Mode::Stream).await;
    let (pool, client) = (H1Pool::default(), client());
    let dialer = client.h1_dialer().expect("an HTTP/1.1 cluster");
    for _ in 0..2 {
        let resp = pool
            .send(dialer, &up.authority, post(&up.authority))
            .await
            .expect("response head");
        let mut body = resp.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "first");
        assert_eq!(pool.idle(), 0, "busy while its body streams");
        up.release.notify_one();
        let rest = body.collect().await.expect("the rest").to_bytes();
        assert_eq!(rest, "last");
        tokio::time::timeout(Duration::from_secs(30), idle_becomes(&pool, 1))
            .await
            .expect("pooled once the body was read");
    }
    assert_eq!(up.accepted.load(SeqCst), 1);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let up = upstream(Mode::Keep).await;
    let (pool, client) = (H1Pool::new(Duration::from_millis(40)), client());
    let text = exchange_text(&pool, &client, &up, post(&up.authority)).await;
    assert_eq!(text.expect("answered"), "ok");
    // The reaper closes it without another request coming.
    tokio::time::timeout(Duration::from_secs(30), idle_becomes(&pool, 0))
        .await
        .expect("closed by the reaper");
    let text = exchange_text(&pool, &client, &up, post(&up.authority)).await;
    assert_eq!(text.expect("answered"), "ok");
    assert_eq!(
        up.accepted.load(SeqCst),
        2,
        "a new connection after the timeout"
    );
}

#[tokio::test]
async fn nothing_listening_is_a_connect_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let authority: Authority = listener
        .local_addr()
        .expect("addr")
        .to_string()
        .parse()
        .expect("authority");
    drop(listener);
    let (pool, client) = (H1Pool::default(), client());
    let dialer = client.h1_dialer().expect("an HTTP/1.1 cluster");
    let err = pool
        .send(dialer, &authority, post(&authority))
        .await
        .expect_err("nothing listens");
    assert!(err.is_connect(), "{err}");
}

#[test]
fn requests_go_out_in_origin_form_with_a_host() {
    let auth: Authority = "10.0.0.1:8080".parse().expect("authority");
    let mut req = Request::get("http://10.0.0.1:8080/a/b?c=d")
        .body(RequestBody::empty())
        .expect("request");
    origin_form(&mut req, &Scheme::HTTP, &auth);
    assert_eq!(req.uri().to_string(), "/a/b?c=d");
    assert_eq!(req.headers()[HOST], "10.0.0.1:8080");

    // The client's Host is kept.
    let mut req = Request::get("http://10.0.0.1:8080/")
        .header(HOST, "app.example")
        .body(RequestBody::empty())
        .expect("request");
    origin_form(&mut req, &Scheme::HTTP, &auth);
    assert_eq!(req.headers()[HOST], "app.example");

    let mut req = Request::connect("http://10.0.0.1:8080/")
        .body(RequestBody::empty())
        .expect("request");
    origin_form(&mut req, &Scheme::HTTP, &auth);
    assert_eq!(req.uri().to_string(), "10.0.0.1:8080");
}

#[test]
fn the_default_port_is_left_out_of_host() {
    let host = |scheme: &Scheme, a: &str| {
        let auth: Authority = a.parse().expect("authority");
        host_value(scheme, &auth).expect("host")
    };
    assert_eq!(host(&Scheme::HTTP, "up.internal:80"), "up.internal");
    assert_eq!(host(&Scheme::HTTPS, "up.internal:443"), "up.internal");
    assert_eq!(host(&Scheme::HTTPS, "up.internal:80"), "up.internal:80");
    assert_eq!(host(&Scheme::HTTP, "up.internal"), "up.internal");
}
