use super::*;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SimpleSpanProcessor, SpanData, SpanExporter};
use std::sync::Mutex;

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CALLER_UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
const CALLER_TRACE: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;

/// Keeps every span it is given.
#[derive(Debug, Clone, Default)]
struct Capture(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Capture {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().expect("lock").extend(batch);
        Ok(())
    }
}

impl Capture {
    fn spans(&self) -> Vec<SpanData> {
        self.0.lock().expect("lock").clone()
    }
}

fn tracing(ratio: f64, parent_based: bool) -> (Tracing, Capture) {
    let capture = Capture::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(SimpleSpanProcessor::new(capture.clone()))
        .build();
    let t = Tracing::with_provider(provider, ratio, parent_based, Duration::from_secs(1));
    (t, capture)
}

fn request(headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder()
        .uri("/v1/things/42?api_key=sk_live_secret")
        .header("host", "acme.test:8443");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request")
}

fn conn() -> ConnInfo {
    ConnInfo::new("10.0.0.7:5555".parse().expect("addr"), 8443, true)
}

fn begin(t: &Tracing, req: &mut Request<()>) -> RequestTrace {
    t.begin(req, &conn(), &http::HeaderValue::from_static("req-1"))
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

#[test]
fn without_tracing_a_valid_context_passes_and_an_invalid_one_is_removed() {
    let off = Tracing::default();
    let mut req = request(&[("traceparent", CALLER), ("tracestate", "a=1")]);
    let trace = begin(&off, &mut req);
    assert!(!trace.is_recording());
    assert_eq!(trace.trace_id().to_string(), format!("{CALLER_TRACE:032x}"));
    assert_eq!(req.headers()["traceparent"], CALLER);
    assert_eq!(req.headers()["tracestate"], "a=1");

    let mut bad = request(&[("traceparent", "00-zz-01"), ("tracestate", "a=1")]);
    let trace = begin(&off, &mut bad);
    assert_eq!(trace.trace_id().to_string(), "-");
    assert!(!bad.headers().contains_key("traceparent"));
    assert!(!bad.headers().contains_key("tracestate"));
}

#[test]
fn the_callers_sampled_flag_decides_when_parent_based() {
    let (t, capture) = tracing(0.0, true);
    let mut unsampled = request(&[("traceparent", CALLER_UNSAMPLED)]);
    let trace = begin(&t, &mut unsampled);
    assert!(!trace.is_recording());
    assert!(!trace.client("GET").is_recording());
    assert_eq!(unsampled.headers()["traceparent"], CALLER_UNSAMPLED);
    drop(trace);

    let mut fresh = request(&[]);
    assert!(!begin(&t, &mut fresh).is_recording());
    assert!(capture.spans().is_empty());

    let mut sampled = request(&[("traceparent", CALLER), ("tracestate", "vendor=x")]);
    let mut trace = begin(&t, &mut sampled);
    assert!(trace.is_recording());
    trace.finish(200, 10, "complete");
    let spans = capture.spans();
    assert_eq!(spans.len(), 1);
    let server = &spans[0];
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(
        u128::from_be_bytes(server.span_context.trace_id().to_bytes()),
        CALLER_TRACE
    );
    assert_eq!(server.parent_span_id, SpanId::from(0x00f067aa0ba902b7));
    assert!(server.parent_span_is_remote);
    assert_eq!(server.span_context.trace_state().header(), "vendor=x");
}

#[test]
fn the_ratio_decides_when_not_parent_based() {
    let (t, _) = tracing(0.0, false);
    let mut sampled = request(&[("traceparent", CALLER)]);
    assert!(!begin(&t, &mut sampled).is_recording());
    let (t, _) = tracing(1.0, false);
    let mut unsampled = request(&[("traceparent", CALLER_UNSAMPLED)]);
    assert!(begin(&t, &mut unsampled).is_recording());

    assert!(ratio_admits_trace(1.0, 0));
    assert!(!ratio_admits_trace(0.0, 0));
    assert!(ratio_admits_trace(
        0.5,
        0x0000_0000_0000_0000_0000_0000_0000_0002
    ));
    assert!(!ratio_admits_trace(
        0.5,
        0x0000_0000_0000_0000_ffff_ffff_ffff_fffe
    ));
}

#[test]
fn children_hang_off_the_request_span_and_the_upstream_parent_is_the_try() {
    let (t, capture) = tracing(1.0, true);
    let mut req = request(&[("authorization", "Bearer sk_live_secret")]);
    let mut trace = begin(&t, &mut req);
    assert!(trace.is_recording());
    let mut auth = trace.child("auth");
    auth.set("tollgate.auth.result", "ok_api_key");
    drop(auth);
    let mut attempt = trace.client("GET");
    let parent = attempt.traceparent().expect("recorded");
    attempt.error("upstream_connect");
    drop(attempt);
    let route: Arc<str> = Arc::from("acme-api");
    trace.route(&Method::GET, &route, route_attributes(&route, "acme"));
    trace.finish(502, 0, "complete");

    let spans = capture.spans();
    let by_name = |n: &str| {
        spans
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no span {n}: {spans:?}"))
    };
    let server = by_name("GET acme-api");
    let root = server.span_context.span_id();
    assert_eq!(server.parent_span_id, SpanId::INVALID);
    for child in ["auth", "GET"] {
        let s = by_name(child);
        assert_eq!(s.parent_span_id, root, "{child}");
        assert_eq!(s.span_context.trace_id(), server.span_context.trace_id());
        assert!(!s.parent_span_is_remote);
    }
    let try_span = by_name("GET");
    assert_eq!(try_span.span_kind, SpanKind::Client);
    let sent = w3c::parse(parent.as_bytes()).expect("valid traceparent");
    assert_eq!(
        sent.parent_id,
        u64::from_be_bytes(try_span.span_context.span_id().to_bytes())
    );
    assert_eq!(
        attr(try_span, "error.type").as_deref(),
        Some("upstream_connect")
    );
    assert_eq!(attr(server, "http.route").as_deref(), Some("acme-api"));
    assert_eq!(attr(server, "url.path").as_deref(), Some("/v1/things/42"));
    assert_eq!(attr(server, "server.address").as_deref(), Some("acme.test"));
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("502")
    );
    assert!(matches!(
        server.status,
        opentelemetry::trace::Status::Error { .. }
    ));
    // Neither the query (a key may ride in it) nor any credential header is recorded.
    for s in &spans {
        for kv in &s.attributes {
            assert!(!kv.value.as_str().contains("secret"), "{}: {kv:?}", s.name);
        }
    }
}

#[test]
fn an_unsampled_first_request_takes_the_handshake_with_it() {
    let (t, capture) = tracing(1.0, true);
    let start = std::time::SystemTime::now();
    let mut c = conn();
    c.handshake = Some(Arc::new(Handshake::of_parts(start, start)));
    let mut unsampled = request(&[("traceparent", CALLER_UNSAMPLED)]);
    assert!(
        !t.begin(&mut unsampled, &c, &http::HeaderValue::from_static("r"))
            .is_recording()
    );
    let mut req = request(&[]);
    let mut trace = t.begin(&mut req, &c, &http::HeaderValue::from_static("r"));
    trace.finish(200, 0, "complete");
    let spans = capture.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_ne!(spans[0].name, "tls handshake");
}

#[test]
fn the_handshake_span_goes_with_the_connections_first_request_only() {
    let (t, capture) = tracing(1.0, true);
    let start = std::time::SystemTime::now();
    let mut c = conn();
    let mut h = Handshake::of_parts(start, start + Duration::from_millis(3));
    h.version = Some("1.3");
    c.handshake = Some(Arc::new(h));
    for _ in 0..2 {
        let mut req = request(&[]);
        let mut trace = t.begin(&mut req, &c, &http::HeaderValue::from_static("r"));
        trace.finish(200, 0, "complete");
    }
    let spans = capture.spans();
    let tls: Vec<&SpanData> = spans.iter().filter(|s| s.name == "tls handshake").collect();
    assert_eq!(tls.len(), 1, "{spans:?}");
    assert_eq!(tls[0].start_time, start);
    assert_eq!(attr(tls[0], "tls.protocol.version").as_deref(), Some("1.3"));
}

#[test]
fn rpc_calls_are_named_by_service_and_method() {
    let attrs = rpc_attributes(
        RpcProtocol::ConnectUnary {
            codec: tollgate_filters::rpc::Codec::Json,
            get: false,
        },
        "/tollgate.test.v1.TestService/Echo",
    );
    let get = |k: &str| {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.as_str().into_owned())
    };
    assert_eq!(get("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        get("rpc.service").as_deref(),
        Some("tollgate.test.v1.TestService")
    );
    assert_eq!(get("rpc.method").as_deref(), Some("Echo"));
    assert_eq!(get("tollgate.rpc.protocol").as_deref(), Some("connect"));
    assert_eq!(get("tollgate.rpc.codec").as_deref(), Some("json"));
}
