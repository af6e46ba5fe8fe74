//! gRPC through the real proxy: a tonic client over TLS (ALPN h2) and over h2c, the
//! `TestService` upstream over h2c. Unary calls, long server streams, rich errors in
//! trailers, deadlines, cancellation reaching the upstream, and proxy-made statuses.

use prost::{Message, Name};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tollgate_proto::google::rpc;
use tollgate_proto::test::v1::test_service_client::TestServiceClient;
use tollgate_proto::test::v1::{EchoRequest, ErrorDetail, FailRequest, SlowRequest, StreamRequest};
use tollgate_proto::testsvc::{ERROR_DETAIL_DOMAIN, ERROR_DETAIL_REASON};
use tollgate_proto::{TestServiceImpl, serve};
use tollgate_tests::config::{Config, Files};
use tollgate_tests::grpc::{UntimedChannel, h2c_channel, serve_without_server_timer, tls_channel};
use tollgate_tests::helpers::WAIT;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::tls::{TestCert, client_config};
use tollgate_tests::upstream::dead_addr;
use tonic::transport::Channel;
use tonic::{Code, Request};

const HOST: &str = "grpc.test";

/// The test service on an ephemeral port (h2c); it runs until the test ends.
async fn start_service() -> (SocketAddr, TestServiceImpl) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = TestServiceImpl::new();
    tokio::spawn(serve(listener, svc.clone()));
    (addr, svc)
}

struct Setup {
    proxy: ProxyProcess,
    cert: TestCert,
}

impl Setup {
    /// A proxy with a TLS listener `tls` and a plain one `plain`, routing `grpc.test` to an
    /// h2c cluster at `upstream`.
    fn start(upstream: SocketAddr) -> Self {
        let cert = TestCert::new(&[HOST]);
        let cfg = Config::new()
            .listener("plain")
            .tls_listener("tls", "")
            .cert("grpc")
            .raw(&format!(
                "[[apps]]\nid = \"grpc\"\nhostnames = [\"{HOST}\"]\n\
                 [apps.upstreams.default]\nendpoints = [{{ address = \"{upstream}\" }}]\nprotocol = \"h2c\""
            ))
            .build();
        let files = Files::new().cert("grpc", &cert);
        let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");
        Setup { proxy, cert }
    }

    async fn tls_client(&self) -> TestServiceClient<Channel> {
        let cfg = client_config(&[&self.cert], &[b"h2"]);
        let ch = tls_channel(self.proxy.addr("tls"), HOST, cfg)
            .await
            .expect("TLS channel");
        TestServiceClient::new(ch)
    }

    async fn h2c_client(&self) -> TestServiceClient<Channel> {
        let ch = h2c_channel(self.proxy.addr("plain"), HOST)
            .await
            .expect("h2c channel");
        TestServiceClient::new(ch)
    }

    /// A client whose calls carry their grpc-timeout without tonic arming a timer of
    /// its own on it: TLS (ALPN h2) or h2c.
    async fn untimed_client(&self, tls: bool) -> TestServiceClient<UntimedChannel> {
        let (addr, tls) = if tls {
            let cfg = client_config(&[&self.cert], &[b"h2"]);
            (self.proxy.addr("tls"), Some(cfg))
        } else {
            (self.proxy.addr("plain"), None)
        };
        let ch = UntimedChannel::connect(addr, HOST, tls)
            .await
            .expect("untimed channel");
        TestServiceClient::new(ch)
    }

    /// Both kinds of client, labelled.
    async fn clients(&self) -> Vec<(&'static str, TestServiceClient<Channel>)> {
        vec![
            ("tls", self.tls_client().await),
            ("h2c", self.h2c_client().await),
        ]
    }
}

fn in_time<T>(f: impl Future<Output = T>) -> tokio::time::Timeout<impl Future<Output = T>> {
    tokio::time::timeout(WAIT, f)
}

// ---------------------------------------------------------------------------
// 12. Unary

#[tokio::test]
async fn unary_echo_carries_forwarding_metadata() {
    let (up, _svc) = start_service().await;
    let setup = Setup::start(up);
    for (kind, mut client) in setup.clients().await {
        let req = EchoRequest {
            message: format!("hello over {kind}"),
            payload_bytes: 100_000,
        };
        let resp = in_time(client.echo(req))
            .await
            .expect("in time")
            .expect("echo");
        assert_eq!(
            resp.metadata().get("x-tollgate-app-id").expect("app id"),
            "grpc"
        );
        let rid = resp
            .metadata()
            .get("x-request-id")
            .expect("request id")
            .to_str()
            .expect("ascii")
            .to_string();
        let msg = resp.into_inner();
        assert_eq!(msg.message, format!("hello over {kind}"));
        assert_eq!(
            msg.payload.len(),
            100_000,
            "a payload larger than one frame arrives whole"
        );
        let seen = &msg.metadata;
        assert_eq!(
            seen.get("x-forwarded-for").map(String::as_str),
            Some("127.0.0.1"),
            "{kind}: {seen:?}"
        );
        let proto = if kind == "tls" { "https" } else { "http" };
        assert_eq!(
            seen.get("x-forwarded-proto").map(String::as_str),
            Some(proto),
            "{seen:?}"
        );
        assert_eq!(
            seen.get("x-forwarded-host").map(String::as_str),
            Some(HOST),
            "{seen:?}"
        );
        assert_eq!(
            seen.get("te").map(String::as_str),
            Some("trailers"),
            "te: trailers survives: {seen:?}"
        );
        assert_eq!(
            seen.get("x-request-id"),
            Some(&rid),
            "the id returned is the one sent upstream"
        );
        assert_eq!(rid.len(), 32, "{rid}");
        assert!(
            seen.get("content-type")
                .is_some_and(|c| c.starts_with("application/grpc")),
            "{seen:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 13. Server streaming

#[tokio::test]
async fn server_stream_of_ten_thousand_messages_arrives_whole_and_in_order() {
    let (up, _svc) = start_service().await;
    let setup = Setup::start(up);
    for (kind, mut client) in setup.clients().await {
        let req = StreamRequest {
            count: 10_000,
            interval_ms: 0,
            payload_bytes: 64,
            usage_per_message: 3,
        };
        let mut stream = in_time(client.server_stream(req))
            .await
            .expect("in time")
            .expect("call")
            .into_inner();
        let mut next = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        // `None` comes only after trailers with grpc-status 0; a missing or non-zero status
        // would be an `Err` instead.
        while let Some(msg) = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("stream finishes in time")
            .unwrap_or_else(|s| panic!("{kind}: stream failed after {next} messages: {s:?}"))
        {
            assert_eq!(msg.seq, next, "{kind}: order");
            assert_eq!(msg.payload.len(), 64);
            assert_eq!(msg.usage_tokens, 3);
            next += 1;
        }
        assert_eq!(next, 10_000, "{kind}: every message arrived");
        let trailers = stream.trailers().await.expect("trailers");
        assert!(trailers.is_some(), "{kind}: the stream ended with trailers");
    }
}

// ---------------------------------------------------------------------------
// 14. Errors with details

#[tokio::test]
async fn failures_keep_code_message_and_details_through_the_proxy() {
    let (up, _svc) = start_service().await;
    let setup = Setup::start(up);
    let message = "quota épuisée: 100% used ✓ (50%25 literal)";
    for (kind, mut client) in setup.clients().await {
        let req = FailRequest {
            code: Code::FailedPrecondition as i32,
            message: message.to_string(),
            with_details: true,
        };
        let status = in_time(client.fail(req))
            .await
            .expect("in time")
            .expect_err("Fail fails");
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{kind}: {status:?}"
        );
        assert_eq!(
            status.message(),
            message,
            "{kind}: message survives percent-encoding"
        );
        let details = rpc::Status::decode(status.details()).expect("google.rpc.Status details");
        assert_eq!(details.code, Code::FailedPrecondition as i32);
        assert_eq!(details.message, message);
        assert_eq!(details.details.len(), 1, "{details:?}");
        let any = &details.details[0];
        assert_eq!(any.type_url, ErrorDetail::type_url());
        let detail = ErrorDetail::decode(any.value.as_slice()).expect("ErrorDetail");
        assert_eq!(detail.reason, ERROR_DETAIL_REASON);
        assert_eq!(detail.domain, ERROR_DETAIL_DOMAIN);
        // The upstream's answer, not one the proxy made up.
        assert_eq!(
            status.metadata().get("x-tollgate-app-id").expect("app id"),
            "grpc"
        );

        let req = FailRequest {
            code: Code::PermissionDenied as i32,
            message: "nope".into(),
            with_details: false,
        };
        let status = in_time(client.fail(req))
            .await
            .expect("in time")
            .expect_err("Fail fails");
        assert_eq!(
            (status.code(), status.message()),
            (Code::PermissionDenied, "nope")
        );
        assert!(status.details().is_empty());
    }
}

// ---------------------------------------------------------------------------
// 15. Deadlines

#[tokio::test]
async fn deadline_shorter_than_the_call_gives_deadline_exceeded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = listener.local_addr().expect("addr");
    tokio::spawn(serve_without_server_timer(listener, TestServiceImpl::new()));
    let setup = Setup::start(up);
    for (kind, tls) in [("tls", true), ("h2c", false)] {
        // The deadline as a header only: the client arms no timer on it (tonic's
        // `Channel` would, and its `CANCELLED` could come first). Two parties act on it:
        // the service gives up when its budget is nearly spent, and the proxy stops
        // waiting for the answer when the deadline passes; whichever is first, the code
        // is DEADLINE_EXCEEDED, so only the code is asserted. (The proxy's own answer,
        // and that it is not charged to the endpoint: `upstreams::a_calls_own_deadline_…`.)
        let mut client = setup.untimed_client(tls).await;
        let mut req = Request::new(SlowRequest { delay_ms: 10_000 });
        req.metadata_mut()
            .insert("grpc-timeout", "300m".parse().expect("value"));
        let status = in_time(client.slow(req))
            .await
            .expect("in time")
            .expect_err("deadline");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{kind}: {status:?}");
        assert_eq!(
            status.metadata().get("x-tollgate-app-id").expect("app id"),
            "grpc",
            "{kind}: the answer came through the proxy"
        );
    }

    // Within the deadline the call succeeds.
    for (kind, mut client) in setup.clients().await {
        let mut req = Request::new(SlowRequest { delay_ms: 1 });
        req.set_timeout(Duration::from_secs(30));
        let ok = in_time(client.slow(req))
            .await
            .expect("in time")
            .unwrap_or_else(|s| panic!("{kind}: {s:?}"));
        assert_eq!(ok.into_inner().message, "slept 1ms");
    }
}

// ---------------------------------------------------------------------------
// 16. Cancellation

#[tokio::test]
async fn dropping_a_stream_cancels_it_at_the_upstream() {
    let (up, svc) = start_service().await;
    let setup = Setup::start(up);
    for (round, (kind, mut client)) in setup.clients().await.into_iter().enumerate() {
        let req = StreamRequest {
            count: 1000,
            interval_ms: 60_000,
            payload_bytes: 0,
            usage_per_message: 0,
        };
        let mut stream = in_time(client.server_stream(req))
            .await
            .expect("in time")
            .expect("call")
            .into_inner();
        let first = in_time(stream.message())
            .await
            .expect("in time")
            .expect("message");
        assert_eq!(first.map(|m| m.seq), Some(0), "{kind}");
        assert_eq!(
            svc.cancelled_streams(),
            round as u64,
            "{kind}: not cancelled while read"
        );
        drop(stream);
        // The client's RST_STREAM reaches the proxy, which resets the upstream stream.
        let deadline = Instant::now() + WAIT;
        while svc.cancelled_streams() == round as u64 {
            assert!(
                Instant::now() < deadline,
                "{kind}: the upstream never saw the cancellation"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(svc.cancelled_streams(), round as u64 + 1);
        // The channel still works afterwards.
        let req = EchoRequest {
            message: "after".into(),
            payload_bytes: 0,
        };
        assert_eq!(
            in_time(client.echo(req))
                .await
                .expect("in time")
                .expect("echo")
                .into_inner()
                .message,
            "after"
        );
    }
}

// ---------------------------------------------------------------------------
// 17. Upstream down

#[tokio::test]
async fn upstream_down_gives_grpc_unavailable_from_the_proxy() {
    let setup = Setup::start(dead_addr());
    for (kind, mut client) in setup.clients().await {
        let req = EchoRequest {
            message: "anyone?".into(),
            payload_bytes: 0,
        };
        let status = in_time(client.echo(req))
            .await
            .expect("in time")
            .expect_err("no upstream");
        assert_eq!(status.code(), Code::Unavailable, "{kind}: {status:?}");
        // A status the proxy wrote (trailers-only, grpc-message decoded), not a transport error.
        assert_eq!(
            status.message(),
            "could not connect to the upstream",
            "{kind}: {status:?}"
        );
        assert_eq!(
            status.metadata().get("x-tollgate-app-id").expect("app id"),
            "grpc"
        );
        assert!(status.metadata().get("x-request-id").is_some());
    }
}
