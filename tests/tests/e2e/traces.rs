//! Traces at the edge, end to end: the real proxy exporting OpenTelemetry spans over
//! OTLP/gRPC to a receiver built on the official protos (`tollgate_tests::otlp`), and
//! W3C `traceparent`/`tracestate` as the upstreams receive them (the echo upstream's
//! JSON, the gRPC test service's echoed metadata).
//!
//! Checked: the span tree of a request (TLS handshake, route, auth, admission, the
//! upstream try, RPC translation as children of the request span, the caller's span as
//! its parent), the upstream's parent being the try's span, semantic-convention
//! attributes, no credential in any attribute, an invalid context replaced, and with
//! sampling off no span at all while the caller's context still passes unchanged.

use serde_json::Value;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tollgate_filters::apikey::{KeyKind, generate};
use tollgate_proto::TestServiceImpl;
use tollgate_tests::client::{self, TestBody};
use tollgate_tests::config::{Config, Files};
use tollgate_tests::grpc::serve_without_server_timer;
use tollgate_tests::helpers::json;
use tollgate_tests::otlp::{OtlpReceiver, Received};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::tls::{TestCert, client_config};
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::{SOON, until};

const ACME: &str = "acme.test";
const GRPC: &str = "grpc.test";
const ECHO: &str = "/tollgate.test.v1.TestService/Echo";
/// The caller's context: trace `CALLER_TRACE`, its span `CALLER_SPAN`, sampled.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str, span: &str, flags: &str) -> String {
    format!("00-{trace}-{span}-{flags}")
}

/// `(trace id, parent id, flags)` of a `traceparent`.
fn parts(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "traceparent {tp}");
    assert_eq!(p[0], "00", "traceparent {tp}");
    (p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
}

/// The echo upstream `acme` behind API-key auth and a rate limit, the gRPC test
/// service `grpc` (Connect and gRPC-Web offered), on a plain and a TLS listener.
struct Edge {
    proxy: ProxyProcess,
    cert: TestCert,
    key: String,
    _upstream: Upstream,
}

impl Edge {
    async fn start(tracing: &str) -> Edge {
        let upstream = Upstream::start("acme-echo").await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let grpc: SocketAddr = listener.local_addr().expect("addr");
        tokio::spawn(serve_without_server_timer(listener, TestServiceImpl::new()));
        let (key, sha256) = generate(KeyKind::Secret, false, "acme").expect("key");
        let cert = TestCert::new(&[ACME, GRPC]);
        let cfg = Config::new()
            .listener("http")
            .tls_listener("tls", "")
            .cert("edge")
            .raw(&format!(
                "[[apps]]\nid = \"acme\"\nhostnames = [\"{ACME}\"]\n\
                 [apps.upstreams.default]\nendpoints = [{{ address = \"{}\" }}]\n\
                 [apps.auth]\napi_keys = true\n\
                 [apps.limits]\nscope = \"local\"\n\
                 [[apps.limits.rate]]\nkey = \"api_key\"\nper_second = 1000\nburst = 1000",
                upstream.addr
            ))
            .raw(&format!(
                "[[apps]]\nid = \"grpc\"\nhostnames = [\"{GRPC}\"]\n\
                 [apps.upstreams.default]\nendpoints = [{{ address = \"{grpc}\" }}]\nprotocol = \"h2c\"\n\
                 [apps.rpc]\ndescriptor_set = \"builtin\""
            ))
            .raw(&format!(
                "[[api_keys]]\nkey_id = \"acme-key\"\napp = \"acme\"\nkind = \"secret\"\nsha256 = \"{sha256}\""
            ))
            .raw(tracing)
            .build();
        let files = Files::new().cert("edge", &cert);
        let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");
        Edge {
            proxy,
            cert,
            key,
            _upstream: upstream,
        }
    }

    /// A GET to `acme` over a new TLS (HTTP/2) connection with the key and `headers`;
    /// the request headers the upstream received.
    async fn get_acme(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> serde_json::Map<String, Value> {
        let cfg = client_config(&[&self.cert], &[b"h2"]);
        let mut s = client::connect_tls(self.proxy.addr("tls"), ACME, cfg)
            .await
            .expect("TLS connection");
        let mut req = client::request(&s, "GET", "https", ACME, path, client::empty());
        add(&mut req, "authorization", &format!("Bearer {}", self.key));
        for (k, v) in headers {
            add(&mut req, k, v);
        }
        let (status, _, body) = client::text(s.send(req).await.expect("answer"))
            .await
            .expect("body");
        assert_eq!(status, 200, "{body}\n{}", self.proxy.stderr());
        match json(&body)["headers"].as_object() {
            Some(h) => h.clone(),
            None => panic!("not an upstream echo: {body}"),
        }
    }

    /// One Connect unary JSON call to `Echo` on the plain listener; the request
    /// metadata the gRPC service saw.
    async fn connect_echo(&self) -> serde_json::Map<String, Value> {
        let (status, _, body) =
            client::connect_json_plain(self.proxy.addr("http"), GRPC, ECHO, r#"{"message":"hi"}"#)
                .await
                .expect("Connect call");
        assert_eq!(status, 200, "{body}\n{}", self.proxy.stderr());
        match json(&body)["metadata"].as_object() {
            Some(m) => m.clone(),
            None => panic!("no metadata echoed: {body}"),
        }
    }
}

fn add(req: &mut http::Request<TestBody>, name: &str, value: &str) {
    req.headers_mut().append(
        http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
        http::HeaderValue::from_str(value).expect("value"),
    );
}

fn seen(headers: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    headers.get(name).and_then(Value::as_str).map(str::to_owned)
}

fn tracing_section(receiver: &OtlpReceiver, ratio: &str) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"edge-under-test\"\n\
         sample_ratio = {ratio}\nexport_interval_ms = 100",
        receiver.endpoint()
    )
}

/// Waits until the receiver holds a span of `trace` for which `done` holds.
async fn spans_of(
    receiver: &OtlpReceiver,
    what: &str,
    trace: &str,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    until(what, SOON, || async {
        let spans = receiver.trace(trace);
        done(&spans).then_some(spans)
    })
    .await
}

fn one<'a>(spans: &'a [Received], what: &str, pick: impl Fn(&Received) -> bool) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "exactly one {what} in {spans:#?}");
    found[0]
}

fn named<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    one(spans, name, |s| s.name() == name)
}

fn server(spans: &[Received]) -> &Received {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    one(spans, "server span", |s| s.kind() == SpanKind::Server)
}

fn client_span(spans: &[Received]) -> &Received {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    one(spans, "client span", |s| s.kind() == SpanKind::Client)
}

fn has(span: &Received, key: &str, want: &str) {
    assert_eq!(
        span.attr(key).as_deref(),
        Some(want),
        "{} `{key}` in {:#?}",
        span.name(),
        span.attrs()
    );
}

#[tokio::test]
async fn a_requests_spans_form_one_tree_under_the_callers_span_and_hold_no_secret() {
    let receiver = OtlpReceiver::start().await;
    let edge = Edge::start(&tracing_section(&receiver, "1.0")).await;

    // 1. An HTTPS request carrying the caller's sampled context.
    let incoming = traceparent(CALLER_TRACE, CALLER_SPAN, "01");
    let upstream_saw = edge
        .get_acme(
            "/things/42?verbose=1",
            &[("traceparent", &incoming), ("tracestate", "vendor=opaque")],
        )
        .await;
    let sent = seen(&upstream_saw, "traceparent").expect("the upstream got a traceparent");
    let (trace, parent, flags) = parts(&sent);
    assert_eq!(trace, CALLER_TRACE, "the caller's trace is kept");
    assert_ne!(
        parent, CALLER_SPAN,
        "the upstream's parent is the proxy's span"
    );
    assert_eq!(flags, "01");
    assert_eq!(
        seen(&upstream_saw, "tracestate").as_deref(),
        Some("vendor=opaque")
    );

    let spans = spans_of(&receiver, "the HTTPS request's spans", CALLER_TRACE, |s| {
        ["tls handshake", "route", "auth", "admission"]
            .iter()
            .all(|n| s.iter().any(|x| x.name() == *n))
            && s.len() >= 6
    })
    .await;
    assert_eq!(spans.len(), 6, "{spans:#?}");
    let request = server(&spans);
    assert_eq!(
        request.parent_id(),
        CALLER_SPAN,
        "the caller's span is the parent"
    );
    let route = request.attr("http.route").expect("http.route");
    assert_eq!(request.name(), format!("GET {route}"));
    has(request, "http.request.method", "GET");
    has(request, "url.path", "/things/42");
    has(request, "url.scheme", "https");
    has(request, "server.address", ACME);
    has(request, "network.protocol.version", "2");
    has(request, "tollgate.app.id", "acme");
    has(request, "http.response.status_code", "200");
    assert!(request.attr("client.address").is_some());
    assert!(!request.failed());
    for s in &spans {
        assert_eq!(
            s.service.as_deref(),
            Some("edge-under-test"),
            "{}",
            s.name()
        );
        assert_eq!(s.scope.as_deref(), Some("tollgate-proxy"));
        if s.span_id() != request.span_id() {
            assert_eq!(
                s.parent_id(),
                request.span_id(),
                "{} hangs off the request span",
                s.name()
            );
        }
    }
    let tls = named(&spans, "tls handshake");
    has(tls, "tls.protocol.version", "1.3");
    has(tls, "tls.next_protocol", "h2");
    has(named(&spans, "route"), "http.route", &route);
    let auth = named(&spans, "auth");
    has(auth, "tollgate.auth.method", "api_key");
    has(auth, "tollgate.auth.result", "ok_api_key");
    has(
        named(&spans, "admission"),
        "tollgate.admission.result",
        "admitted",
    );
    let attempt = client_span(&spans);
    assert_eq!(
        attempt.span_id(),
        parent,
        "the upstream's parent is the try's span"
    );
    assert_eq!(attempt.name(), "GET");
    has(attempt, "http.request.method", "GET");
    has(attempt, "server.address", "127.0.0.1");
    has(attempt, "network.peer.address", "127.0.0.1");
    has(attempt, "http.request.resend_count", "0");
    has(attempt, "http.response.status_code", "200");
    assert!(attempt.attr("server.port").is_some());

    // 2. A Connect call without a context: a new trace, with the translation span.
    let metadata = edge.connect_echo().await;
    let sent = seen(&metadata, "traceparent").expect("the gRPC service got a traceparent");
    let (trace, parent, _) = parts(&sent);
    let spans = spans_of(&receiver, "the Connect call's spans", &trace, |s| {
        s.iter().any(|x| x.name() == "translate") && s.len() >= 4
    })
    .await;
    let request = server(&spans);
    assert_eq!(
        request.parent_id(),
        "",
        "a new trace starts at the request span"
    );
    has(request, "rpc.system", "grpc");
    has(request, "rpc.method", "Echo");
    has(request, "network.protocol.version", "1.1");
    let translate = named(&spans, "translate");
    assert_eq!(translate.parent_id(), request.span_id());
    has(translate, "rpc.system", "grpc");
    has(translate, "rpc.service", "tollgate.test.v1.TestService");
    has(translate, "rpc.method", "Echo");
    has(translate, "tollgate.rpc.protocol", "connect");
    has(translate, "tollgate.rpc.codec", "json");
    let attempt = client_span(&spans);
    assert_eq!(attempt.span_id(), parent);
    assert_eq!(attempt.parent_id(), request.span_id());
    has(attempt, "network.protocol.version", "2");
    has(attempt, "http.request.method", "POST");

    // 3. An invalid context (all-zero trace id) is dropped with its tracestate.
    let invalid = traceparent(&"0".repeat(32), CALLER_SPAN, "01");
    let upstream_saw = edge
        .get_acme(
            "/invalid",
            &[("traceparent", &invalid), ("tracestate", "vendor=opaque")],
        )
        .await;
    let sent = seen(&upstream_saw, "traceparent").expect("a new traceparent");
    let (trace, parent, _) = parts(&sent);
    assert_ne!(trace, "0".repeat(32));
    assert_eq!(
        seen(&upstream_saw, "tracestate"),
        None,
        "tracestate dropped with it"
    );
    let spans = spans_of(&receiver, "the new trace", &trace, |s| s.len() >= 5).await;
    assert_eq!(server(&spans).parent_id(), "");
    assert_eq!(client_span(&spans).span_id(), parent);

    // The access log names each request's trace.
    until("the trace id in the access log", SOON, || async {
        let logs = edge.proxy.logs();
        // Text logs may colour the field names: the line and the id are enough.
        logs.lines()
            .any(|l| l.contains("access") && l.contains("trace_id") && l.contains(CALLER_TRACE))
            .then_some(())
    })
    .await;

    // No attribute anywhere holds the key or the Authorization header.
    let all = receiver.spans();
    let bearer = format!("Bearer {}", edge.key);
    for s in &all {
        for (k, v) in s.attrs() {
            assert!(
                !v.contains(&edge.key) && !v.contains(&bearer),
                "span {} attribute {k} holds the credential",
                s.name()
            );
            assert!(
                !k.contains("authorization"),
                "span {} records {k}",
                s.name()
            );
        }
    }
}

#[tokio::test]
async fn unsampled_requests_export_nothing_and_the_callers_context_passes_unchanged() {
    let receiver = OtlpReceiver::start().await;
    let edge = Edge::start(&tracing_section(&receiver, "0.0")).await;

    // A caller that did not sample: its context goes upstream as it came.
    let unsampled = traceparent(CALLER_TRACE, CALLER_SPAN, "00");
    let upstream_saw = edge
        .get_acme(
            "/a",
            &[("traceparent", &unsampled), ("tracestate", "vendor=opaque")],
        )
        .await;
    assert_eq!(
        seen(&upstream_saw, "traceparent").as_deref(),
        Some(unsampled.as_str())
    );
    assert_eq!(
        seen(&upstream_saw, "tracestate").as_deref(),
        Some("vendor=opaque")
    );
    // No context and nothing sampled: none is made up.
    let upstream_saw = edge.get_acme("/b", &[]).await;
    assert_eq!(seen(&upstream_saw, "traceparent"), None);
    let metadata = edge.connect_echo().await;
    assert_eq!(seen(&metadata, "traceparent"), None);

    // A caller that sampled is followed (parent-based). Its spans are exported after
    // everything the requests above could have queued, so once they are in, nothing
    // else is.
    let marker = "0af7651916cd43dd8448eb211c80319c";
    edge.get_acme(
        "/marker",
        &[("traceparent", &traceparent(marker, CALLER_SPAN, "01"))],
    )
    .await;
    spans_of(&receiver, "the sampled caller's spans", marker, |s| {
        s.len() >= 6
    })
    .await;
    let others: Vec<String> = receiver
        .spans()
        .iter()
        .filter(|s| s.trace_id() != marker)
        .map(|s| format!("{} {}", s.trace_id(), s.name()))
        .collect();
    assert!(
        others.is_empty(),
        "unsampled requests exported spans: {others:?}"
    );
}

#[tokio::test]
async fn without_tracing_the_context_is_still_checked_and_forwarded() {
    let edge = Edge::start("").await;
    let sampled = traceparent(CALLER_TRACE, CALLER_SPAN, "01");
    let upstream_saw = edge
        .get_acme(
            "/a",
            &[("traceparent", &sampled), ("tracestate", "vendor=opaque")],
        )
        .await;
    assert_eq!(
        seen(&upstream_saw, "traceparent").as_deref(),
        Some(sampled.as_str())
    );
    assert_eq!(
        seen(&upstream_saw, "tracestate").as_deref(),
        Some("vendor=opaque")
    );

    let upper = traceparent(&CALLER_TRACE.to_uppercase(), CALLER_SPAN, "01");
    let upstream_saw = edge
        .get_acme(
            "/b",
            &[("traceparent", &upper), ("tracestate", "vendor=opaque")],
        )
        .await;
    assert_eq!(
        seen(&upstream_saw, "traceparent"),
        None,
        "an invalid traceparent is dropped"
    );
    assert_eq!(seen(&upstream_saw, "tracestate"), None);

    let metadata = edge.connect_echo().await;
    assert_eq!(seen(&metadata, "traceparent"), None);
}
