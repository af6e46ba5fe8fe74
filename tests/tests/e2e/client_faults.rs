//! Failures that are the client's, or the upstream's, told apart through the real proxy:
//! malformed chunked bodies, clients that hang up or stall mid-body, invalid gRPC-Web
//! text and envelope flags are answered as client errors and never eject an endpoint;
//! passive ejection stops at `max_ejection_percent`; oversized response heads get 502.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::HeaderMap;
use prost::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_proto::test::v1::EchoRequest;
use tollgate_proto::{TestServiceImpl, serve};
use tollgate_tests::client::{self, Sender};
use tollgate_tests::config::{self, Config, api_config, cluster_app as app};
use tollgate_tests::helpers::{WAIT, error_code, eventually, json, read_to_end};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::upstream::{Upstream, dead_addr};
use tollgate_tests::wait::availability;

/// Outlier settings that eject after two failures, for the rest of the test.
const EJECT_FAST: &str = "outlier = { consecutive_failures = 2, ejection_ms = 600000 }\n\
                          retry = { max_retries = 0 }";

/// A proxy with a plain listener `http` and the API host `api.test`; its apps are
/// marked for detailed metrics, since the tests read each app's own series.
fn start(sections: &[String]) -> ProxyProcess {
    let sections: Vec<String> = sections.iter().map(|s| config::detailed(s)).collect();
    ProxyProcess::start(&api_config(&sections).build(), &[]).expect("proxy starts")
}

async fn metric(proxy: &ProxyProcess, name: &str, labels: &[&str]) -> f64 {
    proxy.metric(name, labels).await.expect("metrics")
}

/// Failed upstream attempts of `app`, any kind.
async fn upstream_errors(proxy: &ProxyProcess, app: &str) -> f64 {
    let app = format!("app=\"{app}\"");
    metric(proxy, "tollgate_upstream_errors_total", &[&app]).await
}

async fn ejections(proxy: &ProxyProcess, app: &str) -> f64 {
    let app = format!("app=\"{app}\"");
    metric(proxy, "tollgate_upstream_ejections_total", &[&app]).await
}

async fn client_errors(proxy: &ProxyProcess, reason: &str) -> f64 {
    let reason = format!("reason=\"{reason}\"");
    metric(proxy, "tollgate_http_client_errors_total", &[&reason]).await
}

/// One GET on the API host over a fresh connection: status and body.
async fn get(proxy: &ProxyProcess, path: &str) -> (u16, String) {
    let (status, _, body) = client::get_plain(proxy.addr("http"), "api.test", path)
        .await
        .expect("response");
    (status, body)
}

/// Sends raw bytes to the proxy and reads one HTTP/1.1 response: status and body.
async fn raw_request(proxy: &ProxyProcess, bytes: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(proxy.addr("http"))
        .await
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    read_response(&mut s).await
}

/// Reads one HTTP/1.1 response: the body by `content-length`, else to the end.
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async |s: &mut TcpStream, chunk: &mut [u8]| {
        tokio::time::timeout(WAIT, s.read(chunk))
            .await
            .expect("answer in time")
            .unwrap_or(0)
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = read(s, &mut chunk).await;
        assert!(n > 0, "closed without a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let mut body = buf[head_end..].to_vec();
    while length.is_none_or(|n| body.len() < n) {
        let n = read(s, &mut chunk).await;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

// ---------------------------------------------------------------------------
// Bodies the client broke

#[tokio::test]
async fn malformed_chunked_bodies_get_400_and_never_eject_the_endpoint() {
    let up = Upstream::start("chunk").await;
    let proxy = start(&[app("chunk", &[up.addr], EJECT_FAST)]);
    let bodies: [(&str, &[u8]); 5] = [
        ("size zz", b"zz\r\nhello\r\n0\r\n\r\n"),
        ("size -1", b"-1\r\nhello\r\n0\r\n\r\n"),
        ("size 0x5", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("size overflow", b"f0000000000000003\r\nhello\r\n0\r\n\r\n"),
        ("bare LF", b"5\nhello\r\n0\r\n\r\n"),
    ];
    let head =
        "POST /v1/chunk/upload HTTP/1.1\r\nhost: api.test\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut sent = 0;
    for round in 0..2 {
        for (what, body) in bodies {
            let mut req = head.as_bytes().to_vec();
            req.extend_from_slice(body);
            let (status, text) = raw_request(&proxy, &req).await;
            assert_eq!(status, 400, "{what} (round {round}): {text}");
            assert_eq!(error_code(&text), "body_malformed", "{what}");
            sent += 1;
        }
    }
    // Two failures would have ejected the only endpoint: it still serves.
    let (status, body) = get(&proxy, "/v1/chunk/after").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["upstream"], "chunk");
    assert_eq!(ejections(&proxy, "chunk").await, 0.0);
    assert_eq!(upstream_errors(&proxy, "chunk").await, 0.0);
    assert_eq!(
        client_errors(&proxy, "body_malformed").await,
        f64::from(sent)
    );
}

#[tokio::test]
async fn clients_that_hang_up_mid_body_never_eject_the_endpoint() {
    let up = Upstream::start("abort").await;
    let proxy = start(&[app("abort", &[up.addr], EJECT_FAST)]);
    let head = "POST /v1/abort/upload HTTP/1.1\r\nhost: api.test\r\ncontent-length: 100000\r\n\r\n";
    for i in 1..=5 {
        let mut s = TcpStream::connect(proxy.addr("http"))
            .await
            .expect("connect");
        s.write_all(head.as_bytes()).await.expect("head");
        s.write_all(b"0123456789").await.expect("10 bytes");
        // The upstream has the request and waits for the rest: now hang up.
        assert!(
            eventually(WAIT, || async { up.hits() == i }).await,
            "request {i} reached the upstream (an ejected endpoint gets none)"
        );
        drop(s);
    }
    let aborted = proxy
        .wait_metric(
            "tollgate_http_client_errors_total",
            &["reason=\"body_aborted\""],
            WAIT,
            |v| v >= 5.0,
        )
        .await
        .expect("metrics");
    assert_eq!(aborted, 5.0);
    let (status, body) = get(&proxy, "/v1/abort/after").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ejections(&proxy, "abort").await, 0.0);
    assert_eq!(upstream_errors(&proxy, "abort").await, 0.0);
}

#[tokio::test]
async fn a_stalled_body_is_the_clients_timeout_not_the_upstreams() {
    let up = Upstream::start("stall").await;
    let cluster = format!("{EJECT_FAST}\nresponse_header_timeout_ms = 300");
    let proxy = start(&[app("stall", &[up.addr], &cluster)]);
    let head = "POST /v1/stall/upload HTTP/1.1\r\nhost: api.test\r\ncontent-length: 100000\r\n\r\n";
    for i in 0..3 {
        // The upstream waits for a body the client never finishes.
        let mut req = head.as_bytes().to_vec();
        req.extend_from_slice(b"0123456789");
        let (status, text) = raw_request(&proxy, &req).await;
        assert_eq!(status, 408, "attempt {i}: {text}");
        assert_eq!(error_code(&text), "body_timeout");
    }
    let (status, body) = get(&proxy, "/v1/stall/after").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ejections(&proxy, "stall").await, 0.0);
    assert_eq!(upstream_errors(&proxy, "stall").await, 0.0);
    assert_eq!(client_errors(&proxy, "body_timeout").await, 3.0);
}

// ---------------------------------------------------------------------------
// The ejection ceiling

#[tokio::test]
async fn passive_ejection_never_takes_more_than_half_a_cluster() {
    let live = Upstream::start("live").await;
    let (dead, dead_a, dead_b) = (dead_addr(), dead_addr(), dead_addr());
    let eject_at_once = "outlier = { consecutive_failures = 1, ejection_ms = 600000 }\n\
                         retry = { max_retries = 0 }";
    let proxy = start(&[
        app("half", &[dead, live.addr], eject_at_once),
        app("both", &[dead_a, dead_b], eject_at_once),
        app("lone", &[dead], eject_at_once),
    ]);

    // One failing endpoint of two: ejected (50% is allowed), the other serves.
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(get(&proxy, &format!("/v1/half/{i}")).await.0);
    }
    let failed = statuses.iter().filter(|s| **s == 502).count();
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        (failed, served),
        (1, 9),
        "one request meets the dead endpoint: {statuses:?}"
    );
    assert_eq!(ejections(&proxy, "half").await, 1.0);
    let avail = availability(&proxy, "half").await;
    assert!(!avail[&dead.to_string()], "{avail:?}");

    // Both failing: one ejected, the other is still tried (502), never "no upstream" (503).
    for i in 0..6 {
        let (status, body) = get(&proxy, &format!("/v1/both/{i}")).await;
        assert_eq!(status, 502, "request {i}: {body}");
        assert_eq!(error_code(&body), "upstream_connect_failed");
    }
    assert_eq!(ejections(&proxy, "both").await, 1.0);
    let avail = availability(&proxy, "both").await;
    assert_eq!(avail.values().filter(|a| !**a).count(), 1, "{avail:?}");

    // A cluster of one is never ejected at 50%.
    for i in 0..3 {
        let (status, body) = get(&proxy, &format!("/v1/lone/{i}")).await;
        assert_eq!(status, 502, "request {i}: {body}");
    }
    assert_eq!(ejections(&proxy, "lone").await, 0.0);

    // The ceiling is a percentage.
    let bad = Config::new()
        .top("api_hosts = [\"api.test\"]")
        .listener("http")
        .raw(&app(
            "x",
            &[dead],
            "outlier = { max_ejection_percent = 101 }",
        ))
        .build();
    let (status, stderr) =
        config::expect_start_failure(&bad, &[], WAIT).expect("the proxy refuses the config");
    assert!(!status.success());
    assert!(
        stderr.contains("max_ejection_percent") && stderr.contains("0 to 100"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// gRPC-Web and Connect bodies the proxy cannot translate

const RPC_HOST: &str = "rpc.test";
const ECHO: &str = "/tollgate.test.v1.TestService/Echo";
const STREAM: &str = "/tollgate.test.v1.TestService/ServerStream";

/// A proxy in front of the test service (h2c), which is ejected after two failures.
async fn start_rpc() -> ProxyProcess {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, TestServiceImpl::new()));
    let section = format!(
        "[[apps]]\nid = \"rpc\"\nhostnames = [\"{RPC_HOST}\"]\n\
         [apps.upstreams.default]\nendpoints = [{{ address = \"{up}\" }}]\nprotocol = \"h2c\"\n\
         {EJECT_FAST}\n[apps.rpc]\n"
    );
    start(&[section])
}

fn envelope(flags: u8, msg: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

fn echo_request(message: &str) -> Vec<u8> {
    EchoRequest {
        message: message.into(),
        payload_bytes: 0,
    }
    .encode_to_vec()
}

/// One POST on `conn` to the RPC host: status, headers and the whole body.
async fn post(
    conn: &mut Sender,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, HeaderMap, Bytes) {
    let mut req = client::request(conn, "POST", "http", RPC_HOST, path, client::full(body));
    let h = req.headers_mut();
    h.insert("content-type", content_type.parse().expect("content type"));
    h.insert("x-grpc-web", "1".parse().expect("value"));
    let resp = tokio::time::timeout(WAIT, conn.send(req))
        .await
        .expect("answer in time")
        .expect("response");
    let status = resp.status().as_u16();
    let (parts, mut body) = resp.into_parts();
    let bytes = read_to_end(&mut body, WAIT).await.expect("body");
    (status, parts.headers, bytes)
}

/// `grpc-status` and `grpc-message` of the gRPC-Web trailer frame ending `body`.
fn grpc_web_status(body: &[u8]) -> (String, String) {
    let mut rest = body;
    let mut fields = HashMap::new();
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let (flags, frame) = (rest[0], &rest[5..(5 + len).min(rest.len())]);
        if flags & 0x80 != 0 {
            for line in String::from_utf8_lossy(frame).lines() {
                if let Some((k, v)) = line.split_once(':') {
                    fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
        }
        rest = &rest[(5 + len).min(rest.len())..];
    }
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    (get("grpc-status"), get("grpc-message"))
}

#[tokio::test]
async fn invalid_grpc_web_text_is_the_clients_invalid_argument() {
    let proxy = start_rpc().await;
    let mut conn = client::connect_plain(proxy.addr("http"), true)
        .await
        .expect("h2c connection");
    let text = "application/grpc-web-text";
    for i in 0..3 {
        let (status, h, body) = post(&mut conn, ECHO, text, b"AAAA*AAA".to_vec()).await;
        assert_eq!(status, 200, "{h:?}");
        let frames = STANDARD.decode(&body).expect("base64 answer");
        let (code, message) = grpc_web_status(&frames);
        assert_eq!(
            code, "3",
            "attempt {i}: INVALID_ARGUMENT, got {code} {message}"
        );
        assert!(message.contains("base64"), "{message}");
    }
    // A valid call afterwards still reaches the upstream.
    let valid = STANDARD.encode(envelope(0, &echo_request("after")));
    let (_, _, body) = post(&mut conn, ECHO, text, valid.into_bytes()).await;
    let (code, message) = grpc_web_status(&STANDARD.decode(&body).expect("base64 answer"));
    assert_eq!(code, "0", "{message}");
    assert_eq!(upstream_errors(&proxy, "rpc").await, 0.0);
    assert_eq!(ejections(&proxy, "rpc").await, 0.0);
    assert_eq!(client_errors(&proxy, "body_invalid").await, 3.0);
}

#[tokio::test]
async fn envelopes_with_undefined_flags_are_refused() {
    let proxy = start_rpc().await;
    let mut conn = client::connect_plain(proxy.addr("http"), true)
        .await
        .expect("h2c connection");
    let msg = echo_request("flags");
    // gRPC-Web: 0x7e is no defined flag; 0x80 (trailers) is no request message.
    for flags in [0x7e, 0x80] {
        let body = envelope(flags, &msg);
        let (status, h, answer) = post(&mut conn, ECHO, "application/grpc-web+proto", body).await;
        assert_eq!(status, 200, "{h:?}");
        let (code, message) = grpc_web_status(&answer);
        assert_eq!(code, "3", "flags 0x{flags:02x}: got {code} {message}");
        assert!(message.contains("flags"), "{message}");
    }
    // Connect streaming: the end-of-stream message carries the error.
    let (status, h, answer) = post(
        &mut conn,
        STREAM,
        "application/connect+proto",
        envelope(0x7e, &msg),
    )
    .await;
    assert_eq!(status, 200, "{h:?}");
    assert!(
        answer.len() > 5 && answer[0] == 0x02,
        "an end-of-stream message: {answer:?}"
    );
    let end: serde_json::Value = serde_json::from_slice(&answer[5..]).expect("end-of-stream JSON");
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");

    // A well-flagged message still passes.
    let (_, _, answer) = post(
        &mut conn,
        ECHO,
        "application/grpc-web+proto",
        envelope(0, &msg),
    )
    .await;
    assert_eq!(grpc_web_status(&answer).0, "0");
    assert_eq!(upstream_errors(&proxy, "rpc").await, 0.0);
    assert_eq!(client_errors(&proxy, "body_invalid").await, 3.0);
}

// ---------------------------------------------------------------------------
// Response heads

/// An HTTP/1.1 upstream answering `/head/<n>` with a header of `n` bytes.
async fn big_head_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let size: usize = head
                    .split(' ')
                    .nth(1)
                    .and_then(|p| p.strip_prefix("/head/"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    "a".repeat(size)
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn oversized_upstream_response_heads_get_502() {
    let up = big_head_upstream().await;
    let proxy = start(&[app("heads", &[up], "retry = { max_retries = 0 }")]);
    let (status, body) = get(&proxy, "/v1/heads/head/20000").await;
    assert_eq!((status, body.as_str()), (200, "ok"), "a 20 KB head passes");
    let (status, body) = get(&proxy, "/v1/heads/head/200000").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(error_code(&body), "upstream_protocol_error");
    let protocol = ["app=\"heads\"", "kind=\"upstream_protocol_error\""];
    assert_eq!(
        metric(&proxy, "tollgate_upstream_errors_total", &protocol).await,
        1.0
    );
}
