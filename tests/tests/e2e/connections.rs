//! Connection lifetimes and scope through the real proxy: the first request must come
//! within `header_read_timeout_ms`, idle connections are closed after
//! `idle_timeout_ms` (HTTP/2 with a GOAWAY) while long streams keep theirs open, a
//! listener's `max_connections` turns a flood into counted refusals (across the
//! workers that share its port, each of which accepts and serves), and a TLS
//! connection only serves hosts its certificate covers (421 otherwise).
//!
//! Timers are short (300 ms) and every wait for a close is bounded generously
//! ([`CLOSE_BOUND`]), so a loaded machine makes these tests slower, not flaky.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_tests::client::{self, Sender};
use tollgate_tests::config::{Config, Files};
use tollgate_tests::helpers::{WAIT, error_code, eventually, json, read_exactly, read_to_end};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::session::TlsSession;
use tollgate_tests::tls::{self, TestCert, client_config};
use tollgate_tests::upstream::Upstream;

/// How long a connection the proxy should close may take to close.
const CLOSE_BOUND: Duration = Duration::from_secs(10);
const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1_ONLY: &[&[u8]] = &[b"http/1.1"];
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads (and discards) until the peer closes; false if it is still open after `bound`.
async fn closes_within<S: AsyncRead + Unpin>(stream: &mut S, bound: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Whether the client side of a hyper connection has seen it close.
fn sender_closed(s: &Sender) -> bool {
    match s {
        Sender::H1(s) => s.is_closed(),
        Sender::H2(s) => s.is_closed(),
    }
}

/// `tollgate_downstream_connections_closed_total` once it reaches `want` (or after a wait).
async fn closed_metric(proxy: &ProxyProcess, listener: &str, reason: &str, want: f64) -> f64 {
    let labels = [
        format!("listener=\"{listener}\""),
        format!("reason=\"{reason}\""),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    proxy
        .wait_metric(
            "tollgate_downstream_connections_closed_total",
            &labels,
            WAIT,
            |v| v >= want,
        )
        .await
        .expect("metrics")
}

/// A raw HTTP/2 frame: 9-byte header and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `GET http://{authority}/` without Huffman coding.
fn get_headers(authority: &str) -> Vec<u8> {
    // :method GET, :scheme http, :path / (static table), then :authority as a literal.
    let mut block = vec![0x82, 0x86, 0x84, 0x41, authority.len() as u8];
    block.extend_from_slice(authority.as_bytes());
    block
}

/// Events of a raw HTTP/2 conversation, read until the server closes.
#[derive(Debug, Default)]
struct H2Seen {
    response_ended: bool,
    goaway: bool,
    closed: bool,
}

/// Reads frames (acknowledging SETTINGS and PINGs) until EOF or `bound`.
async fn h2_read_until_close(s: &mut TcpStream, bound: Duration) -> H2Seen {
    let mut seen = H2Seen::default();
    let _ = tokio::time::timeout(bound, async {
        loop {
            let mut head = [0u8; 9];
            if s.read_exact(&mut head).await.is_err() {
                seen.closed = true;
                return;
            }
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let mut payload = vec![0u8; len];
            if s.read_exact(&mut payload).await.is_err() {
                seen.closed = true;
                return;
            }
            let reply = match (kind, flags & 1) {
                (0x4, 0) => Some(frame(0x4, 1, 0, &[])),
                (0x6, 0) => Some(frame(0x6, 1, 0, &payload)),
                _ => None,
            };
            if let Some(reply) = reply {
                // The server may be closing already; reading on tells.
                let _ = s.write_all(&reply).await;
            }
            match kind {
                // DATA or HEADERS with END_STREAM on our stream.
                0x0 | 0x1 if flags & 1 == 1 => seen.response_ended = true,
                0x7 => seen.goaway = true,
                _ => {}
            }
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn first_request_must_arrive_within_header_read_timeout_on_plain_listeners() {
    let up = Upstream::start("acme").await;
    let cfg = Config::new()
        .raw("[limits]\nheader_read_timeout_ms = 300")
        .listener("http")
        .app("acme", &["acme.test"], up.addr)
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");

    // Not a byte: the protocol sniffing never finishes, the timer still runs.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    // h2c prior knowledge: the preface and SETTINGS, then no request.
    let mut preface_only = TcpStream::connect(addr).await.expect("connect");
    preface_only.write_all(H2_PREFACE).await.expect("preface");
    preface_only
        .write_all(&frame(0x4, 0, 0, &[]))
        .await
        .expect("settings");

    assert!(
        closes_within(&mut silent, CLOSE_BOUND).await,
        "a connection that sends nothing must be closed"
    );
    let seen = h2_read_until_close(&mut preface_only, CLOSE_BOUND).await;
    assert!(
        seen.closed,
        "an h2c connection without a request must be closed: {seen:?}"
    );
    assert!(
        closed_metric(&proxy, "http", "first_request_timeout", 2.0).await >= 2.0,
        "both closes counted"
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn first_request_must_arrive_within_header_read_timeout_after_the_tls_handshake() {
    let up = Upstream::start("acme").await;
    let cert = TestCert::new(&["acme.test"]);
    let cfg = Config::new()
        .raw("[limits]\nheader_read_timeout_ms = 300")
        .tls_listener("tls", "")
        .cert("acme")
        .app("acme", &["acme.test"], up.addr)
        .build();
    let files = Files::new().cert("acme", &cert);
    let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");
    let addr = proxy.addr("tls");

    for (alpn, h2) in [(H2_H1, true), (H1_ONLY, false)] {
        let mut s = tls::connect(addr, "acme.test", client_config(&[&cert], alpn))
            .await
            .expect("handshake");
        assert_eq!(tls::is_h2(&s), h2);
        assert!(
            closes_within(&mut s, CLOSE_BOUND).await,
            "a TLS connection (h2={h2}) that sends nothing after the handshake must be closed"
        );
    }
    // HTTP/1.1's own head timer may close the h1 one at the same moment; the h2 one is ours.
    assert!(closed_metric(&proxy, "tls", "first_request_timeout", 1.0).await >= 1.0);
    let ok = proxy
        .metric(
            "tollgate_tls_handshakes_total",
            &[r#"listener="tls""#, r#"result="ok""#],
        )
        .await
        .expect("metrics");
    assert_eq!(ok, 2.0, "the handshakes themselves succeeded");
}

#[tokio::test]
async fn idle_connections_close_after_idle_timeout_but_open_streams_keep_theirs() {
    let up = Upstream::start("acme").await;
    // The first-request bound stays long, so every close below is the idle timer's.
    let cfg = Config::new()
        .raw("[limits]\nidle_timeout_ms = 300")
        .listener("http")
        .app("acme", &["acme.test"], up.addr)
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");

    // HTTP/1.1 keep-alive: served, then closed once idle.
    let mut h1 = TcpStream::connect(addr).await.expect("connect");
    h1.write_all(b"GET /idle HTTP/1.1\r\nHost: acme.test\r\n\r\n")
        .await
        .expect("request");
    let mut got = Vec::new();
    let read_all = tokio::time::timeout(CLOSE_BOUND, h1.read_to_end(&mut got)).await;
    assert!(
        read_all.is_ok(),
        "an idle HTTP/1.1 connection must be closed; got so far: {}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // HTTP/2: one request, then a GOAWAY and the close.
    let mut h2 = TcpStream::connect(addr).await.expect("connect");
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    hello.extend(frame(0x1, 0x5, 1, &get_headers("acme.test")));
    h2.write_all(&hello).await.expect("h2 request");
    let seen = h2_read_until_close(&mut h2, CLOSE_BOUND).await;
    assert!(
        seen.response_ended && seen.goaway && seen.closed,
        "an idle HTTP/2 connection gets a GOAWAY and is closed: {seen:?}"
    );
    assert!(closed_metric(&proxy, "http", "idle", 2.0).await >= 2.0);

    // A stream open for many idle timeouts is not cut; the connection closes once it ends.
    for h2 in [false, true] {
        let mut s = client::connect_plain(addr, h2).await.expect("connect");
        let req = client::get(&s, "http", "acme.test", "/stream");
        let resp = tokio::time::timeout(WAIT, s.send(req))
            .await
            .expect("response head in time")
            .expect("response");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        read_exactly(&mut body, b"first\n", WAIT)
            .await
            .expect("first chunk");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!sender_closed(&s), "h2={h2}: closed with a stream open");
        up.release();
        read_exactly(&mut body, b"second\n", WAIT)
            .await
            .unwrap_or_else(|e| panic!("h2={h2}: the stream survives the idle timeout: {e}"));
        read_to_end(&mut body, WAIT).await.expect("end of stream");
        assert!(
            eventually(CLOSE_BOUND, || async { sender_closed(&s) }).await,
            "h2={h2}: closed once idle after the stream"
        );
    }
}

#[tokio::test]
async fn every_worker_accepts_from_the_shared_port_and_serves_its_connections() {
    const WORKERS: usize = 3;
    const CONNS: usize = 48;
    let up = Upstream::start("acme").await;
    let cfg = Config::new()
        .top(&format!("workers = {WORKERS}"))
        .listener("main")
        .app("acme", &["acme.test"], up.addr)
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("main");
    // Kept open so every connection has its own source port: the kernel spreads
    // connections over the workers' sockets by their addresses.
    let mut open = Vec::new();
    for i in 0..CONNS {
        let mut s = client::connect_plain(addr, i % 2 == 1)
            .await
            .expect("connect");
        for round in 0..2 {
            let req = client::get(&s, "http", "acme.test", &format!("/c{i}/r{round}"));
            let (status, _, body) = client::text(s.send(req).await.expect("response"))
                .await
                .expect("body");
            assert_eq!(status, 200, "connection {i}: {body}");
        }
        open.push(s);
    }
    let total = proxy
        .wait_metric("tollgate_worker_connections_total", &[], WAIT, |v| {
            v >= CONNS as f64
        })
        .await
        .expect("metrics");
    assert_eq!(total, CONNS as f64, "each connection counted by one worker");
    // With 48 connections over 3 sockets, a worker left without any has odds of 1e-8.
    for w in 1..=WORKERS {
        let n = proxy
            .metric(
                "tollgate_worker_connections_total",
                &[&format!("worker=\"{w}\"")],
            )
            .await
            .expect("metrics");
        assert!(n >= 1.0, "worker {w} accepted none of {CONNS} connections");
    }
    assert_eq!(
        proxy
            .metric(
                "tollgate_worker_connections_total",
                &[&format!("worker=\"{}\"", WORKERS + 1)],
            )
            .await
            .expect("metrics"),
        0.0,
        "no worker beyond the configured count"
    );
}

#[tokio::test]
async fn max_connections_refuses_the_excess_and_keeps_serving_the_rest() {
    let up = Upstream::start("acme").await;
    let cfg = Config::new()
        .raw("[limits]\nmax_connections = 1")
        .raw("[[listeners]]\nname = \"capped\"\nlisten = \"127.0.0.1:0\"\nmax_connections = 2")
        .listener("global")
        .app("acme", &["acme.test"], up.addr)
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");

    async fn served(addr: SocketAddr) -> Sender {
        let mut s = client::connect_plain(addr, false).await.expect("connect");
        let req = client::get(&s, "http", "acme.test", "/");
        let (status, _, body) = client::text(s.send(req).await.expect("response"))
            .await
            .expect("body");
        assert_eq!(status, 200, "{body}");
        s
    }

    for (listener, cap) in [("capped", 2), ("global", 1)] {
        let addr = proxy.addr(listener);
        let mut open = Vec::new();
        for _ in 0..cap {
            open.push(served(addr).await);
        }
        let mut excess = TcpStream::connect(addr).await.expect("the kernel accepts");
        assert!(
            closes_within(&mut excess, CLOSE_BOUND).await,
            "{listener}: connection {} beyond the cap must be closed",
            cap + 1
        );
        let refused = proxy
            .wait_metric(
                "tollgate_downstream_connections_refused_total",
                &[&format!("listener=\"{listener}\""), r#"reason="limit""#],
                WAIT,
                |v| v >= 1.0,
            )
            .await
            .expect("metrics");
        assert!(refused >= 1.0, "{listener}: refusal counted");

        // The connections already open are still served.
        for s in &mut open {
            let req = client::get(s, "http", "acme.test", "/again");
            let (status, _, body) = client::text(s.send(req).await.expect("response"))
                .await
                .expect("body");
            assert_eq!(status, 200, "{listener}: {body}");
        }
        // A closed connection frees its place.
        open.pop();
        let came_back = eventually(CLOSE_BOUND, || async {
            let Ok(mut s) = client::connect_plain(addr, false).await else {
                return false;
            };
            let req = client::get(&s, "http", "acme.test", "/");
            matches!(s.send(req).await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(
            came_back,
            "{listener}: a place frees up when a connection closes"
        );
    }
}

#[tokio::test]
async fn hosts_outside_the_presented_certificate_get_421_and_coalescing_still_works() {
    let ups: Vec<Upstream> = futures_util::future::join_all(
        ["alpha", "beta", "gamma", "delta", "wild"].map(Upstream::start),
    )
    .await;
    // The IP address SAN lets the SNI-less client below verify the default certificate.
    let cert_a = TestCert::new(&["a.test", "127.0.0.1"]);
    let cert_b = TestCert::new(&["b.test"]);
    let cert_cd = TestCert::new(&["c.test", "d.test"]);
    let cert_w = TestCert::new(&["*.w.test"]);
    let cfg = Config::new()
        .top("default_certificate = \"a.test\"")
        .tls_listener("tls", "")
        .cert("a")
        .cert("b")
        .cert("cd")
        .cert("w")
        .app("alpha", &["a.test"], ups[0].addr)
        .app("beta", &["b.test"], ups[1].addr)
        .app("gamma", &["c.test"], ups[2].addr)
        .app("delta", &["d.test"], ups[3].addr)
        .app("wild", &["*.w.test"], ups[4].addr)
        .build();
    let files = Files::new()
        .cert("a", &cert_a)
        .cert("b", &cert_b)
        .cert("cd", &cert_cd)
        .cert("w", &cert_w);
    let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");
    let addr = proxy.addr("tls");
    let trust = &[&cert_a, &cert_b, &cert_cd, &cert_w];

    async fn get(s: &mut TlsSession, host: &str) -> (u16, String) {
        let req = client::get(&s.sender, "https", host, "/x");
        let (status, _, body) = client::text(s.sender.send(req).await.expect("response"))
            .await
            .expect("body");
        (status, body)
    }

    for alpn in [H2_H1, H1_ONLY] {
        let h2 = alpn == H2_H1;
        // Domain fronting: SNI of one tenant, host of another with its own certificate.
        let mut s = TlsSession::open(addr, "a.test", client_config(trust, alpn))
            .await
            .expect("handshake a.test");
        assert_eq!(s.negotiated.h2, h2);
        for host in ["b.test", "b.test:443", "B.TEST."] {
            let (status, body) = get(&mut s, host).await;
            assert_eq!(status, 421, "h2={h2} host {host}: {body}");
            assert_eq!(error_code(&body), "misdirected_request");
        }
        // The same connection still serves its own name.
        let (status, body) = get(&mut s, "a.test").await;
        assert_eq!(
            (status, json(&body)["upstream"].as_str()),
            (200, Some("alpha"))
        );

        // Coalescing: one certificate for c.test and d.test, one for *.w.test.
        let mut s = TlsSession::open(addr, "c.test", client_config(trust, alpn))
            .await
            .expect("handshake c.test");
        let (status, body) = get(&mut s, "d.test").await;
        assert_eq!(status, 200, "h2={h2}: {body}");
        assert_eq!(json(&body)["upstream"], "delta");
        assert_eq!(get(&mut s, "a.test").await.0, 421, "h2={h2}");
        let mut s = TlsSession::open(addr, "x.w.test", client_config(trust, alpn))
            .await
            .expect("handshake x.w.test");
        let (status, body) = get(&mut s, "y.w.test").await;
        assert_eq!(
            (status, json(&body)["upstream"].as_str()),
            (200, Some("wild")),
            "h2={h2}"
        );
    }
    assert_eq!(
        ups[1].hits(),
        0,
        "nothing reached beta through a.test's connection"
    );

    // No SNI (connecting by IP address): the default certificate, and no name to hold to.
    let stream = tls::connect_ip(addr, client_config(trust, H1_ONLY))
        .await
        .expect("handshake without SNI");
    let mut sender = Sender::handshake(stream, false).await.expect("http/1.1");
    let req = client::get(&sender, "https", "b.test", "/x");
    let (status, _, body) = client::text(sender.send(req).await.expect("response"))
        .await
        .expect("body");
    assert_eq!(
        (status, json(&body)["upstream"].as_str()),
        (200, Some("beta"))
    );
}
