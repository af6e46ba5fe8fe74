//! gRPC-Web and Connect through the real proxy, with real clients: `@connectrpc/connect-node`
//! (`tests/connect/client.mjs`) speaking Connect JSON, Connect binary, Connect GET and
//! gRPC-Web (binary, over HTTP/2 and HTTP/1.1) over TLS to the proxy, which translates to
//! gRPC for the tonic `TestService` upstream (h2c). Unary calls, a 10,000-message server
//! stream, errors with details, deadlines, cancellation; plus raw HTTP checks of CORS,
//! Connect GET and gRPC-Web text that the clients do not cover.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::HeaderMap;
use prost::{Message, Name};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::TcpListener;
use tollgate_proto::TestServiceImpl;
use tollgate_proto::test::v1::{
    EchoRequest, EchoResponse, ErrorDetail, StreamRequest, StreamResponse,
};
use tollgate_proto::testsvc::{ERROR_DETAIL_DOMAIN, ERROR_DETAIL_REASON};
use tollgate_tests::client::{self, Sender, TestBody};
use tollgate_tests::config::{Config, Files};
use tollgate_tests::connect::{Call, CallResult, NodeClient, Outcome, RpcError, Transport};
use tollgate_tests::grpc::serve_without_server_timer;
use tollgate_tests::helpers::{WAIT, read_to_end};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::tls::{TestCert, client_config};

/// The app with the descriptor set (JSON offered) and CORS.
const HOST: &str = "grpc.test";
/// The same service without a descriptor set: protobuf codecs only.
const BARE: &str = "bare.test";
/// The one origin CORS allows.
const ALLOWED_ORIGIN: &str = "https://web.test:8443";
const ECHO: &str = "/tollgate.test.v1.TestService/Echo";
const STREAM: &str = "/tollgate.test.v1.TestService/ServerStream";

/// A message with non-ASCII, '%' and a literal percent-escape, as in the `grpc` module.
const FAIL_MESSAGE: &str = "quota épuisée: 100% used ✓ (50%25 literal)";

/// Every way the Node client reaches the proxy, labelled.
fn transports() -> Vec<(&'static str, Transport, bool)> {
    vec![
        ("connect-json h2", Transport::ConnectJson, false),
        ("connect-proto h2", Transport::ConnectProto, false),
        ("connect-proto http/1.1", Transport::ConnectProto, true),
        ("grpc-web h2", Transport::GrpcWeb, false),
        ("grpc-web http/1.1", Transport::GrpcWeb, true),
    ]
}

fn call(transport: Transport, http1: bool, method: &str, request: Value) -> Call {
    let c = Call::new(transport, method, request);
    if http1 { c.http1() } else { c }
}

struct Setup {
    proxy: ProxyProcess,
    cert: TestCert,
    svc: TestServiceImpl,
    node: NodeClient,
    bare: NodeClient,
}

impl Setup {
    /// The test service (h2c) behind a proxy TLS listener `tls`, as two apps: `grpc.test`
    /// with the built-in descriptor set and CORS for [`ALLOWED_ORIGIN`], `bare.test` with
    /// neither. The service runs without tonic's server-side deadline timer, so a call
    /// over its deadline ends in `Slow`'s `deadline_exceeded` (or the proxy's), never in
    /// that timer's `canceled`.
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let up = listener.local_addr().expect("addr");
        let svc = TestServiceImpl::new();
        tokio::spawn(serve_without_server_timer(listener, svc.clone()));
        let cert = TestCert::new(&[HOST, BARE]);
        let cfg = Config::new()
            .tls_listener("tls", "")
            .cert("grpc")
            .raw(&rpc_app("grpc", HOST, up, "descriptor_set = \"builtin\""))
            .raw(&format!(
                "[apps.cors]\nallowed_origins = [\"{ALLOWED_ORIGIN}\"]"
            ))
            .raw(&rpc_app("bare", BARE, up, ""))
            .build();
        let files = Files::new().cert("grpc", &cert);
        let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");
        let port = proxy.addr("tls").port();
        let node = NodeClient::new(&format!("https://{HOST}:{port}"), &cert).expect("client");
        let bare = NodeClient::new(&format!("https://{BARE}:{port}"), &cert).expect("client");
        Setup {
            proxy,
            cert,
            svc,
            node,
            bare,
        }
    }

    async fn call(&self, what: &str, c: &Call) -> Outcome {
        self.node
            .call(c)
            .await
            .unwrap_or_else(|e| panic!("{what}: the client did not run: {e}\n{}", self.proxy_log()))
    }

    fn proxy_log(&self) -> String {
        format!("--- proxy stderr ---\n{}", self.proxy.stderr())
    }

    /// A raw HTTP/2 connection to the proxy's TLS listener for `host`.
    async fn raw(&self, host: &str) -> Sender {
        let cfg = client_config(&[&self.cert], &[b"h2"]);
        let s = client::connect_tls(self.proxy.addr("tls"), host, cfg)
            .await
            .expect("TLS connection");
        assert!(s.is_h2(), "ALPN h2");
        s
    }
}

/// An app of one h2c upstream marked as a gRPC service with `rpc` lines.
fn rpc_app(id: &str, host: &str, upstream: SocketAddr, rpc: &str) -> String {
    format!(
        "[[apps]]\nid = \"{id}\"\nhostnames = [\"{host}\"]\n\
         [apps.upstreams.default]\nendpoints = [{{ address = \"{upstream}\" }}]\nprotocol = \"h2c\"\n\
         [apps.rpc]\n{rpc}"
    )
}

/// `EchoResponse.metadata` of an echoed message.
fn seen(msg: &Value, name: &str) -> Option<String> {
    msg["metadata"][name].as_str().map(str::to_owned)
}

// ---------------------------------------------------------------------------
// Unary

#[tokio::test]
async fn unary_echo_over_every_transport_reaches_the_upstream_as_grpc() {
    let s = Setup::start().await;
    for (kind, transport, http1) in transports() {
        let text = format!("héllo over {kind} ✓");
        let c = call(
            transport,
            http1,
            "echo",
            json!({ "message": text, "payloadBytes": 100_000 }),
        );
        let out = s.call(kind, &c).await;
        let (headers, _) = out.expect_ok(kind);
        let msg = out.message(kind);
        assert_eq!(msg["message"], text.as_str(), "{kind}: {msg}");
        assert_eq!(
            msg["payload"]["bytes"], 100_000,
            "{kind}: a payload larger than one frame arrives whole"
        );
        let ct = seen(msg, "content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/grpc") && !ct.starts_with("application/grpc-web"),
            "{kind}: the upstream got plain gRPC, content-type {ct:?}"
        );
        assert_eq!(
            seen(msg, "te").as_deref(),
            Some("trailers"),
            "{kind}: {msg}"
        );
        assert!(
            seen(msg, "x-forwarded-host").is_some_and(|h| h.starts_with(HOST)),
            "{kind}: {msg}"
        );
        assert_eq!(
            headers.get("x-tollgate-app-id").map(String::as_str),
            Some("grpc"),
            "{kind}: response headers {headers:?}"
        );
    }
}

#[tokio::test]
async fn gzip_requests_are_accepted_on_every_protocol() {
    let s = Setup::start().await;
    for (kind, transport, http1) in [
        ("connect-json", Transport::ConnectJson, false),
        ("connect-proto", Transport::ConnectProto, false),
        ("grpc-web", Transport::GrpcWeb, false),
    ] {
        let text = "squeezed ".repeat(500);
        let c = call(transport, http1, "echo", json!({ "message": text })).gzip();
        let out = s.call(kind, &c).await;
        out.expect_ok(kind);
        assert_eq!(out.message(kind)["message"], text.as_str(), "{kind}");
    }
}

#[tokio::test]
async fn connect_get_calls_idempotent_methods() {
    let s = Setup::start().await;
    let c = Call::new(
        Transport::ConnectGet,
        "echo",
        json!({ "message": "by GET ✓" }),
    );
    let out = s.call("connect-get", &c).await;
    out.expect_ok("connect-get");
    let msg = out.message("connect-get");
    assert_eq!(msg["message"], "by GET ✓");
    assert!(
        seen(msg, "content-type").is_some_and(|c| c.starts_with("application/grpc")),
        "{msg}"
    );

    // The same by hand, so it is certain the request was a GET: JSON, then base64 proto.
    let mut h2 = s.raw(HOST).await;
    let message = "%7B%22message%22%3A%22raw%20GET%22%7D"; // {"message":"raw GET"}
    let path = format!("{ECHO}?connect=v1&encoding=json&message={message}");
    let (status, headers, body) = send(&mut h2, "GET", HOST, &path, &[], Bytes::new()).await;
    assert_eq!(status, 200, "{headers:?} {body:?}");
    assert!(
        content_type(&headers).starts_with("application/json"),
        "{headers:?}"
    );
    let v: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(v["message"], "raw GET", "{v}");

    let req = EchoRequest {
        message: "raw proto GET".into(),
        payload_bytes: 3,
    };
    let b64 = URL_SAFE_NO_PAD.encode(req.encode_to_vec());
    let path = format!("{ECHO}?connect=v1&encoding=proto&base64=1&message={b64}");
    let (status, headers, body) = send(&mut h2, "GET", HOST, &path, &[], Bytes::new()).await;
    assert_eq!(status, 200, "{headers:?} {body:?}");
    assert!(
        content_type(&headers).starts_with("application/proto"),
        "{headers:?}"
    );
    let resp = EchoResponse::decode(body).expect("EchoResponse");
    assert_eq!(resp.message, "raw proto GET");
    assert_eq!(resp.payload, vec![0; 3]);
}

#[tokio::test]
async fn json_without_a_descriptor_set_is_refused_with_a_clear_error() {
    let s = Setup::start().await;
    let c = Call::new(
        Transport::ConnectJson,
        "echo",
        json!({ "message": "json?" }),
    );
    let out = s.bare.call(&c).await.expect("client runs");
    let err = out.expect_err("JSON on a route without a schema");
    assert_ne!(err.code, "ok");
    assert!(
        err.message.to_lowercase().contains("json"),
        "the error says JSON is what is missing: {err:?}"
    );
    // The binary codec works on the same route.
    let c = Call::new(
        Transport::ConnectProto,
        "echo",
        json!({ "message": "proto!" }),
    );
    let out = s.bare.call(&c).await.expect("client runs");
    out.expect_ok("binary Connect without a schema");
    assert_eq!(out.message("bare")["message"], "proto!");
}

// ---------------------------------------------------------------------------
// Server streaming

#[tokio::test]
async fn server_stream_of_ten_thousand_messages_arrives_whole_and_in_order() {
    let s = Setup::start().await;
    for (kind, transport, http1) in transports() {
        let req =
            json!({ "count": 10_000, "intervalMs": 0, "payloadBytes": 64, "usagePerMessage": 3 });
        let c = call(transport, http1, "serverStream", req).summarize();
        let out = s.call(kind, &c).await;
        out.expect_ok(kind);
        let sum = out.summary.as_ref().expect("summary");
        assert_eq!(sum["count"], 10_000, "{kind}: {sum}");
        assert_eq!(sum["firstSeq"], 0, "{kind}: {sum}");
        assert_eq!(sum["lastSeq"], 9_999, "{kind}: {sum}");
        assert_eq!(sum["inOrder"], true, "{kind}: {sum}");
        assert_eq!(sum["payloadBytes"], 640_000, "{kind}: {sum}");
    }
}

// ---------------------------------------------------------------------------
// Errors with details

fn assert_rich_error(kind: &str, err: &RpcError) {
    assert_eq!(err.code, "failed_precondition", "{kind}: {err:?}");
    assert_eq!(
        err.message, FAIL_MESSAGE,
        "{kind}: the message survives encoding"
    );
    assert_eq!(err.details.len(), 1, "{kind}: {err:?}");
    let d = &err.details[0];
    assert_eq!(d.type_name, ErrorDetail::full_name(), "{kind}");
    let detail = ErrorDetail::decode(d.value.as_slice()).expect("ErrorDetail");
    assert_eq!(detail.reason, ERROR_DETAIL_REASON, "{kind}");
    assert_eq!(detail.domain, ERROR_DETAIL_DOMAIN, "{kind}");
    // The upstream's answer, passed on, not one the proxy made up.
    assert_eq!(
        err.metadata.get("x-tollgate-app-id").map(String::as_str),
        Some("grpc"),
        "{kind}: {err:?}"
    );
}

#[tokio::test]
async fn failures_keep_code_message_and_details() {
    let s = Setup::start().await;
    for (kind, transport, http1) in transports() {
        let req = json!({ "code": 9, "message": FAIL_MESSAGE, "withDetails": true });
        let out = s.call(kind, &call(transport, http1, "fail", req)).await;
        assert_rich_error(kind, out.expect_err(kind));

        let req = json!({ "code": 7, "message": "nope", "withDetails": false });
        let out = s.call(kind, &call(transport, http1, "fail", req)).await;
        let err = out.expect_err(kind);
        assert_eq!(
            (err.code.as_str(), err.message.as_str()),
            ("permission_denied", "nope"),
            "{kind}"
        );
        assert!(err.details.is_empty(), "{kind}: {err:?}");
    }
}

// ---------------------------------------------------------------------------
// Deadlines

#[tokio::test]
async fn deadlines_reach_the_upstream_as_grpc_timeout() {
    let s = Setup::start().await;
    for (kind, transport, http1) in transports() {
        // The client's deadline arrives upstream as grpc-timeout, no longer than it was.
        let c = call(transport, http1, "echo", json!({ "message": "t" })).timeout_ms(30_000);
        let out = s.call(kind, &c).await;
        out.expect_ok(kind);
        let msg = out.message(kind);
        let t =
            seen(msg, "grpc-timeout").unwrap_or_else(|| panic!("{kind}: no grpc-timeout: {msg}"));
        let ms = grpc_timeout_ms(&t).unwrap_or_else(|| panic!("{kind}: bad grpc-timeout {t:?}"));
        assert!(ms > 0 && ms <= 30_000, "{kind}: grpc-timeout {t:?}");

        // A deadline shorter than the call: deadline_exceeded (from whichever side
        // noticed first: the client's timer and the upstream both run).
        let c = call(transport, http1, "slow", json!({ "delayMs": 10_000 })).timeout_ms(300);
        let out = s.call(kind, &c).await;
        assert_eq!(out.expect_err(kind).code, "deadline_exceeded", "{kind}");

        // The deadline only as a header, the client waiting for the answer: the
        // upstream's own deadline_exceeded comes back through the proxy.
        let header = match transport {
            Transport::GrpcWeb => ("grpc-timeout", "300m"),
            _ => ("connect-timeout-ms", "300"),
        };
        let c =
            call(transport, http1, "slow", json!({ "delayMs": 10_000 })).header(header.0, header.1);
        let out = s.call(kind, &c).await;
        let err = out.expect_err(kind);
        assert_eq!(err.code, "deadline_exceeded", "{kind}: {err:?}");

        // Within the deadline the call succeeds.
        let c = call(transport, http1, "slow", json!({ "delayMs": 1 })).timeout_ms(30_000);
        let out = s.call(kind, &c).await;
        out.expect_ok(kind);
        assert_eq!(out.message(kind)["message"], "slept 1ms", "{kind}");
    }
}

/// Milliseconds of a `grpc-timeout` value (rounded down).
fn grpc_timeout_ms(v: &str) -> Option<u64> {
    let (n, unit) = v.split_at_checked(v.len().checked_sub(1)?)?;
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => n * 3_600_000,
        "M" => n * 60_000,
        "S" => n * 1000,
        "m" => n,
        "u" => n / 1000,
        "n" => n / 1_000_000,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Cancellation

#[tokio::test]
async fn a_client_abort_cancels_the_upstream_stream() {
    let s = Setup::start().await;
    for (round, (kind, transport, http1)) in transports().into_iter().enumerate() {
        let round = round as u64;
        // One message now, the next in a minute: the stream is open when the client aborts.
        let req = json!({ "count": 1000, "intervalMs": 60_000 });
        let after = call(transport, http1, "echo", json!({ "message": "after" }));
        let c = call(transport, http1, "serverStream", req)
            .abort_after(1)
            .wait_stdin()
            .after(after);
        let mut run = s.node.spawn(&c).expect("client starts");
        let aborted = run.wait_for("aborted", WAIT).await.expect("abort");
        assert_eq!(aborted["aborted"], 1, "{kind}");
        // The client process (and, on HTTP/2, its connection) is still there: only the
        // stream was cancelled, and the proxy passes that on to the upstream.
        run.wait_for("waiting", WAIT).await.expect("waiting");
        let deadline = Instant::now() + WAIT;
        while s.svc.cancelled_streams() == round {
            assert!(
                Instant::now() < deadline,
                "{kind}: the upstream never saw the cancellation\n{}",
                s.proxy_log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(s.svc.cancelled_streams(), round + 1, "{kind}");
        // The same client goes on working afterwards.
        let lines = run
            .finish(tollgate_tests::connect::CALL_TIMEOUT)
            .await
            .expect("client ends");
        let (first, after) = tollgate_tests::connect::split_after(&lines).expect("outcomes");
        assert!(
            matches!(first.result, CallResult::Aborted(1)),
            "{kind}: {first:?}"
        );
        assert_eq!(first.messages.len(), 1, "{kind}");
        assert_eq!(first.messages[0]["seq"], 0, "{kind}");
        let after = after.expect("the call after the abort ran");
        after.expect_ok(kind);
        assert_eq!(after.message(kind)["message"], "after", "{kind}");
    }
}

// ---------------------------------------------------------------------------
// CORS, raw

async fn send(
    s: &mut Sender,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (u16, HeaderMap, Bytes) {
    let mut req = client::request(s, method, "https", host, path, client::full(body));
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    let resp = tokio::time::timeout(WAIT, s.send(req))
        .await
        .expect("answer in time")
        .expect("response");
    let status = resp.status().as_u16();
    let (parts, mut body) = resp.into_parts();
    let bytes = read_to_end(&mut body, WAIT).await.expect("body");
    (status, parts.headers, bytes)
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(", ")
}

fn content_type(h: &HeaderMap) -> String {
    header(h, "content-type")
}

/// A comma-separated header value as lower-case tokens.
fn tokens(h: &HeaderMap, name: &str) -> Vec<String> {
    header(h, name)
        .split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

#[tokio::test]
async fn cors_preflight_is_answered_at_the_edge_for_allowed_origins_only() {
    let s = Setup::start().await;
    let mut h2 = s.raw(HOST).await;
    let asks = [
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "content-type,connect-protocol-version,connect-timeout-ms,x-grpc-web,x-user-agent",
        ),
    ];
    let mut allowed = vec![("origin", ALLOWED_ORIGIN)];
    allowed.extend(asks);
    let (status, h, _) = send(&mut h2, "OPTIONS", HOST, ECHO, &allowed, Bytes::new()).await;
    assert_eq!(status, 204, "{h:?}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        ALLOWED_ORIGIN,
        "{h:?}"
    );
    assert!(
        tokens(&h, "access-control-allow-methods").contains(&"post".into()),
        "{h:?}"
    );
    let allow_headers = tokens(&h, "access-control-allow-headers");
    for want in [
        "content-type",
        "connect-protocol-version",
        "connect-timeout-ms",
        "x-grpc-web",
    ] {
        assert!(
            allow_headers.contains(&want.into()) || allow_headers.contains(&"*".into()),
            "{want} allowed: {h:?}"
        );
    }
    assert!(tokens(&h, "vary").contains(&"origin".into()), "{h:?}");

    let mut denied = vec![("origin", "https://evil.test")];
    denied.extend(asks);
    let (_, h, _) = send(&mut h2, "OPTIONS", HOST, ECHO, &denied, Bytes::new()).await;
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");

    // An actual cross-origin call: the origin is allowed and the gRPC-Web status
    // headers a browser script needs are exposed.
    let req = EchoRequest {
        message: "cors".into(),
        payload_bytes: 0,
    };
    let hs = [
        ("origin", ALLOWED_ORIGIN),
        ("content-type", "application/grpc-web+proto"),
        ("x-grpc-web", "1"),
    ];
    let (status, h, body) = send(
        &mut h2,
        "POST",
        HOST,
        ECHO,
        &hs,
        envelope(0, &req.encode_to_vec()),
    )
    .await;
    assert_eq!(status, 200, "{h:?}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        ALLOWED_ORIGIN,
        "{h:?}"
    );
    let exposed = tokens(&h, "access-control-expose-headers");
    for want in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(&want.into()), "{want} exposed: {h:?}");
    }
    let frames = frames(&body);
    let resp = EchoResponse::decode(frames[0].1.as_slice()).expect("EchoResponse");
    assert_eq!(resp.message, "cors");
    assert_eq!(trailer_status(&frames), Some("0".into()), "{frames:?}");

    // A call from a disallowed origin gets no CORS grant.
    let hs = [
        ("origin", "https://evil.test"),
        ("content-type", "application/grpc-web+proto"),
        ("x-grpc-web", "1"),
    ];
    let (_, h, _) = send(
        &mut h2,
        "POST",
        HOST,
        ECHO,
        &hs,
        envelope(0, &req.encode_to_vec()),
    )
    .await;
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
}

// ---------------------------------------------------------------------------
// gRPC-Web text, raw (connect-web speaks binary only)

fn envelope(flags: u8, msg: &[u8]) -> Bytes {
    let mut out = vec![flags];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out.into()
}

/// gRPC-Web frames `(flags, payload)`; panics on a truncated body.
fn frames(body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "truncated frame header: {rest:?}");
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        assert!(rest.len() >= 5 + len, "truncated frame");
        out.push((rest[0], rest[5..5 + len].to_vec()));
        rest = &rest[5 + len..];
    }
    out
}

/// `grpc-status` from the trailer frame (flag 0x80), which must come last.
fn trailer_status(frames: &[(u8, Vec<u8>)]) -> Option<String> {
    let (flags, block) = frames.last()?;
    if flags & 0x80 == 0 {
        return None;
    }
    String::from_utf8_lossy(block).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("grpc-status")
            .then(|| v.trim().to_owned())
    })
}

/// Decodes base64 that may be several independently padded chunks back to back.
fn decode_chunked_base64(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'=' {
            while i < text.len() && text[i] == b'=' {
                i += 1;
            }
            out.extend(STANDARD.decode(&text[start..i]).expect("base64 chunk"));
            start = i;
        } else {
            i += 1;
        }
    }
    out.extend(STANDARD.decode(&text[start..]).expect("base64 tail"));
    out
}

#[tokio::test]
async fn grpc_web_text_streams_in_both_directions() {
    let s = Setup::start().await;
    for h2 in [true, false] {
        let cfg = client_config(&[&s.cert], if h2 { &[b"h2"] } else { &[b"http/1.1"] });
        let mut conn = client::connect_tls(s.proxy.addr("tls"), HOST, cfg)
            .await
            .expect("TLS connection");
        assert_eq!(conn.is_h2(), h2);
        let req = StreamRequest {
            count: 20,
            interval_ms: 1,
            payload_bytes: 7,
            usage_per_message: 0,
        };
        let text = STANDARD.encode(envelope(0, &req.encode_to_vec()));
        // The request body in chunks that split base64 quanta.
        let chunks: Vec<Bytes> = text
            .as_bytes()
            .chunks(3)
            .map(Bytes::copy_from_slice)
            .collect();
        let body: TestBody = {
            use futures_util::stream;
            use http_body_util::{BodyExt, StreamBody};
            let frames = stream::iter(
                chunks
                    .into_iter()
                    .map(|c| Ok::<_, tollgate_tests::BoxError>(hyper::body::Frame::data(c))),
            );
            StreamBody::new(frames).boxed()
        };
        let scheme = "https";
        let mut r = client::request(&conn, "POST", scheme, HOST, STREAM, body);
        r.headers_mut().insert(
            "content-type",
            "application/grpc-web-text".parse().expect("ct"),
        );
        r.headers_mut()
            .insert("x-grpc-web", "1".parse().expect("v"));
        let resp = tokio::time::timeout(WAIT, conn.send(r))
            .await
            .expect("in time")
            .expect("response");
        let label = if h2 { "h2" } else { "http/1.1" };
        assert_eq!(resp.status(), 200, "{label}");
        let ct = content_type(resp.headers());
        assert!(ct.starts_with("application/grpc-web-text"), "{label}: {ct}");
        let (_, mut body) = resp.into_parts();
        let text = read_to_end(&mut body, WAIT).await.expect("body");
        let frames = frames(&decode_chunked_base64(&text));
        let msgs: Vec<StreamResponse> = frames
            .iter()
            .filter(|(f, _)| f & 0x80 == 0)
            .map(|(_, m)| StreamResponse::decode(m.as_slice()).expect("StreamResponse"))
            .collect();
        assert_eq!(msgs.len(), 20, "{label}");
        assert!(
            msgs.iter()
                .enumerate()
                .all(|(i, m)| m.seq == i as i32 && m.payload.len() == 7)
        );
        assert_eq!(trailer_status(&frames), Some("0".into()), "{label}");
    }
}
