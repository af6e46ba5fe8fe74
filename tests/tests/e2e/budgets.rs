//! Budgets and the concurrent-stream quota through the real proxy, with real clients:
//! a budget running out mid-stream seen by `@connectrpc/connect-node` (Connect and
//! gRPC-Web), by tonic and by a raw HTTP/2 gRPC client (exactly the messages paid for,
//! then CANCELLED with `BUDGET_EXCEEDED` and a `google.rpc.ErrorInfo`, the upstream
//! stream cancelled); a spent budget refusing calls before the upstream; metering a
//! message field (`usage_tokens`); the stream quota; the in-process store surviving a
//! proxy restart; an HTTP/1.1 refusal reaching a client still sending its body. Budgets live in a real Redis (`tollgate_tests::redis`) with a lease of
//! one unit, so every cut is exact.

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use http_body_util::BodyExt;
use prost::Message;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_proto::TestServiceImpl;
use tollgate_proto::google::rpc;
use tollgate_proto::test::v1::test_service_client::TestServiceClient;
use tollgate_proto::test::v1::test_service_server::TestServiceServer;
use tollgate_proto::test::v1::{EchoRequest, StreamRequest, StreamResponse};
use tollgate_tests::client;
use tollgate_tests::config::{Config, Files};
use tollgate_tests::connect::{Call, NodeClient, Outcome, RpcError, Transport};
use tollgate_tests::grpc::h2c_channel;
use tollgate_tests::helpers::{WAIT, error_code, json};
use tollgate_tests::proxy::{ProxyProcess, metric_value};
use tollgate_tests::redis;
use tollgate_tests::tls::TestCert;
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::{SOON, until};
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};

const EXHAUSTED: &str = "tollgate_budget_exhausted_total";
const QUOTA_REFUSED: &str = "tollgate_stream_quota_refused_total";
const STREAM: &str = "/tollgate.test.v1.TestService/ServerStream";
const ECHO: &str = "/tollgate.test.v1.TestService/Echo";

/// `google.rpc.ErrorInfo` (google/rpc/error_details.proto), which the proxy attaches to a cut.
#[derive(Clone, PartialEq, prost::Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(map = "string, string", tag = "3")]
    metadata: HashMap<String, String>,
}

// ---------------------------------------------------------------------------
// Set-up

/// `TestService` on an ephemeral port (h2c), counting every call that reaches it.
struct Service {
    addr: SocketAddr,
    svc: TestServiceImpl,
    calls: Arc<AtomicU64>,
}

impl Service {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let svc = TestServiceImpl::new();
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let server = TestServiceServer::with_interceptor(svc.clone(), move |req| {
            counter.fetch_add(1, SeqCst);
            Ok(req)
        });
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        });
        tokio::spawn(
            Server::builder()
                .add_service(server)
                .serve_with_incoming(Box::pin(incoming)),
        );
        Service { addr, svc, calls }
    }

    fn calls(&self) -> u64 {
        self.calls.load(SeqCst)
    }

    /// Waits until the upstream has seen more than `before` streams cancelled.
    async fn cancelled_after(&self, what: &str, before: u64) {
        until(
            &format!("{what}: the upstream stream cancelled"),
            SOON,
            || async { (self.svc.cancelled_streams() > before).then_some(()) },
        )
        .await;
    }
}

/// Budgets in the shared Redis under a fresh prefix, leases of one unit.
fn redis_budgets(server: &redis::Server, test: &str) -> String {
    format!(
        "[rate_limiting]\nredis_url = \"{}\"\nredis_timeout_ms = 1000\nbudget_store = \"redis\"\n\
         budget_lease = 1\nkey_prefix = \"{}\"",
        server.url(),
        redis::prefix(test)
    )
}

/// `[apps.limits]` lines for a daily budget of `limit` `unit`s (a TOML value).
fn budget(limit: u64, unit: &str) -> String {
    format!("[apps.limits.budget]\nperiod = \"day\"\nlimit = {limit}\nunit = {unit}")
}

fn host(app: &str) -> String {
    format!("{app}.test")
}

/// A proxy (listeners `plain` and `tls`) with one gRPC app per `(id, limits)`, each at
/// `<id>.test`, all in front of one [`Service`].
struct Setup {
    proxy: ProxyProcess,
    cert: TestCert,
    service: Service,
}

impl Setup {
    async fn start(rate_limiting: &str, apps: &[(&str, &str)]) -> Self {
        let service = Service::start().await;
        let hosts: Vec<String> = apps.iter().map(|(id, _)| host(id)).collect();
        let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let cert = TestCert::new(&names);
        let mut cfg = Config::new()
            .listener("plain")
            .tls_listener("tls", "")
            .cert("grpc")
            .raw(rate_limiting);
        for (id, limits) in apps {
            cfg = cfg.raw(&rpc_app(id, service.addr, limits));
        }
        let proxy = ProxyProcess::start(&cfg.build(), &Files::new().cert("grpc", &cert).refs())
            .expect("proxy starts");
        Setup {
            proxy,
            cert,
            service,
        }
    }

    fn node(&self, app: &str) -> NodeClient {
        let port = self.proxy.addr("tls").port();
        NodeClient::new(&format!("https://{}:{port}", host(app)), &self.cert).expect("client")
    }

    async fn grpc(&self, app: &str) -> TestServiceClient<Channel> {
        grpc_client(&self.proxy, app).await
    }

    async fn node_call(&self, app: &str, what: &str, call: &Call) -> Outcome {
        self.node(app).call(call).await.unwrap_or_else(|e| {
            panic!(
                "{what}: the client did not run: {e}\n{}",
                self.proxy.stderr()
            )
        })
    }

    async fn exhausted(&self, app: &str, when: &str) -> f64 {
        exhausted(&self.proxy, app, when).await
    }
}

/// A gRPC app of one h2c upstream with the built-in descriptor set and `limits`,
/// marked for detailed metrics (the tests read its own series).
fn rpc_app(id: &str, upstream: SocketAddr, limits: &str) -> String {
    format!(
        "[[apps]]\nid = \"{id}\"\nmetrics = \"detailed\"\nhostnames = [\"{}\"]\n\
         [apps.upstreams.default]\nendpoints = [{{ address = \"{upstream}\" }}]\nprotocol = \"h2c\"\n\
         [apps.rpc]\ndescriptor_set = \"builtin\"\n[apps.limits]\n{limits}",
        host(id)
    )
}

async fn grpc_client(proxy: &ProxyProcess, app: &str) -> TestServiceClient<Channel> {
    let ch = h2c_channel(proxy.addr("plain"), &host(app))
        .await
        .expect("h2c channel");
    TestServiceClient::new(ch)
}

async fn exhausted(proxy: &ProxyProcess, app: &str, when: &str) -> f64 {
    let (app, when) = (format!("app=\"{app}\""), format!("when=\"{when}\""));
    proxy
        .metric(EXHAUSTED, &[&app, &when])
        .await
        .expect("metrics")
}

/// A server stream of `count` messages `interval_ms` apart: still running when cut.
fn stream_request(count: i32, usage_per_message: i32) -> StreamRequest {
    StreamRequest {
        count,
        interval_ms: 20,
        payload_bytes: 8,
        usage_per_message,
    }
}

fn stream_json(count: i32, usage_per_message: i32) -> serde_json::Value {
    json!({ "count": count, "intervalMs": 20, "payloadBytes": 8, "usagePerMessage": usage_per_message })
}

/// Runs a server stream with tonic: the messages, then how it ended.
async fn grpc_stream(
    client: &mut TestServiceClient<Channel>,
    req: StreamRequest,
) -> (Vec<StreamResponse>, Result<(), Status>) {
    let resp = tokio::time::timeout(WAIT, client.server_stream(req))
        .await
        .expect("response headers in time");
    let mut stream = match resp {
        Ok(r) => r.into_inner(),
        Err(s) => return (Vec::new(), Err(s)),
    };
    let mut msgs = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("the next message in time")
        {
            Ok(Some(m)) => msgs.push(m),
            Ok(None) => return (msgs, Ok(())),
            Err(s) => return (msgs, Err(s)),
        }
    }
}

// ---------------------------------------------------------------------------
// Assertions

/// The `ErrorInfo` of a cut is `BUDGET_EXCEEDED` in domain `tollgate`.
fn assert_error_info(what: &str, bytes: &[u8]) {
    let info = ErrorInfo::decode(bytes).unwrap_or_else(|e| panic!("{what}: ErrorInfo ({e})"));
    assert_eq!(info.reason, "BUDGET_EXCEEDED", "{what}: {info:?}");
    assert_eq!(info.domain, "tollgate", "{what}: {info:?}");
}

/// A Node client's view of a cut: `messages` arrived in order, then canceled.
fn assert_node_cut(what: &str, out: &Outcome, paid: usize) {
    let seqs: Vec<i64> = out
        .messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap_or(-1))
        .collect();
    let want: Vec<i64> = (0..paid as i64).collect();
    assert_eq!(
        seqs, want,
        "{what}: exactly the {paid} messages paid for, in order"
    );
    let err = out.expect_err(what);
    assert_eq!(err.code, "canceled", "{what}: {err:?}");
    assert!(
        err.message.starts_with("BUDGET_EXCEEDED"),
        "{what}: message {:?}",
        err.message
    );
    let info: Vec<_> = err
        .details
        .iter()
        .filter(|d| d.type_name == "google.rpc.ErrorInfo")
        .collect();
    assert_eq!(info.len(), 1, "{what}: one ErrorInfo detail: {err:?}");
    assert_error_info(what, &info[0].value);
}

/// A tonic view of a cut: `paid` messages, then status CANCELLED from the trailers.
fn assert_grpc_cut(what: &str, msgs: &[StreamResponse], end: &Result<(), Status>, paid: usize) {
    let seqs: Vec<i32> = msgs.iter().map(|m| m.seq).collect();
    let want: Vec<i32> = (0..paid as i32).collect();
    assert_eq!(
        seqs, want,
        "{what}: exactly the {paid} messages paid for, in order"
    );
    let status = end
        .as_ref()
        .expect_err(&format!("{what}: the stream must be cut"));
    assert_eq!(status.code(), Code::Cancelled, "{what}: {status:?}");
    assert!(
        status.message().starts_with("BUDGET_EXCEEDED"),
        "{what}: {status:?}"
    );
    let details = rpc::Status::decode(status.details())
        .unwrap_or_else(|e| panic!("{what}: grpc-status-details-bin ({e}): {status:?}"));
    let info: Vec<_> = details
        .details
        .iter()
        .filter(|a| a.type_url.ends_with("/google.rpc.ErrorInfo"))
        .collect();
    assert_eq!(info.len(), 1, "{what}: one ErrorInfo detail: {details:?}");
    assert_error_info(what, &info[0].value);
}

/// A call refused up front because the budget is spent.
fn assert_node_refused(what: &str, out: &Outcome) {
    assert!(out.messages.is_empty(), "{what}: {:?}", out.messages);
    let err: &RpcError = out.expect_err(what);
    assert_eq!(err.code, "resource_exhausted", "{what}: {err:?}");
    assert!(
        err.message.starts_with("BUDGET_EXCEEDED"),
        "{what}: {:?}",
        err.message
    );
}

fn assert_grpc_refused(what: &str, msgs: &[StreamResponse], end: &Result<(), Status>) {
    assert!(msgs.is_empty(), "{what}: {msgs:?}");
    let status = end.as_ref().expect_err(&format!("{what}: refused"));
    assert_eq!(status.code(), Code::ResourceExhausted, "{what}: {status:?}");
    assert!(
        status.message().starts_with("BUDGET_EXCEEDED"),
        "{what}: {status:?}"
    );
}

// ---------------------------------------------------------------------------
// A budget running out mid-stream

#[tokio::test]
async fn budget_cut_mid_stream_reaches_connect_and_grpc_web_clients() {
    let redis = redis::shared();
    let cases = [
        ("cut-json", "connect-json h2", Transport::ConnectJson, false),
        ("cut-web", "grpc-web h2", Transport::GrpcWeb, false),
        (
            "cut-proto",
            "connect-proto http/1.1",
            Transport::ConnectProto,
            true,
        ),
        ("cut-web1", "grpc-web http/1.1", Transport::GrpcWeb, true),
    ];
    let limits = budget(10, "\"messages\"");
    let apps: Vec<(&str, &str)> = cases.iter().map(|c| (c.0, limits.as_str())).collect();
    let s = Setup::start(&redis_budgets(&redis, "cut-connect"), &apps).await;
    for (app, kind, transport, http1) in cases {
        let call = Call::new(transport, "serverStream", stream_json(50, 0));
        let call = if http1 { call.http1() } else { call };
        let cancelled = s.service.svc.cancelled_streams();
        let out = s.node_call(app, kind, &call).await;
        assert_node_cut(kind, &out, 10);
        s.service.cancelled_after(kind, cancelled).await;
        assert_eq!(s.exhausted(app, "mid_stream").await, 1.0, "{kind}");

        // Spent: the next call is refused before it reaches the upstream.
        let calls = s.service.calls();
        let out = s.node_call(app, kind, &call).await;
        assert_node_refused(&format!("{kind}, budget spent"), &out);
        assert_eq!(
            s.service.calls(),
            calls,
            "{kind}: the upstream was not called"
        );
        assert_eq!(s.exhausted(app, "before").await, 1.0, "{kind}");
    }
    // Each cut stream is counted once as cut, with the 10 messages paid for; refused
    // calls never became streams.
    for protocol in ["connect", "grpc_web"] {
        let p = format!("protocol=\"{protocol}\"");
        // A stream is counted when its body ends, which may trail the client a little.
        let count = s
            .proxy
            .wait_metric("tollgate_stream_messages_count", &[&p], SOON, |v| v >= 2.0)
            .await
            .expect("metrics");
        let text = s.proxy.metrics().await.expect("metrics");
        let cut = ["outcome=\"cut\"", p.as_str()];
        let sum = metric_value(&text, "tollgate_stream_messages_sum", &cut);
        assert_eq!((count, sum), (2.0, 20.0), "{protocol} streams\n{text}");
    }
}

#[tokio::test]
async fn budget_cut_mid_stream_ends_grpc_with_cancelled_in_the_trailers() {
    let redis = redis::shared();
    let limits = budget(10, "\"messages\"");
    let s = Setup::start(
        &redis_budgets(&redis, "cut-grpc"),
        &[("cut-tonic", &limits), ("cut-raw", &limits)],
    )
    .await;

    // tonic.
    let mut grpc = s.grpc("cut-tonic").await;
    let cancelled = s.service.svc.cancelled_streams();
    let (msgs, end) = grpc_stream(&mut grpc, stream_request(50, 0)).await;
    assert_grpc_cut("tonic", &msgs, &end, 10);
    s.service.cancelled_after("tonic", cancelled).await;
    assert_eq!(s.exhausted("cut-tonic", "mid_stream").await, 1.0);
    let calls = s.service.calls();
    let (msgs, end) = grpc_stream(&mut grpc, stream_request(50, 0)).await;
    assert_grpc_refused("tonic, budget spent", &msgs, &end);
    assert_eq!(s.service.calls(), calls, "the upstream was not called");
    assert_eq!(s.exhausted("cut-tonic", "before").await, 1.0);

    // Raw HTTP/2: the status really is in the trailers, after a normal response head.
    let cancelled = s.service.svc.cancelled_streams();
    let (status, headers, data, trailers) = raw_grpc(
        &s.proxy,
        "cut-raw",
        STREAM,
        &stream_request(50, 0).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{headers:?}");
    assert!(
        headers.get("grpc-status").is_none(),
        "not trailers-only: {headers:?}"
    );
    let msgs = grpc_messages(&data);
    assert_eq!(msgs.len(), 10, "raw: exactly the messages paid for");
    for (i, m) in msgs.iter().enumerate() {
        let m = StreamResponse::decode(m.as_slice()).expect("StreamResponse");
        assert_eq!(m.seq, i as i32);
    }
    let trailers = trailers.expect("a trailers frame");
    assert_eq!(
        trailers.get("grpc-status").map(String::as_str),
        Some("1"),
        "{trailers:?}"
    );
    assert!(
        trailers
            .get("grpc-message")
            .is_some_and(|m| m.starts_with("BUDGET_EXCEEDED")),
        "{trailers:?}"
    );
    assert!(
        trailers.contains_key("grpc-status-details-bin"),
        "{trailers:?}"
    );
    s.service.cancelled_after("raw", cancelled).await;
}

/// One gRPC call over a fresh h2c connection: status, headers, body data, trailers.
async fn raw_grpc(
    proxy: &ProxyProcess,
    app: &str,
    path: &str,
    msg: &[u8],
) -> (u16, http::HeaderMap, Bytes, Option<HashMap<String, String>>) {
    let mut h2 = client::connect_plain(proxy.addr("plain"), true)
        .await
        .expect("h2c connection");
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(msg);
    let mut req = client::request(&h2, "POST", "http", &host(app), path, client::full(body));
    req.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    req.headers_mut()
        .insert("te", HeaderValue::from_static("trailers"));
    let resp = tokio::time::timeout(WAIT, h2.send(req))
        .await
        .expect("in time")
        .expect("response");
    let status = resp.status().as_u16();
    let (parts, mut body) = resp.into_parts();
    let mut data = BytesMut::new();
    let mut trailers = None;
    loop {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("the next frame in time");
        let Some(frame) = frame else { break };
        let frame = frame.expect("a body frame");
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(
                        t.iter()
                            .map(|(k, v)| {
                                (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect(),
                    );
                }
            }
        }
    }
    (status, parts.headers, data.freeze(), trailers)
}

/// The messages of a gRPC body (uncompressed length-prefixed frames).
fn grpc_messages(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated gRPC frame: {body:?}");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert!(body.len() >= 5 + len, "truncated gRPC message");
        out.push(body[5..5 + len].to_vec());
        body = &body[5 + len..];
    }
    out
}

// ---------------------------------------------------------------------------
// Refused up front

#[tokio::test]
async fn a_spent_budget_refuses_calls_before_the_upstream() {
    let redis = redis::shared();
    let limits = budget(2, "\"requests\"");
    let s = Setup::start(
        &redis_budgets(&redis, "refuse-rpc"),
        &[("req-grpc", &limits), ("req-connect", &limits)],
    )
    .await;
    let echo = || EchoRequest {
        message: "paid".into(),
        payload_bytes: 0,
    };

    // gRPC: two calls paid for, the third refused before the upstream.
    let mut grpc = s.grpc("req-grpc").await;
    for i in 0..2 {
        tokio::time::timeout(WAIT, grpc.echo(echo()))
            .await
            .expect("in time")
            .unwrap_or_else(|e| panic!("call {i} is within the budget: {e:?}"));
    }
    let calls = s.service.calls();
    let err = tokio::time::timeout(WAIT, grpc.echo(echo()))
        .await
        .expect("in time")
        .expect_err("the budget is spent");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().starts_with("BUDGET_EXCEEDED"), "{err:?}");
    let (msgs, end) = grpc_stream(&mut grpc, stream_request(5, 0)).await;
    assert_grpc_refused("gRPC stream, budget spent", &msgs, &end);
    assert_eq!(
        s.service.calls(),
        calls,
        "refused calls never reach the upstream"
    );
    assert_eq!(s.exhausted("req-grpc", "before").await, 2.0);

    // Connect: the real client, then raw unary (HTTP 429 with a Connect JSON error).
    let call = Call::new(Transport::ConnectJson, "echo", json!({ "message": "paid" }));
    for i in 0..2 {
        s.node_call("req-connect", "connect", &call)
            .await
            .expect_ok(&format!("connect call {i} within the budget"));
    }
    let calls = s.service.calls();
    let out = s.node_call("req-connect", "connect", &call).await;
    assert_node_refused("connect, budget spent", &out);
    let stream = Call::new(Transport::ConnectJson, "serverStream", stream_json(5, 0));
    let out = s.node_call("req-connect", "connect stream", &stream).await;
    assert_node_refused("connect stream, budget spent", &out);

    let (status, _, body) = tokio::time::timeout(
        WAIT,
        client::connect_json_plain(
            s.proxy.addr("plain"),
            &host("req-connect"),
            ECHO,
            r#"{"message":"raw"}"#,
        ),
    )
    .await
    .expect("in time")
    .expect("response");
    assert_eq!(status, 429, "Connect unary, budget spent: {body}");
    let v = json(&body);
    assert_eq!(v["code"], "resource_exhausted", "{body}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("BUDGET_EXCEEDED")),
        "{body}"
    );
    assert_eq!(
        s.service.calls(),
        calls,
        "refused calls never reach the upstream"
    );
}

/// A refusal answered before the request body is read must not reset the connection
/// under a client still sending that body (RFC 9112 section 9.6, lingering close): the
/// reset can discard the answer from the client's receive buffer, and Node's HTTP/1.1
/// clients (Connect, gRPC-Web) then report `write EPIPE` instead of `resource_exhausted`.
#[tokio::test]
async fn a_refusal_on_http1_reaches_a_client_still_sending_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = redis::shared();
    let limits = budget(1, "\"requests\"");
    let s = Setup::start(&redis_budgets(&redis, "h1-body"), &[("h1-body", &limits)]).await;
    let mut grpc = s.grpc("h1-body").await;
    let echo = EchoRequest {
        message: "paid".into(),
        payload_bytes: 0,
    };
    tokio::time::timeout(WAIT, grpc.echo(echo))
        .await
        .expect("in time")
        .expect("the one request of the budget");

    let body = r#"{"message":"late body"}"#;
    let head = format!(
        "POST {ECHO} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         connect-protocol-version: 1\r\ncontent-length: {}\r\n\r\n",
        host("h1-body"),
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(s.proxy.addr("plain"))
        .await
        .expect("connect");
    tcp.write_all(head.as_bytes()).await.expect("request head");
    // The body follows the head in two parts, a little later each, as from a slow or busy
    // client: the proxy has answered and must keep reading (lingering close) until the
    // body is in, or the second write meets a reset (EPIPE).
    let (first, second) = body.split_at(body.len() / 2);
    for part in [first, second] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tcp.write_all(part.as_bytes())
            .await
            .expect("the proxy must read the rest of the body (lingering close), not reset");
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(15).any(|w| w == b"BUDGET_EXCEEDED") {
                return Ok(());
            }
        }
    })
    .await
    .expect("the answer in time");
    let text = String::from_utf8_lossy(&answer);
    if let Err(e) = read {
        panic!("the refusal was lost: {e} (read before it: {text:?})");
    }
    assert!(text.starts_with("HTTP/1.1 429"), "{text:?}");
    assert!(text.contains("resource_exhausted"), "{text:?}");
}

#[tokio::test]
async fn a_spent_budget_refuses_http_requests_with_429() {
    let redis = redis::shared();
    let up = Upstream::start("web").await;
    let cfg = Config::new()
        .listener("plain")
        .raw(&redis_budgets(&redis, "refuse-http"))
        .detailed_app("web", &["web.test"], up.addr)
        .raw(&format!("[apps.limits]\n{}", budget(2, "\"requests\"")))
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    for i in 0..2 {
        let (status, _, body) = client::get_plain(proxy.addr("plain"), "web.test", "/")
            .await
            .expect("GET");
        assert_eq!(status, 200, "request {i} is within the budget: {body}");
    }
    let (status, _, body) = client::get_plain(proxy.addr("plain"), "web.test", "/")
        .await
        .expect("GET");
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_code(&body), "budget_exceeded", "{body}");
    assert_eq!(
        up.hits(),
        2,
        "the refused request never reached the upstream"
    );
    assert_eq!(exhausted(&proxy, "web", "before").await, 1.0);
}

// ---------------------------------------------------------------------------
// Metering a field of each message

#[tokio::test]
async fn field_metering_cuts_after_the_units_paid_for() {
    let redis = redis::shared();
    let limits = budget(10, "{ field = \"usage_tokens\" }");
    let s = Setup::start(
        &redis_budgets(&redis, "field"),
        &[("tok-json", &limits), ("tok-grpc", &limits)],
    )
    .await;

    // 3 units a message, 10 units: three messages (9 units), the fourth is not paid for.
    let call = Call::new(Transport::ConnectJson, "serverStream", stream_json(50, 3));
    let cancelled = s.service.svc.cancelled_streams();
    let out = s.node_call("tok-json", "connect-json", &call).await;
    assert_node_cut("usage_tokens over connect-json", &out, 3);
    for m in &out.messages {
        assert_eq!(
            m["usageTokens"], "3",
            "int64 in proto JSON is a string: {m}"
        );
    }
    s.service.cancelled_after("connect-json", cancelled).await;

    let mut grpc = s.grpc("tok-grpc").await;
    let cancelled = s.service.svc.cancelled_streams();
    let (msgs, end) = grpc_stream(&mut grpc, stream_request(50, 3)).await;
    assert_grpc_cut("usage_tokens over gRPC", &msgs, &end, 3);
    s.service.cancelled_after("gRPC", cancelled).await;
    assert_eq!(s.exhausted("tok-grpc", "mid_stream").await, 1.0);
}

// ---------------------------------------------------------------------------
// Concurrent-stream quota

#[tokio::test]
async fn the_concurrent_stream_quota_refuses_a_third_stream_until_one_ends() {
    let s = Setup::start("", &[("quota", "max_concurrent_streams = 2")]).await;
    // One message now, the next in a minute: both streams stay open.
    let slow = || StreamRequest {
        count: 1000,
        interval_ms: 60_000,
        payload_bytes: 0,
        usage_per_message: 0,
    };
    let mut grpc = s.grpc("quota").await;
    let mut held = Vec::new();
    for i in 0..2 {
        let resp = tokio::time::timeout(WAIT, grpc.server_stream(slow()))
            .await
            .expect("in time")
            .unwrap_or_else(|e| panic!("stream {i} is within the quota: {e:?}"));
        let mut stream = resp.into_inner();
        let first = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("in time")
            .expect("first message");
        assert!(first.is_some(), "stream {i} is open");
        held.push(stream);
    }

    // Third stream: gRPC resource_exhausted, Connect resource_exhausted.
    let (msgs, end) = grpc_stream(&mut grpc, slow()).await;
    assert!(msgs.is_empty());
    let status = end.expect_err("a third stream is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let out = s
        .node_call(
            "quota",
            "connect",
            &Call::new(Transport::ConnectJson, "serverStream", stream_json(3, 0)),
        )
        .await;
    assert_eq!(
        out.expect_err("connect, quota full").code,
        "resource_exhausted"
    );
    let refused = s
        .proxy
        .metric(QUOTA_REFUSED, &["app=\"quota\""])
        .await
        .expect("metrics");
    assert_eq!(refused, 2.0, "both refusals counted");

    // One stream ends (the client goes away): a new one is admitted.
    let cancelled = s.service.svc.cancelled_streams();
    drop(held.pop());
    s.service
        .cancelled_after("the dropped stream", cancelled)
        .await;
    until("a new stream admitted after one ended", SOON, || {
        let mut grpc = grpc.clone();
        async move {
            let req = StreamRequest {
                count: 3,
                interval_ms: 0,
                payload_bytes: 0,
                usage_per_message: 0,
            };
            let (msgs, end) = grpc_stream(&mut grpc, req).await;
            (end.is_ok() && msgs.len() == 3).then_some(())
        }
    })
    .await;
    drop(held);
}

#[tokio::test]
async fn the_concurrent_stream_quota_answers_http_with_429() {
    let up = Upstream::start("web").await;
    let cfg = Config::new()
        .listener("plain")
        .detailed_app("web", &["web.test"], up.addr)
        .raw("[apps.limits]\nmax_concurrent_streams = 2")
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("plain");
    // Two responses held open by the upstream (first chunk sent, second on release).
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut c = client::connect_plain(addr, false).await.expect("connect");
        let req = client::get(&c, "http", "web.test", "/stream");
        let resp = tokio::time::timeout(WAIT, c.send(req))
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        tollgate_tests::helpers::read_exactly(&mut body, b"first\n", WAIT)
            .await
            .expect("first chunk");
        open.push((c, body));
    }
    let (status, headers, body) = client::get_plain(addr, "web.test", "/").await.expect("GET");
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_code(&body), "too_many_streams", "{headers:?} {body}");
    assert_eq!(
        proxy
            .metric(QUOTA_REFUSED, &["app=\"web\""])
            .await
            .expect("metrics"),
        1.0
    );

    // One response ends (the upstream sends its second part to one of them, whichever
    // waits first): requests are admitted again.
    up.release();
    until("a request admitted after one ended", SOON, || async {
        let (status, _, _) = client::get_plain(addr, "web.test", "/").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    up.release();
    drop(open);
}

// ---------------------------------------------------------------------------
// The in-process store across a restart

#[tokio::test]
async fn the_in_process_budget_survives_a_proxy_restart() {
    let state = tempfile::tempdir().expect("temp dir");
    let file = state.path().join("budgets.json");
    let rate_limiting = format!(
        "[rate_limiting]\nbudget_store = \"memory\"\nbudget_state_file = \"{}\"\nbudget_lease = 1",
        file.display()
    );
    let limits = budget(10, "\"messages\"");
    let mut s = Setup::start(&rate_limiting, &[("persist", &limits)]).await;

    // Spend 4 of 10 (the connection closed before the restart, so nothing holds the drain).
    {
        let mut grpc = s.grpc("persist").await;
        let (msgs, end) = grpc_stream(&mut grpc, stream_request(4, 0)).await;
        end.expect("4 messages are within the budget");
        assert_eq!(msgs.len(), 4);
    }

    // A clean restart on the same state file.
    s.proxy.signal("TERM").expect("SIGTERM");
    let status = s
        .proxy
        .wait_exit(Duration::from_secs(60))
        .expect("the proxy exits on SIGTERM");
    assert!(
        status.success(),
        "clean exit: {status}\n{}",
        s.proxy.stderr()
    );
    assert!(
        file.exists(),
        "the budget state was written to {}",
        file.display()
    );
    let cfg = std::fs::read_to_string(s.proxy.dir.path().join("tollgate.toml")).expect("config");
    let files = Files::new().cert("grpc", &s.cert);
    s.proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy restarts");

    // 6 left: six messages, then the cut; then refused up front.
    let mut grpc = grpc_client(&s.proxy, "persist").await;
    let cancelled = s.service.svc.cancelled_streams();
    let (msgs, end) = grpc_stream(&mut grpc, stream_request(50, 0)).await;
    assert_grpc_cut("after the restart", &msgs, &end, 6);
    s.service
        .cancelled_after("after the restart", cancelled)
        .await;
    let (msgs, end) = grpc_stream(&mut grpc, stream_request(50, 0)).await;
    assert_grpc_refused("after the restart, spent", &msgs, &end);
}

/// A `bytes` budget on a plain HTTP stream (server-sent events): the frame the budget
/// cannot pay for is not sent, and the response ends there (HTTP has no status to send
/// mid-body, so the stream is cut), counted as a mid-stream exhaustion.
#[tokio::test]
async fn a_bytes_budget_cuts_a_plain_http_stream() {
    let redis = redis::shared();
    let up = Arc::new(Upstream::start("web").await);
    // "data: first\n\n" is 13 bytes and "data: second\n\n" 14: the budget pays for the first.
    let cfg = Config::new()
        .listener("plain")
        .raw(&redis_budgets(&redis, "bytes-http"))
        .detailed_app("web", &["web.test"], up.addr)
        .raw(&format!("[apps.limits]\n{}", budget(20, "\"bytes\"")))
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("plain");
    let call = tokio::spawn(async move { client::get_plain(addr, "web.test", "/sse").await });
    let deadline = std::time::Instant::now() + WAIT;
    while up.hits() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    up.release();
    let got = tokio::time::timeout(WAIT, call)
        .await
        .expect("the cut stream ends")
        .expect("task");
    // Usually the response breaks off after the paid frame (an error here); if it
    // ends cleanly instead, the unpaid frame must still be missing.
    if let Ok((status, _, body)) = got {
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("second"), "unpaid frame forwarded: {body}");
    }
    assert_eq!(exhausted(&proxy, "web", "mid_stream").await, 1.0);
}
