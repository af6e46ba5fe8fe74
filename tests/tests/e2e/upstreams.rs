//! Upstream handling through the real proxy: connect failures and passive ejection,
//! retries of safe requests only, response-header timeouts, active health checks,
//! and the balancing policies (round robin, consistent hash, canary splits,
//! least request).

use http::Request;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tollgate_tests::client::{self, Sender, TestBody};
use tollgate_tests::config::{api_config, cluster_app, detailed};
use tollgate_tests::helpers::{WAIT, error_code, json, read_exactly, read_to_end};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::upstream::{Upstream, dead_addr};
use tollgate_tests::wait::availability;

/// An app marked for detailed metrics: these tests read its own series.
fn app(id: &str, endpoints: &[std::net::SocketAddr], cluster: &str) -> String {
    detailed(&cluster_app(id, endpoints, cluster))
}

fn start(apps: &[String]) -> ProxyProcess {
    ProxyProcess::start(&api_config(apps).build(), &[]).expect("proxy starts")
}

async fn conn(proxy: &ProxyProcess) -> Sender {
    client::connect_plain(proxy.addr("http"), false)
        .await
        .expect("connect")
}

/// One request on `s` to the API host; returns status and body text.
async fn call(
    s: &mut Sender,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: TestBody,
) -> (u16, String) {
    let (status, _, body) = send(s, method, path, headers, body).await;
    (status, body)
}

/// One request on `s` to the API host; returns status, headers and body text.
async fn send(
    s: &mut Sender,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: TestBody,
) -> (u16, http::HeaderMap, String) {
    let mut req: Request<TestBody> = client::request(s, method, "http", "api.test", path, body);
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).expect("header name");
        req.headers_mut()
            .insert(name, v.parse().expect("header value"));
    }
    let resp = tokio::time::timeout(WAIT, s.send(req))
        .await
        .expect("answer in time")
        .expect("response");
    client::text(resp).await.expect("body")
}

async fn get(s: &mut Sender, path: &str) -> (u16, String) {
    call(s, "GET", path, &[], client::empty()).await
}

/// The echo's `upstream` name of a successful GET.
async fn served_by(s: &mut Sender, path: &str, headers: &[(&str, &str)]) -> String {
    let (status, body) = call(s, "GET", path, headers, client::empty()).await;
    assert_eq!(status, 200, "{path}: {body}");
    json(&body)["upstream"]
        .as_str()
        .expect("upstream name")
        .to_string()
}

fn label(k: &str, v: &str) -> String {
    format!("{k}=\"{v}\"")
}

async fn metric(proxy: &ProxyProcess, name: &str, labels: &[String]) -> f64 {
    let l: Vec<&str> = labels.iter().map(String::as_str).collect();
    proxy.metric(name, &l).await.expect("metrics")
}

// ---------------------------------------------------------------------------
// 7. Connect failures and passive ejection

#[tokio::test]
async fn dead_endpoint_gives_502_then_is_ejected_with_503() {
    let dead = dead_addr();
    let proxy = start(&[app(
        "dead",
        &[dead],
        // 100%: the only endpoint may go (the default ceiling, 50%, keeps it).
        "outlier = { consecutive_failures = 3, ejection_ms = 600000, max_ejection_percent = 100 }\nretry = { max_retries = 0 }",
    )]);
    let mut s = conn(&proxy).await;
    let ejections = [label("app", "dead")];
    for i in 1..=3 {
        let (status, body) = get(&mut s, "/v1/dead/x").await;
        assert_eq!(status, 502, "attempt {i}: {body}");
        assert_eq!(error_code(&body), "upstream_connect_failed");
        let ejected = metric(&proxy, "tollgate_upstream_ejections_total", &ejections).await;
        assert_eq!(
            ejected,
            if i < 3 { 0.0 } else { 1.0 },
            "ejections after {i} failures"
        );
    }
    // Ejected: the proxy no longer tries it.
    for _ in 0..2 {
        let (status, body) = get(&mut s, "/v1/dead/x").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(error_code(&body), "no_healthy_upstream");
    }
    let errors = [
        label("app", "dead"),
        label("kind", "upstream_connect_failed"),
    ];
    assert_eq!(
        metric(&proxy, "tollgate_upstream_errors_total", &errors).await,
        3.0
    );
    assert_eq!(
        metric(&proxy, "tollgate_upstream_ejections_total", &ejections).await,
        1.0
    );
    let healthy = [label("app", "dead"), label("endpoint", &dead.to_string())];
    assert_eq!(
        metric(&proxy, "tollgate_upstream_endpoint_healthy", &healthy).await,
        0.0
    );
    assert!(!availability(&proxy, "dead").await[&dead.to_string()]);
}

// ---------------------------------------------------------------------------
// 8. Retries

#[tokio::test]
async fn connect_failures_are_retried_on_another_endpoint_but_bodies_are_not() {
    let live = Upstream::start("live").await;
    let dead = dead_addr();
    let proxy = start(&[
        app("retry", &[dead, live.addr], ""),
        // Never ejected, so every request really tries the dead endpoint.
        app("lone", &[dead], "outlier = { consecutive_failures = 1000 }"),
    ]);
    let mut s = conn(&proxy).await;

    for i in 0..10 {
        assert_eq!(
            served_by(&mut s, &format!("/v1/retry/get/{i}"), &[]).await,
            "live",
            "request {i}"
        );
    }
    assert_eq!(live.hits(), 10);
    let sent = [label("app", "retry"), label("outcome", "sent")];
    let retries = metric(&proxy, "tollgate_upstream_retries_total", &sent).await;
    let failed = [
        label("app", "retry"),
        label("kind", "upstream_connect_failed"),
    ];
    let failures = metric(&proxy, "tollgate_upstream_errors_total", &failed).await;
    assert!(
        retries > 0.0,
        "the dead endpoint was tried and the request retried"
    );
    assert_eq!(retries, failures, "every connect failure was retried");

    // A request with a body streams it and cannot send it twice: one attempt, 502.
    let body = client::full("do not send me twice");
    let (status, text) = call(&mut s, "POST", "/v1/lone/upload", &[], body).await;
    assert_eq!(status, 502, "{text}");
    assert_eq!(error_code(&text), "upstream_connect_failed");
    let lone_sent = [label("app", "lone"), label("outcome", "sent")];
    let lone_failed = [
        label("app", "lone"),
        label("kind", "upstream_connect_failed"),
    ];
    assert_eq!(
        metric(&proxy, "tollgate_upstream_retries_total", &lone_sent).await,
        0.0
    );
    assert_eq!(
        metric(&proxy, "tollgate_upstream_errors_total", &lone_failed).await,
        1.0
    );

    // The same endpoint with a bodiless GET: retried up to max_retries (2), still 502.
    let (status, text) = get(&mut s, "/v1/lone/get").await;
    assert_eq!(status, 502, "{text}");
    assert_eq!(
        metric(&proxy, "tollgate_upstream_retries_total", &lone_sent).await,
        2.0
    );
    assert_eq!(
        metric(&proxy, "tollgate_upstream_errors_total", &lone_failed).await,
        4.0
    );
}

// ---------------------------------------------------------------------------
// 9. Response header timeout

#[tokio::test]
async fn slow_response_headers_give_504() {
    let up = Upstream::start("slow").await;
    let proxy = start(&[app("slow", &[up.addr], "response_header_timeout_ms = 300")]);
    let mut s = conn(&proxy).await;
    let (status, body) = get(&mut s, "/v1/slow/slow/5000").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(error_code(&body), "upstream_timeout");
    // Timeouts are not retried.
    assert_eq!(up.hits(), 1);
    let sent = [label("app", "slow"), label("outcome", "sent")];
    assert_eq!(
        metric(&proxy, "tollgate_upstream_retries_total", &sent).await,
        0.0
    );
    let timeouts = [label("app", "slow"), label("kind", "upstream_timeout")];
    assert_eq!(
        metric(&proxy, "tollgate_upstream_errors_total", &timeouts).await,
        1.0
    );
    // A fast answer on the same cluster is unaffected.
    let mut s = conn(&proxy).await;
    let (status, body) = get(&mut s, "/v1/slow/slow/0").await;
    assert_eq!((status, body.as_str()), (200, "slow"));
}

/// A gRPC or Connect call to `path` on the API host with `headers`; status, headers, body.
async fn rpc_call(
    s: &mut Sender,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> (u16, http::HeaderMap, String) {
    send(s, "POST", path, headers, client::full(body)).await
}

#[tokio::test]
async fn a_calls_own_deadline_ends_the_wait_and_is_never_charged_to_the_endpoint() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    // Two failures in a row would eject an endpoint; the cluster itself waits 30 s.
    let proxy = start(&[app(
        "dl",
        &[a.addr, b.addr],
        "protocol = \"h2c\"\nresponse_header_timeout_ms = 30000\n\
         outlier = { consecutive_failures = 2, ejection_ms = 600000 }\n[apps.rpc]",
    )]);
    let mut s = client::connect_plain(proxy.addr("http"), true)
        .await
        .expect("connect");
    // An empty message, framed for gRPC; Connect unary sends it bare.
    const FRAME: &[u8] = &[0, 0, 0, 0, 0];
    let grpc = [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "200m"),
    ];
    let connect = [
        ("content-type", "application/proto"),
        ("connect-protocol-version", "1"),
        ("connect-timeout-ms", "200"),
    ];
    // The upstream would answer after 5 s: the client's 200 ms deadline ends each wait.
    for _ in 0..3 {
        // Native gRPC passes through untranslated, yet its deadline holds.
        let (status, headers, body) = rpc_call(&mut s, "/v1/dl/slow/5000", &grpc, FRAME).await;
        assert_eq!(status, 200, "{body}");
        let code = headers.get("grpc-status").map(|v| v.to_str().unwrap_or(""));
        assert_eq!(code, Some("4"), "DEADLINE_EXCEEDED: {headers:?}");
        let (status, _, body) = rpc_call(&mut s, "/v1/dl/slow/5000", &connect, b"").await;
        assert_eq!(status, 504, "{body}");
        assert_eq!(json(&body)["code"], "deadline_exceeded", "{body}");
    }
    let deadlines = [label("code", "deadline_exceeded")];
    assert_eq!(
        metric(&proxy, "tollgate_http_local_responses_total", &deadlines).await,
        6.0
    );
    // Six timeouts, three per endpoint, and none of them the endpoints' fault.
    let timeouts = [label("kind", "upstream_timeout")];
    assert_eq!(
        metric(&proxy, "tollgate_upstream_errors_total", &timeouts).await,
        0.0
    );
    assert_eq!(
        metric(&proxy, "tollgate_upstream_ejections_total", &[]).await,
        0.0,
        "{}",
        proxy.logs()
    );
    // Both endpoints still take calls.
    let relaxed = [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "10S"),
    ];
    let before = (a.hits(), b.hits());
    for _ in 0..4 {
        let (status, _, body) = rpc_call(&mut s, "/v1/dl/slow/0", &relaxed, FRAME).await;
        assert_eq!((status, body.as_str()), (200, "slow"));
    }
    assert!(
        a.hits() > before.0 && b.hits() > before.1,
        "both endpoints serve"
    );
}

// ---------------------------------------------------------------------------
// 10. Active health checks

/// Sends `n` GETs; returns how many each upstream name served.
async fn spread(
    s: &mut Sender,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        *out.entry(served_by(s, path, headers).await).or_insert(0) += 1;
    }
    out
}

#[tokio::test]
async fn failing_health_checks_take_an_endpoint_out_and_passing_ones_bring_it_back() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let hc = "health_check = { path = \"/healthz\", interval_ms = 100, timeout_ms = 2000, healthy_threshold = 1, unhealthy_threshold = 1 }";
    let proxy = start(&[app("hc", &[a.addr, b.addr], hc)]);
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let mut s = conn(&proxy).await;

    let both = spread(&mut s, "/v1/hc/x", &[], 10).await;
    assert!(both.contains_key("a") && both.contains_key("b"), "{both:?}");

    a.set_healthy(false);
    // Once a check fails, batches of requests stop reaching `a`.
    let deadline = Instant::now() + WAIT;
    loop {
        let before = a.hits();
        spread(&mut s, "/v1/hc/x", &[], 10).await;
        if a.hits() == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "requests kept reaching the unhealthy endpoint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let only_b = spread(&mut s, "/v1/hc/x", &[], 20).await;
    assert_eq!(only_b.get("b"), Some(&20), "{only_b:?}");
    let avail = availability(&proxy, "hc").await;
    assert_eq!((avail[&a_addr], avail[&b_addr]), (false, true), "{avail:?}");
    let gauge = [label("app", "hc"), label("endpoint", &a_addr)];
    assert_eq!(
        metric(&proxy, "tollgate_upstream_endpoint_healthy", &gauge).await,
        0.0
    );

    a.set_healthy(true);
    let deadline = Instant::now() + WAIT;
    loop {
        let before = a.hits();
        spread(&mut s, "/v1/hc/x", &[], 10).await;
        if a.hits() > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recovered endpoint got no traffic again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let avail = availability(&proxy, "hc").await;
    assert_eq!((avail[&a_addr], avail[&b_addr]), (true, true), "{avail:?}");
    assert_eq!(
        metric(&proxy, "tollgate_upstream_endpoint_healthy", &gauge).await,
        1.0
    );
}

// ---------------------------------------------------------------------------
// 11. Balancing

#[tokio::test]
async fn round_robin_alternates_between_endpoints() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let proxy = start(&[app("rr", &[a.addr, b.addr], "")]);
    let mut s = conn(&proxy).await;
    let mut names = Vec::new();
    for i in 0..20 {
        names.push(served_by(&mut s, &format!("/v1/rr/{i}"), &[]).await);
    }
    let to_a = names.iter().filter(|n| *n == "a").count();
    assert!((9..=11).contains(&to_a), "a got {to_a} of 20: {names:?}");
    let switches = names.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches >= 18, "round robin alternates: {names:?}");
}

#[tokio::test]
async fn consistent_hash_keeps_each_key_on_one_endpoint() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let policy = "balance = { policy = \"consistent_hash\", headers = [\"x-agent-id\"] }";
    let proxy = start(&[app("ch", &[a.addr, b.addr], policy)]);
    let mut s = conn(&proxy).await;
    let mut owner = HashMap::new();
    for round in 0..3 {
        for k in 0..40 {
            let id = format!("agent-{k}");
            let name = served_by(&mut s, "/v1/ch/x", &[("x-agent-id", &id)]).await;
            let first = owner.entry(id.clone()).or_insert_with(|| name.clone());
            assert_eq!(*first, name, "{id} moved in round {round}");
        }
    }
    // 40 keys all on one of two endpoints: probability 2^-39.
    let on_a = owner.values().filter(|n| *n == "a").count();
    assert!(
        on_a > 0 && on_a < 40,
        "keys spread over both endpoints: {on_a} of 40 on a"
    );
}

#[tokio::test]
async fn canary_split_applies_only_with_its_header() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let cfg = format!(
        "[[apps]]\nid = \"split\"\n\
         [apps.upstreams.default]\nendpoints = [{{ address = \"{}\" }}]\n\
         [apps.upstreams.canary]\nendpoints = [{{ address = \"{}\" }}]\n\
         [[apps.splits]]\nheader = \"x-experiment\"\nvalue = \"canary\"\n\
         backends = [{{ upstream = \"canary\", weight = 50 }}, {{ upstream = \"default\", weight = 50 }}]",
        stable.addr, canary.addr
    );
    let proxy = start(&[cfg]);
    let mut s = conn(&proxy).await;

    let plain = spread(&mut s, "/v1/split/x", &[], 30).await;
    assert_eq!(
        plain.get("stable"),
        Some(&30),
        "without the header: {plain:?}"
    );
    let other = spread(&mut s, "/v1/split/x", &[("x-experiment", "control")], 30).await;
    assert_eq!(
        other.get("stable"),
        Some(&30),
        "another header value: {other:?}"
    );

    let split = spread(&mut s, "/v1/split/x", &[("x-experiment", "canary")], 200).await;
    let to_canary = split.get("canary").copied().unwrap_or(0);
    // Binomial(200, 1/2): outside 50..=150 (7 standard deviations) has probability ~1e-12.
    assert!((50..=150).contains(&to_canary), "{split:?}");
    assert_eq!(canary.hits(), to_canary);
}

#[tokio::test]
async fn least_request_avoids_the_endpoint_holding_a_stream() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let proxy = start(&[app(
        "lr",
        &[a.addr, b.addr],
        "balance = { policy = \"least_request\" }",
    )]);

    // A /stream response stays open until released: its endpoint has one request in flight.
    let mut hold = conn(&proxy).await;
    let req = client::get(&hold, "http", "api.test", "/v1/lr/stream");
    let resp = tokio::time::timeout(WAIT, hold.send(req))
        .await
        .expect("head in time")
        .expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    read_exactly(&mut body, b"first\n", WAIT)
        .await
        .expect("first chunk");
    let (busy, idle) = match (a.hits(), b.hits()) {
        (1, 0) => (&a, "b"),
        (0, 1) => (&b, "a"),
        other => panic!("the stream went to one endpoint: hits {other:?}"),
    };

    let mut s = conn(&proxy).await;
    let picked = spread(&mut s, "/v1/lr/x", &[], 30).await;
    assert_eq!(
        picked.get(idle),
        Some(&30),
        "all new requests avoid the busy endpoint: {picked:?}"
    );
    assert_eq!(busy.hits(), 1);

    busy.release();
    read_exactly(&mut body, b"second\n", WAIT)
        .await
        .expect("second chunk");
    assert!(read_to_end(&mut body, WAIT).await.expect("end").is_empty());
    drop(body);
    // With the stream finished, both endpoints are equal again and both get traffic.
    let deadline = Instant::now() + WAIT;
    while spread(&mut s, "/v1/lr/x", &[], 20).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "after the stream ends, both endpoints serve again"
        );
    }
}
