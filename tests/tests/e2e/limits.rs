//! Rate limits through the real proxy on a real Redis (`tollgate_tests::redis`): three
//! proxies sharing one Redis enforce one limit; a Redis outage mid-test falls back to the
//! app's `on_backend_error` policy (local limits, or refusals) and cluster limiting comes
//! back when Redis does, without restarting the proxy; refusals in HTTP (429 with
//! `Retry-After` and `RateLimit` fields), gRPC (status 8) and Connect (`resource_exhausted`).

use futures_util::future::join_all;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tollgate_proto::test::v1::EchoRequest;
use tollgate_proto::test::v1::test_service_client::TestServiceClient;
use tollgate_proto::{TestServiceImpl, serve};
use tollgate_tests::client;
use tollgate_tests::config::{Config, Files};
use tollgate_tests::connect::{Call, NodeClient, Transport};
use tollgate_tests::grpc::h2c_channel;
use tollgate_tests::helpers::{WAIT, error_code, json};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::redis::{self, Private};
use tollgate_tests::tls::TestCert;
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::{SOON, until};
use tonic::Code;

const DECISIONS: &str = "tollgate_rate_limit_decisions_total";

/// `[rate_limiting]` on the Redis at `url`, keys under `prefix`.
fn rate_limiting(url: &str, prefix: &str, timeout_ms: u64) -> String {
    format!(
        "[rate_limiting]\nredis_url = \"{url}\"\nredis_timeout_ms = {timeout_ms}\n\
         key_prefix = \"{prefix}\""
    )
}

/// An HTTP/1.1 app at `host` with `[apps.limits]` lines `limits`, marked for
/// detailed metrics (the tests read its own decisions).
fn http_app(id: &str, host: &str, upstream: SocketAddr, limits: &str) -> String {
    format!(
        "[[apps]]\nid = \"{id}\"\nmetrics = \"detailed\"\nhostnames = [\"{host}\"]\n\
         [apps.upstreams.default]\nendpoints = [{{ address = \"{upstream}\" }}]\n\
         [apps.limits]\n{limits}"
    )
}

/// One rate rule on `key` (a TOML value) of `n` requests per minute.
fn per_minute(key: &str, n: u32) -> String {
    format!("[[apps.limits.rate]]\nkey = {key}\nper_minute = {n}")
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

/// One GET on a fresh HTTP/1.1 connection, with extra `headers`.
async fn get(addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Answer {
    let mut s = client::connect_plain(addr, false)
        .await
        .expect("connect to the proxy");
    let mut req = client::get(&s, "http", host, "/");
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    let resp = tokio::time::timeout(WAIT, s.send(req))
        .await
        .expect("an answer in time")
        .expect("a response");
    let (status, headers, body) = client::text(resp).await.expect("the body");
    Answer {
        status,
        headers,
        body,
    }
}

/// `n` GETs for `user` (header `x-user`), one after the other.
async fn burst(addr: SocketAddr, host: &str, user: &str, n: usize) -> Vec<Answer> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(addr, host, &[("x-user", user)]).await);
    }
    out
}

/// (admitted, rate-limited); panics on any other answer.
fn tally(what: &str, answers: &[Answer]) -> (usize, usize) {
    let mut admitted = 0;
    let mut limited = 0;
    for a in answers {
        match a.status {
            200 => admitted += 1,
            429 => {
                assert_rate_limited(what, a);
                limited += 1;
            }
            other => panic!("{what}: unexpected {other}: {}", a.body),
        }
    }
    (admitted, limited)
}

/// A 429 in the documented HTTP form.
fn assert_rate_limited(what: &str, a: &Answer) {
    assert_eq!(a.status, 429, "{what}: {}", a.body);
    assert_eq!(error_code(&a.body), "rate_limited", "{what}: {}", a.body);
    let retry = header(&a.headers, "retry-after");
    assert!(
        retry.parse::<u64>().is_ok_and(|s| s >= 1),
        "{what}: Retry-After in whole seconds, got {retry:?} ({:?})",
        a.headers
    );
    let policy = header(&a.headers, "ratelimit-policy");
    let state = header(&a.headers, "ratelimit");
    assert!(
        policy.contains(";q=") && policy.contains(";w="),
        "{what}: RateLimit-Policy {policy:?}"
    );
    assert!(state.contains(";r=0"), "{what}: RateLimit {state:?}");
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Rate-limit decisions of `app` by `result` and `source`, summed over `proxies`.
async fn decisions(proxies: &[&ProxyProcess], app: &str, result: &str, source: &str) -> f64 {
    let (app, result, source) = (
        format!("app=\"{app}\""),
        format!("result=\"{result}\""),
        format!("source=\"{source}\""),
    );
    let mut sum = 0.0;
    for p in proxies {
        sum += p
            .metric(DECISIONS, &[&app, &result, &source])
            .await
            .expect("metrics");
    }
    sum
}

/// Every decision of `app` in `proxies`, by (result, source), for failure messages.
async fn decisions_table(proxies: &[&ProxyProcess], app: &str) -> String {
    let mut out = Vec::new();
    for result in ["allowed", "refused"] {
        for source in [
            "local",
            "cluster",
            "fallback_local",
            "fallback_deny",
            "fallback_allow",
        ] {
            let n = decisions(proxies, app, result, source).await;
            if n > 0.0 {
                out.push(format!("{result}/{source}={n}"));
            }
        }
    }
    out.join(" ")
}

async fn assert_healthy(proxy: &ProxyProcess, when: &str) {
    let (status, body) = proxy.admin_get("/healthz").await.unwrap_or_else(|e| {
        panic!(
            "{when}: the proxy no longer answers /healthz ({e})\n{}",
            proxy.stderr()
        )
    });
    assert_eq!(status, 200, "{when}: /healthz: {body}");
}

// ---------------------------------------------------------------------------
// One limit for the fleet

#[tokio::test]
async fn three_proxies_sharing_redis_enforce_one_limit() {
    const LIMIT: usize = 30;
    const PER_PROXY: usize = 30;
    let redis = redis::shared();
    let prefix = redis::prefix("three-proxies");
    let up = Upstream::start("web").await;
    // Fail closed: a Redis hiccup can only lower the count, never hide a per-proxy limit.
    let limits = format!(
        "scope = \"cluster\"\non_backend_error = \"deny\"\n{}",
        per_minute("\"app\"", LIMIT as u32)
    );
    let cfg = Config::new()
        .listener("plain")
        .raw(&rate_limiting(&redis.url(), &prefix, 1000))
        .raw(&http_app("web", "web.test", up.addr, &limits))
        .build();
    let proxies: Vec<ProxyProcess> = (0..3)
        .map(|_| ProxyProcess::start(&cfg, &[]).expect("proxy starts"))
        .collect();
    let refs: Vec<&ProxyProcess> = proxies.iter().collect();

    let started = Instant::now();
    let rounds = join_all(proxies.iter().map(|p| async move {
        let mut out = Vec::with_capacity(PER_PROXY);
        for _ in 0..PER_PROXY {
            out.push(get(p.addr("plain"), "web.test", &[]).await);
        }
        out
    }))
    .await;
    let elapsed = started.elapsed();
    let answers: Vec<Answer> = rounds.into_iter().flatten().collect();
    let sent = answers.len();
    let (admitted, limited) = tally("three proxies", &answers);

    // GCRA refills one request every 60/LIMIT s: whatever the fleet admits beyond the
    // burst must be paid by elapsed time, one per refill plus one for rounding.
    let refill = (elapsed.as_secs_f64() / (60.0 / LIMIT as f64)).floor() as usize;
    let most = LIMIT + refill + 1;
    let table = decisions_table(&refs, "web").await;
    assert!(
        (LIMIT..=most).contains(&admitted),
        "three proxies sharing one Redis admitted {admitted} of {sent} requests in {elapsed:?}: \
         one limit of {LIMIT}/min admits {LIMIT} at once plus at most one per {}s elapsed, \
         tolerance [{LIMIT}, {most}]; three separate limits would admit {}. Decisions: {table}",
        60 / LIMIT,
        3 * LIMIT
    );
    assert_eq!(admitted + limited, sent);
    assert_eq!(
        up.hits(),
        admitted,
        "only admitted requests reach the upstream"
    );
    assert_eq!(
        decisions(&refs, "web", "allowed", "cluster").await,
        admitted as f64,
        "every admission decided in Redis: {table}"
    );
    assert_eq!(
        decisions(&refs, "web", "refused", "cluster").await,
        limited as f64,
        "every refusal decided in Redis: {table}"
    );
    let keys = redis::keys_with(redis.port, &prefix).expect("KEYS");
    assert!(
        !keys.is_empty(),
        "the shared limit's state is in Redis under the key prefix {prefix}"
    );
}

// ---------------------------------------------------------------------------
// Redis outage

#[tokio::test]
async fn redis_outage_falls_back_by_policy_and_cluster_limiting_resumes() {
    const LIMIT: usize = 5;
    let mut redis = Private::start();
    let prefix = redis::prefix("outage");
    let up = Upstream::start("web").await;
    let rule = per_minute("{ header = \"x-user\" }", LIMIT as u32);
    let cfg = Config::new()
        .listener("plain")
        .raw(&rate_limiting(&redis.url(), &prefix, 1000))
        .raw(&http_app(
            "loc",
            "loc.test",
            up.addr,
            &format!("scope = \"cluster\"\non_backend_error = \"local\"\n{rule}"),
        ))
        .raw(&http_app(
            "deny",
            "deny.test",
            up.addr,
            &format!("scope = \"cluster\"\non_backend_error = \"deny\"\n{rule}"),
        ))
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let ps = [&proxy];
    let addr = proxy.addr("plain");
    // Each phase counts a user of its own, so no phase inherits another's state.
    let most = |elapsed: Duration| LIMIT + (elapsed.as_secs() / (60 / LIMIT as u64)) as usize;

    // Redis up: the cluster limit.
    let t = Instant::now();
    let (admitted, _) = tally("before", &burst(addr, "loc.test", "before", 10).await);
    assert!(
        (LIMIT..=most(t.elapsed())).contains(&admitted),
        "Redis up: {admitted} of 10 admitted, limit {LIMIT}/min ({})",
        decisions_table(&ps, "loc").await
    );
    assert_eq!(
        decisions(&ps, "loc", "allowed", "cluster").await,
        admitted as f64
    );
    assert!(
        !redis::keys_with(redis.port, &prefix)
            .expect("KEYS")
            .is_empty(),
        "the limit's state is in Redis"
    );

    // Redis down: `local` limits on this proxy alone, `deny` refuses.
    redis.stop();
    let t = Instant::now();
    let answers = burst(addr, "loc.test", "outage", 15).await;
    let (admitted, limited) = tally("Redis down, on_backend_error = local", &answers);
    let table = decisions_table(&ps, "loc").await;
    assert!(
        (LIMIT..=most(t.elapsed())).contains(&admitted),
        "Redis down, policy local: {admitted} of 15 admitted; the local limiter applies the \
         same {LIMIT}/min (not fail-open, not fail-closed). Decisions: {table}"
    );
    let fallback = decisions(&ps, "loc", "allowed", "fallback_local").await
        + decisions(&ps, "loc", "refused", "fallback_local").await;
    assert_eq!(
        fallback,
        (admitted + limited) as f64,
        "every decision during the outage counted as fallback_local: {table}"
    );
    let hits = up.hits();
    for a in burst(addr, "deny.test", "outage", 3).await {
        assert!(
            a.status == 429 || a.status == 503,
            "Redis down, policy deny: refused, got {} {}",
            a.status,
            a.body
        );
        assert!(!error_code(&a.body).is_empty(), "a JSON error: {}", a.body);
    }
    assert_eq!(up.hits(), hits, "policy deny: nothing reached the upstream");
    assert_eq!(
        decisions(&ps, "deny", "refused", "fallback_deny").await,
        3.0,
        "{}",
        decisions_table(&ps, "deny").await
    );
    assert_healthy(&proxy, "Redis down").await;

    // Redis back (empty): cluster decisions resume on the same proxy process.
    redis.restart();
    let before = decisions(&ps, "loc", "allowed", "cluster").await;
    let mut probe = 0;
    until("cluster decisions after Redis restarts", SOON, || {
        probe += 1;
        let user = format!("probe-{probe}");
        async move {
            get(addr, "loc.test", &[("x-user", &user)]).await;
            (decisions(&ps, "loc", "allowed", "cluster").await > before).then_some(())
        }
    })
    .await;
    let fallback_before = decisions(&ps, "loc", "allowed", "fallback_local").await
        + decisions(&ps, "loc", "refused", "fallback_local").await;
    let cluster_before = decisions(&ps, "loc", "allowed", "cluster").await
        + decisions(&ps, "loc", "refused", "cluster").await;
    let t = Instant::now();
    let (admitted, limited) = tally("after", &burst(addr, "loc.test", "after", 10).await);
    let table = decisions_table(&ps, "loc").await;
    assert!(
        (LIMIT..=most(t.elapsed())).contains(&admitted),
        "Redis back: {admitted} of 10 admitted, limit {LIMIT}/min. Decisions: {table}"
    );
    let cluster_after = decisions(&ps, "loc", "allowed", "cluster").await
        + decisions(&ps, "loc", "refused", "cluster").await;
    assert_eq!(
        cluster_after - cluster_before,
        (admitted + limited) as f64,
        "every decision after the restart made in Redis: {table}"
    );
    let fallback_after = decisions(&ps, "loc", "allowed", "fallback_local").await
        + decisions(&ps, "loc", "refused", "fallback_local").await;
    assert_eq!(
        fallback_after, fallback_before,
        "no fallback once Redis is back"
    );
    assert!(
        !redis::keys_with(redis.port, &prefix)
            .expect("KEYS")
            .is_empty(),
        "the limit's state is in the restarted Redis"
    );

    // The deny app admits again, limited by Redis.
    let mut probe = 0;
    until("the deny app admitting after Redis restarts", SOON, || {
        probe += 1;
        let user = format!("deny-probe-{probe}");
        async move { (get(addr, "deny.test", &[("x-user", &user)]).await.status == 200).then_some(()) }
    })
    .await;
    let t = Instant::now();
    let (admitted, _) = tally("deny after", &burst(addr, "deny.test", "after", 10).await);
    assert!(
        (LIMIT..=most(t.elapsed())).contains(&admitted),
        "policy deny, Redis back: {admitted} of 10 admitted, limit {LIMIT}/min ({})",
        decisions_table(&ps, "deny").await
    );
    assert_healthy(&proxy, "after the Redis restart").await;
}

// ---------------------------------------------------------------------------
// Refusals in each protocol

#[tokio::test]
async fn rate_limited_rpc_calls_get_resource_exhausted_in_their_own_protocol() {
    const HOST: &str = "grpc.test";
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, TestServiceImpl::new()));
    let cert = TestCert::new(&[HOST]);
    let cfg = Config::new()
        .listener("plain")
        .tls_listener("tls", "")
        .cert("grpc")
        .raw(&format!(
            "[[apps]]\nid = \"grpc\"\nmetrics = \"detailed\"\nhostnames = [\"{HOST}\"]\n\
             [apps.upstreams.default]\nendpoints = [{{ address = \"{up}\" }}]\nprotocol = \"h2c\"\n\
             [apps.rpc]\ndescriptor_set = \"builtin\"\n\
             [apps.limits]\nscope = \"local\"\n{}",
            per_minute("\"app\"", 1)
        ))
        .build();
    let files = Files::new().cert("grpc", &cert);
    let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");
    let channel = h2c_channel(proxy.addr("plain"), HOST)
        .await
        .expect("h2c channel");
    let mut grpc = TestServiceClient::new(channel);
    let echo = || EchoRequest {
        message: "hi".into(),
        payload_bytes: 0,
    };

    // The one call a minute.
    tokio::time::timeout(WAIT, grpc.echo(echo()))
        .await
        .expect("in time")
        .expect("the first call is admitted");

    // gRPC: status 8.
    let err = tokio::time::timeout(WAIT, grpc.echo(echo()))
        .await
        .expect("in time")
        .expect_err("the second call is refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "gRPC: {err:?}");

    // Connect unary, raw: HTTP 429 with a Connect JSON error and the rate-limit fields.
    let (status, headers, body) = tokio::time::timeout(
        WAIT,
        client::connect_json_plain(
            proxy.addr("plain"),
            HOST,
            "/tollgate.test.v1.TestService/Echo",
            r#"{"message":"hi"}"#,
        ),
    )
    .await
    .expect("in time")
    .expect("response");
    assert_eq!(status, 429, "Connect unary: {body}");
    assert_eq!(
        json(&body)["code"],
        "resource_exhausted",
        "Connect unary: {body}"
    );
    assert!(
        header(&headers, "retry-after").parse::<u64>().is_ok(),
        "Connect unary: Retry-After: {headers:?}"
    );

    // The real clients: Connect and gRPC-Web.
    let port = proxy.addr("tls").port();
    let node = NodeClient::new(&format!("https://{HOST}:{port}"), &cert).expect("client");
    for (kind, transport) in [
        ("connect-json", Transport::ConnectJson),
        ("grpc-web", Transport::GrpcWeb),
    ] {
        let out = node
            .call(&Call::new(transport, "echo", json!({ "message": "hi" })))
            .await
            .unwrap_or_else(|e| panic!("{kind}: the client did not run: {e}"));
        let err = out.expect_err(kind);
        assert_eq!(err.code, "resource_exhausted", "{kind}: {err:?}");
    }
    let refused = proxy
        .metric(
            DECISIONS,
            &["app=\"grpc\"", "result=\"refused\"", "source=\"local\""],
        )
        .await
        .expect("metrics");
    assert_eq!(refused, 4.0, "every refusal counted");
}

/// A route with limits of its own: its requests are limited, the rest of the app's are not.
#[tokio::test]
async fn a_route_can_have_its_own_rate_limit() {
    let up = Upstream::start("web").await;
    let cfg = Config::new()
        .listener("plain")
        .raw(&format!(
            "[[apps]]\nid = \"web\"\nhostnames = [\"web.test\"]\n\
             [apps.upstreams.default]\nendpoints = [{{ address = \"{}\" }}]\n\
             [[routes]]\nid = \"limited\"\nhostname = \"web.test\"\npath_prefix = \"/limited\"\napp = \"web\"\n\
             [routes.limits]\n[[routes.limits.rate]]\nkey = \"app\"\nper_minute = 2",
            up.addr
        ))
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("plain");
    let mut limited = Vec::new();
    let mut open = Vec::new();
    for _ in 0..3 {
        limited.push(
            client::get_plain(addr, "web.test", "/limited/x")
                .await
                .expect("GET")
                .0,
        );
        open.push(
            client::get_plain(addr, "web.test", "/other")
                .await
                .expect("GET")
                .0,
        );
    }
    assert_eq!(
        limited,
        vec![200, 200, 429],
        "the route's own limit of 2 a minute"
    );
    assert_eq!(
        open,
        vec![200, 200, 200],
        "the app's other paths have no limit"
    );
}
