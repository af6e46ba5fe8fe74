//! Stream metrics through the real proxy with real clients: tonic (native gRPC),
//! `@connectrpc/connect-node` (Connect and gRPC-Web) and server-sent events. Each
//! stream is counted once, by protocol and outcome, with exactly the messages the
//! client received, a first-message time when it had a message, and no stream left
//! open. Budget cuts are checked in `budgets.rs`, resumable streams in `resume.rs`.

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tollgate_proto::TestServiceImpl;
use tollgate_proto::test::v1::test_service_client::TestServiceClient;
use tollgate_proto::test::v1::test_service_server::TestServiceServer;
use tollgate_proto::test::v1::{FailRequest, StreamRequest};
use tollgate_tests::client;
use tollgate_tests::config::{Config, Files};
use tollgate_tests::connect::{Call, CallResult, NodeClient, Transport};
use tollgate_tests::grpc::h2c_channel;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::tls::TestCert;
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::SOON;
use tonic::Code;
use tonic::transport::Server;

const MESSAGES: &str = "tollgate_stream_messages";
const FIRST: &str = "tollgate_stream_first_message_seconds_count";
const DURATION: &str = "tollgate_stream_duration_seconds_count";
const OPEN: &str = "tollgate_streams_open";

/// `TestService` on an ephemeral port (h2c).
async fn service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    tokio::spawn(
        Server::builder()
            .add_service(TestServiceServer::new(TestServiceImpl::new()))
            .serve_with_incoming(Box::pin(incoming)),
    );
    addr
}

fn labels(protocol: &str, outcome: &str) -> [String; 2] {
    [
        format!("protocol=\"{protocol}\""),
        format!("outcome=\"{outcome}\""),
    ]
}

/// Waits until `protocol`/`outcome` has counted `streams` streams, then checks they
/// carried `messages` messages in all and that none is still open.
async fn assert_streams(
    proxy: &ProxyProcess,
    protocol: &str,
    outcome: &str,
    streams: f64,
    messages: f64,
) {
    let l = labels(protocol, outcome);
    let l: Vec<&str> = l.iter().map(String::as_str).collect();
    let count = proxy
        .wait_metric(&format!("{MESSAGES}_count"), &l, SOON, |v| v >= streams)
        .await
        .expect("metrics");
    let text = proxy.metrics().await.expect("metrics");
    let value =
        |name: &str, labels: &[&str]| tollgate_tests::proxy::metric_value(&text, name, labels);
    assert_eq!(count, streams, "{protocol} {outcome} streams\n{text}");
    assert_eq!(
        value(&format!("{MESSAGES}_sum"), &l),
        messages,
        "{protocol} {outcome} messages"
    );
    assert_eq!(
        value(DURATION, &l),
        streams,
        "{protocol} {outcome} durations"
    );
    let open = format!("protocol=\"{protocol}\"");
    assert_eq!(value(OPEN, &[&open]), 0.0, "{protocol} streams left open");
}

#[tokio::test]
async fn streams_are_counted_by_protocol_and_outcome_with_their_messages() {
    let grpc = service().await;
    let http = Upstream::start("sse").await;
    let cert = TestCert::new(&["rpc.test", "sse.test"]);
    let cfg = Config::new()
        .listener("plain")
        .tls_listener("tls", "")
        .cert("c")
        .raw(&format!(
            "[[apps]]\nid = \"rpc\"\nhostnames = [\"rpc.test\"]\n\
             [apps.upstreams.default]\nendpoints = [{{ address = \"{grpc}\" }}]\nprotocol = \"h2c\"\n\
             [apps.rpc]\ndescriptor_set = \"builtin\""
        ))
        .app("sse", &["sse.test"], http.addr);
    let proxy = ProxyProcess::start(&cfg.build(), &Files::new().cert("c", &cert).refs())
        .expect("proxy starts");

    // Native gRPC, passed through: 7 messages, then an error before any message.
    let ch = h2c_channel(proxy.addr("plain"), "rpc.test")
        .await
        .expect("h2c channel");
    let mut tonic = TestServiceClient::new(ch);
    let mut stream = tonic
        .server_stream(StreamRequest {
            count: 7,
            interval_ms: 0,
            payload_bytes: 3000,
            usage_per_message: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    let mut got = 0;
    while stream.message().await.expect("message").is_some() {
        got += 1;
    }
    assert_eq!(got, 7);
    let err = tonic
        .fail(FailRequest {
            code: Code::NotFound as i32,
            message: "gone".into(),
            ..FailRequest::default()
        })
        .await
        .expect_err("Fail fails");
    assert_eq!(err.code(), Code::NotFound);
    assert_streams(&proxy, "grpc", "ok", 1.0, 7.0).await;
    assert_streams(&proxy, "grpc", "error", 1.0, 0.0).await;

    // Connect and gRPC-Web, translated.
    let port = proxy.addr("tls").port();
    let node = NodeClient::new(&format!("https://rpc.test:{port}"), &cert).expect("client");
    let stream = |count: u32| serde_json::json!({ "count": count, "payloadBytes": 8 });
    for (transport, what) in [
        (Transport::ConnectProto, "connect-proto"),
        (Transport::ConnectJson, "connect-json"),
    ] {
        let out = node
            .call(&Call::new(transport, "serverStream", stream(5)))
            .await
            .expect("client runs");
        out.expect_ok(what);
    }
    assert_streams(&proxy, "connect", "ok", 2.0, 10.0).await;
    let out = node
        .call(&Call::new(Transport::GrpcWeb, "serverStream", stream(4)).http1())
        .await
        .expect("client runs");
    out.expect_ok("grpc-web");
    let fail = serde_json::json!({ "code": Code::PermissionDenied as i32, "message": "no" });
    let out = node
        .call(&Call::new(Transport::GrpcWeb, "fail", fail))
        .await
        .expect("client runs");
    out.expect_err("grpc-web fail");
    assert_streams(&proxy, "grpc_web", "ok", 1.0, 4.0).await;
    assert_streams(&proxy, "grpc_web", "error", 1.0, 0.0).await;

    // A client that leaves after 2 of 1,000 slow messages.
    let slow = serde_json::json!({ "count": 1000, "intervalMs": 20, "payloadBytes": 8 });
    let out = node
        .call(&Call::new(Transport::ConnectProto, "serverStream", slow).abort_after(2))
        .await
        .expect("client runs");
    assert!(matches!(out.result, CallResult::Aborted(2)), "{out:?}");
    let l = labels("connect", "aborted");
    let l: Vec<&str> = l.iter().map(String::as_str).collect();
    let aborted = proxy
        .wait_metric(&format!("{MESSAGES}_count"), &l, SOON, |v| v >= 1.0)
        .await
        .expect("metrics");
    assert_eq!(aborted, 1.0);
    let sent = proxy
        .metric(&format!("{MESSAGES}_sum"), &l)
        .await
        .expect("metrics");
    assert!(
        (2.0..1000.0).contains(&sent),
        "the aborted stream sent {sent} messages, the client read 2"
    );

    // Server-sent events: two events (the second released in advance).
    http.release();
    let (status, _, body) = client::get_plain(proxy.addr("plain"), "sse.test", "/sse")
        .await
        .expect("response");
    assert_eq!(status, 200);
    assert_eq!(body, "data: first\n\ndata: second\n\n");
    assert_streams(&proxy, "sse", "ok", 1.0, 2.0).await;

    // Every stream with a message has a first-message time; those without do not.
    for (protocol, with_messages) in [
        ("grpc", 1.0),
        ("connect", 3.0),
        ("grpc_web", 1.0),
        ("sse", 1.0),
    ] {
        let p = format!("protocol=\"{protocol}\"");
        let first = proxy.metric(FIRST, &[&p]).await.expect("metrics");
        assert_eq!(first, with_messages, "{protocol} first-message times");
    }
}
