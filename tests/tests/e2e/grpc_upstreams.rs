//! gRPC upstreams through the real proxy: active `grpc.health.v1.Health/Check` health
//! checks take an instance out and bring it back, and an endpoint that advertises a
//! small `SETTINGS_MAX_CONCURRENT_STREAMS` gets more HTTP/2 connections instead of a
//! queue. Upstreams are the tonic test service over h2c; the client is tonic over h2c.

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tollgate_proto::TestServiceImpl;
use tollgate_proto::grpc::health::v1::health_check_response::ServingStatus;
use tollgate_proto::test::v1::test_service_client::TestServiceClient;
use tollgate_proto::test::v1::{EchoRequest, StreamRequest};
use tollgate_proto::testsvc::{HealthServiceImpl, ServeOptions, serve_with};
use tollgate_tests::config::Config;
use tollgate_tests::grpc::h2c_channel;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::wait::{SOON, availability, config_view, until};
use tonic::transport::Channel;

const HOST: &str = "grpc-upstreams.test";
const APP: &str = "grpcup";
/// The service the health checks ask about.
const SERVICE: &str = "tollgate.test.v1.TestService";

/// A test service on an ephemeral port (h2c), with `options`; it runs until the test ends.
async fn start_service(options: ServeOptions) -> (SocketAddr, TestServiceImpl) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = TestServiceImpl::new();
    tokio::spawn(serve_with(listener, svc.clone(), options));
    (addr, svc)
}

/// A proxy with a plain listener routing `HOST` to an h2c cluster of `endpoints`.
fn start_proxy(endpoints: &[SocketAddr], cluster: &str) -> ProxyProcess {
    let endpoints = endpoints
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = Config::new()
        .listener("plain")
        .raw(&format!(
            "[[apps]]\nid = \"{APP}\"\nhostnames = [\"{HOST}\"]\n\
             [apps.upstreams.default]\nendpoints = [{endpoints}]\nprotocol = \"h2c\"\n{cluster}"
        ))
        .build();
    ProxyProcess::start(&cfg, &[]).expect("proxy starts")
}

async fn client(proxy: &ProxyProcess) -> TestServiceClient<Channel> {
    let ch = h2c_channel(proxy.addr("plain"), HOST)
        .await
        .expect("h2c channel");
    TestServiceClient::new(ch)
}

async fn echo(client: &mut TestServiceClient<Channel>) {
    let req = EchoRequest {
        message: "hi".into(),
        ..Default::default()
    };
    client.echo(req).await.expect("echo through the proxy");
}

/// Sends echoes until `served` says one reached the instance it watches.
async fn until_served(
    what: &str,
    client: &mut TestServiceClient<Channel>,
    served: impl Fn() -> u64,
) {
    let before = served();
    until(what, SOON, || {
        let mut client = client.clone();
        let now = served();
        async move {
            if now > before {
                return Some(());
            }
            for _ in 0..4 {
                echo(&mut client).await;
            }
            None
        }
    })
    .await;
}

#[tokio::test]
async fn grpc_health_checks_take_a_not_serving_instance_out_and_bring_it_back() {
    let health_a = HealthServiceImpl::new();
    let health_b = HealthServiceImpl::new();
    for h in [&health_a, &health_b] {
        h.set(SERVICE, ServingStatus::Serving);
    }
    let (a, svc_a) = start_service(ServeOptions {
        health: Some(health_a.clone()),
        ..Default::default()
    })
    .await;
    let (b, svc_b) = start_service(ServeOptions {
        health: Some(health_b.clone()),
        ..Default::default()
    })
    .await;
    let hc = format!(
        "health_check = {{ kind = \"grpc\", service = \"{SERVICE}\", interval_ms = 100, \
         timeout_ms = 2000, healthy_threshold = 1, unhealthy_threshold = 1 }}"
    );
    let proxy = start_proxy(&[a, b], &hc);
    let mut client = client(&proxy).await;
    let (a_addr, b_addr) = (a.to_string(), b.to_string());

    // Both are checked and both take calls.
    until("both endpoints checked", SOON, || async {
        (health_a.checks() > 0 && health_b.checks() > 0).then_some(())
    })
    .await;
    until_served("a call reaching a", &mut client, || svc_a.echoes()).await;
    until_served("a call reaching b", &mut client, || svc_b.echoes()).await;

    // a says NOT_SERVING for the checked service: it leaves rotation.
    health_a.set(SERVICE, ServingStatus::NotServing);
    until("a marked unavailable", SOON, || async {
        let avail = availability(&proxy, APP).await;
        (!avail[&a_addr] && avail[&b_addr]).then_some(())
    })
    .await;
    let (to_a, to_b) = (svc_a.echoes(), svc_b.echoes());
    for _ in 0..20 {
        echo(&mut client).await;
    }
    assert_eq!(
        svc_a.echoes(),
        to_a,
        "no call reaches the NOT_SERVING instance"
    );
    assert_eq!(
        svc_b.echoes(),
        to_b + 20,
        "every call goes to the serving one"
    );

    // SERVING again: a is back and takes calls.
    health_a.set(SERVICE, ServingStatus::Serving);
    until("a available again", SOON, || async {
        availability(&proxy, APP).await[&a_addr].then_some(())
    })
    .await;
    until_served("a call reaching a again", &mut client, || svc_a.echoes()).await;

    // A service the server does not know (NOT_FOUND) fails the check like NOT_SERVING.
    health_b.set("", ServingStatus::Serving);
    let checks = health_b.checks();
    let unknown = start_proxy(
        &[b],
        "health_check = { kind = \"grpc\", service = \"no.Such\", interval_ms = 100, \
         timeout_ms = 2000, healthy_threshold = 1, unhealthy_threshold = 1 }",
    );
    until(
        "b marked unavailable for an unknown service",
        SOON,
        || async { (!availability(&unknown, APP).await[&b_addr]).then_some(()) },
    )
    .await;
    assert!(health_b.checks() > checks, "the second proxy asked b");
}

#[tokio::test]
async fn streams_beyond_an_endpoints_stream_limit_open_more_connections() {
    const LIMIT: u32 = 10;
    const STREAMS: usize = 50;
    let (addr, svc) = start_service(ServeOptions {
        max_concurrent_streams: Some(LIMIT),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(&[addr], "");
    let client = client(&proxy).await;

    // Long server streams: one message, then nothing until the client goes away.
    let mut calls = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            let req = StreamRequest {
                count: 2,
                interval_ms: 600_000,
                ..Default::default()
            };
            let mut stream = client
                .server_stream(req)
                .await
                .expect("stream starts")
                .into_inner();
            let first = stream.message().await.expect("first message");
            assert_eq!(first.map(|m| m.seq), Some(0));
            stream
        }));
    }
    // All run at once upstream: five times what one connection may carry.
    until("every stream open upstream", SOON, || async {
        (svc.open_streams() == STREAMS as u64).then_some(())
    })
    .await;
    let mut streams = Vec::with_capacity(STREAMS);
    for call in calls {
        streams.push(call.await.expect("stream task"));
    }

    let view = config_view(&proxy).await;
    let endpoint = &view["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .find(|c| c["app"] == APP)
        .expect("the app's cluster")["endpoints"][0];
    let connections = endpoint["h2_connections"].as_u64().expect("h2_connections");
    assert!(
        connections >= (STREAMS as u64).div_ceil(u64::from(LIMIT)),
        "{STREAMS} streams at {LIMIT} per connection need more connections: {endpoint}"
    );
    assert_eq!(endpoint["in_flight"], STREAMS, "{endpoint}");

    // The client goes away: every stream ends upstream.
    drop(streams);
    until("streams cancelled upstream", SOON, || async {
        (svc.open_streams() == 0).then_some(())
    })
    .await;
}
