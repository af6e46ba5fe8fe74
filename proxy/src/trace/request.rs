//! One request's trace: the server span of a recorded request and the spans of its
//! phases, or next to nothing for a request that is not recorded.
//!
//! Whether a request records is decided once, when it starts ([`super::Tracing::begin`]).
//! An unrecorded request holds no span object and allocates nothing here: its
//! [`RequestTrace`] is an id and a `None`, and every [`TraceSpan`] it hands out is a
//! `None` whose setters do nothing (attribute values that cost anything are built in
//! closures that are then never called).

use super::w3c;
use http::{HeaderValue, Method};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span as SdkSpan};
use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// One request's trace.
#[derive(Default)]
pub struct RequestTrace {
    /// The trace the request belongs to, when there is one: the recorded trace, or
    /// the caller's when the request is not recorded; 0 when neither.
    trace_id: u128,
    recording: Option<Box<Recording>>,
}

impl fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestTrace")
            .field("trace_id", &self.trace_id())
            .field("recording", &self.is_recording())
            .finish()
    }
}

/// A recorded request: its server span and what starting its children takes.
struct Recording {
    tracer: SdkTracer,
    span: SdkSpan,
    /// A context whose span is the server span: the parent of every child.
    parent: Context,
}

impl RequestTrace {
    /// A request that records nothing; `trace_id` is the caller's (0 when none).
    pub(super) fn unrecorded(trace_id: u128) -> Self {
        RequestTrace {
            trace_id,
            recording: None,
        }
    }

    pub(super) fn recorded(tracer: SdkTracer, span: SdkSpan) -> Self {
        let parent = Context::new().with_remote_span_context(span.span_context().clone());
        let trace_id = u128::from_be_bytes(span.span_context().trace_id().to_bytes());
        RequestTrace {
            trace_id,
            recording: Some(Box::new(Recording {
                tracer,
                span,
                parent,
            })),
        }
    }

    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// The trace id for the access log: `-` when the request belongs to no trace.
    pub fn trace_id(&self) -> TraceIdText {
        TraceIdText(self.trace_id)
    }

    /// A child span of the request span (internal), or nothing when not recording.
    pub fn child(&self, name: &'static str) -> TraceSpan {
        self.start(name, SpanKind::Internal, None)
    }

    /// A client span of the request span: one try sent upstream.
    pub fn client(&self, name: &'static str) -> TraceSpan {
        self.start(name, SpanKind::Client, None)
    }

    /// Records a child span that already happened (the connection's TLS handshake).
    pub fn past(
        &self,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        attrs: Vec<KeyValue>,
    ) {
        if let TraceSpan(Some(mut s)) = self.start(name, SpanKind::Internal, Some(start)) {
            s.set_attributes(attrs);
            s.end_with_timestamp(end);
        }
    }

    fn start(&self, name: &'static str, kind: SpanKind, at: Option<SystemTime>) -> TraceSpan {
        let Some(r) = &self.recording else {
            return TraceSpan(None);
        };
        let mut builder = r.tracer.span_builder(name).with_kind(kind);
        if let Some(at) = at {
            builder = builder.with_start_time(at);
        }
        TraceSpan(Some(Box::new(
            builder.start_with_context(&r.tracer, &r.parent),
        )))
    }

    /// Sets attributes of the request span; `attrs` is called only when recording.
    pub fn attrs<I: IntoIterator<Item = KeyValue>>(&mut self, attrs: impl FnOnce() -> I) {
        if let Some(r) = &mut self.recording {
            r.span.set_attributes(attrs());
        }
    }

    /// Names the request span after its route (`GET route-id`) and records the route.
    pub fn route(&mut self, method: &Method, route: &str, attrs: [KeyValue; 2]) {
        if let Some(r) = &mut self.recording {
            r.span
                .update_name(format!("{} {route}", super::method_name(method)));
            r.span.set_attributes(attrs);
        }
    }

    /// Ends the request span with the answer's status and how its body ended.
    pub fn finish(&mut self, status: u16, bytes: u64, outcome: &'static str) {
        let Some(mut r) = self.recording.take() else {
            return;
        };
        let span = &mut r.span;
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.set_attribute(KeyValue::new("http.response.body.size", bytes as i64));
        span.set_attribute(KeyValue::new("tollgate.outcome", outcome));
        // A server span is an error only when the server failed (semantic conventions).
        if status >= 500 {
            span.set_attribute(KeyValue::new("error.type", super::status_text(status)));
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// A span of one phase of a recorded request, ended when dropped; a `None` that does
/// nothing for an unrecorded one. Boxed: the span is 288 bytes, and every request
/// future that holds a `TraceSpan` across an await would carry them, recording or not.
pub struct TraceSpan(Option<Box<SdkSpan>>);

impl TraceSpan {
    /// A span of nothing (a phase that is skipped).
    pub fn none() -> Self {
        TraceSpan(None)
    }

    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// One attribute whose value costs nothing to make (a static string, a number).
    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        if let Some(s) = &mut self.0 {
            s.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Attributes built only when recording.
    pub fn attrs<I: IntoIterator<Item = KeyValue>>(&mut self, attrs: impl FnOnce() -> I) {
        if let Some(s) = &mut self.0 {
            s.set_attributes(attrs());
        }
    }

    /// Marks the span failed: `error.type` and an error status.
    pub fn error(&mut self, error_type: impl Into<Cow<'static, str>>) {
        if let Some(s) = &mut self.0 {
            let error_type = error_type.into();
            s.set_status(Status::error(error_type.clone()));
            s.set_attribute(KeyValue::new("error.type", error_type));
        }
    }

    /// The `traceparent` that makes this span the parent of what the upstream records.
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let sc = self.0.as_ref()?.span_context();
        Some(w3c::format(
            u128::from_be_bytes(sc.trace_id().to_bytes()),
            u64::from_be_bytes(sc.span_id().to_bytes()),
        ))
    }
}

/// The connection's TLS handshake, for the span of the first request on it.
#[derive(Debug)]
pub struct Handshake {
    pub started: SystemTime,
    pub ended: SystemTime,
    /// `1.2`, `1.3`.
    pub version: Option<&'static str>,
    pub cipher: Option<&'static str>,
    pub alpn: Option<&'static str>,
    pub server_name: Option<String>,
    /// Set by the connection's first request: only that one waited for the handshake.
    claimed: AtomicBool,
}

impl Handshake {
    /// A handshake begun at `started` and just completed on `session`.
    pub fn of(session: &rustls::ServerConnection, started: SystemTime) -> Self {
        let version = session.protocol_version().and_then(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => Some("1.3"),
            rustls::ProtocolVersion::TLSv1_2 => Some("1.2"),
            _ => None,
        });
        let alpn = session.alpn_protocol().and_then(|p| match p {
            b"h2" => Some("h2"),
            b"http/1.1" => Some("http/1.1"),
            _ => None,
        });
        Handshake {
            started,
            ended: SystemTime::now(),
            version,
            cipher: session
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str()),
            alpn,
            server_name: session.server_name().map(str::to_owned),
            claimed: AtomicBool::new(false),
        }
    }

    #[cfg(test)]
    pub fn of_parts(started: SystemTime, ended: SystemTime) -> Self {
        Handshake {
            started,
            ended,
            version: None,
            cipher: None,
            alpn: None,
            server_name: None,
            claimed: AtomicBool::new(false),
        }
    }

    /// True for the connection's first request only.
    pub(super) fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::Relaxed)
    }

    pub(super) fn attributes(&self) -> Vec<KeyValue> {
        let mut out = vec![KeyValue::new("tls.protocol.name", "tls")];
        let statics = [
            ("tls.protocol.version", self.version),
            ("tls.cipher", self.cipher),
            ("tls.next_protocol", self.alpn),
        ];
        for (key, value) in statics {
            if let Some(v) = value {
                out.push(KeyValue::new(key, v));
            }
        }
        if let Some(name) = &self.server_name {
            out.push(KeyValue::new("tls.client.server_name", name.clone()));
        }
        out
    }
}

/// A trace id as the access log shows it: 32 hex digits, or `-`.
#[derive(Debug, Clone, Copy)]
pub struct TraceIdText(u128);

impl fmt::Display for TraceIdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("-"),
            id => write!(f, "{id:032x}"),
        }
    }
}
