//! Distributed tracing at the edge: W3C Trace Context propagation, always, and
//! OpenTelemetry spans of the request path, exported over OTLP/gRPC when `[tracing]`
//! is configured.
//!
//! Propagation (with or without `[tracing]`): a valid `traceparent` (and its
//! `tracestate`) goes upstream unchanged unless the proxy records the request; an
//! invalid one is removed with its `tracestate`. A recorded request's upstream gets a
//! `traceparent` naming the upstream-attempt span as the parent.
//!
//! Sampling is decided once per request, at its start ([`Tracing::begin`]): the
//! caller's sampled flag when a valid `traceparent` comes in (`parent_based`), else
//! `sample_ratio`. An unrecorded request creates no span object.
//!
//! The spans of a recorded request: the server span (`GET <route id>`, from head
//! read to the end of the response body) and its children: `tls handshake` (only on
//! a connection's first request, the one that waited for it), `route`, `auth`,
//! `admission`, `translate` (gRPC-Web and Connect request translation), and one
//! client span per upstream try. They never carry credentials: no header values but
//! the host, no query string, no key or token.
//!
//! This module must not block a request: spans are queued to the SDK's batch
//! processor, which exports on its own thread and drops what overflows its queue.

mod config;
mod request;
#[doc(hidden)]
pub mod w3c;

pub use config::TracingConfig;
pub use request::{Handshake, RequestTrace, TraceSpan};
pub use w3c::{TRACEPARENT, TRACESTATE};

use crate::http::handler::ConnInfo;
use crate::upstream::cluster::Cluster;
use crate::upstream::endpoint::Endpoint;
use http::{Method, Request, Version};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tollgate_filters::rpc::RpcProtocol;
use w3c::Incoming;

/// The span exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("[tracing] exporter: {0}")]
pub struct TracingError(#[from] opentelemetry_otlp::ExporterBuildError);

/// The proxy's tracing: off, or a tracer exporting to a collector.
#[derive(Default)]
pub struct Tracing(Option<Box<Recorder>>);

struct Recorder {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    ratio: f64,
    parent_based: bool,
    shutdown_timeout: Duration,
}

impl Tracing {
    /// Starts the exporter of `[tracing]`; off without it. Needs the Tokio runtime
    /// (the gRPC channel's task runs on it).
    pub fn start(config: Option<&TracingConfig>) -> Result<Self, TracingError> {
        let Some(cfg) = config else {
            return Ok(Tracing(None));
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(cfg.otlp_endpoint.as_str())
            .with_timeout(cfg.export_timeout())
            .build()?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queue_size.max(1))
            .with_max_export_batch_size(
                cfg.max_export_batch_size
                    .clamp(1, cfg.max_queue_size.max(1)),
            )
            .with_scheduled_delay(cfg.export_interval())
            .build();
        let resource = Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
            // Sampling is decided before any span exists ([`Tracing::begin`]).
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(resource)
            .build();
        tracing::info!(
            endpoint = cfg.otlp_endpoint.as_str(),
            sample_ratio = cfg.sample_ratio.get(),
            "exporting spans over OTLP"
        );
        Ok(Tracing::with_provider(
            provider,
            cfg.sample_ratio.get(),
            cfg.parent_based,
            cfg.export_timeout(),
        ))
    }

    fn with_provider(
        provider: SdkTracerProvider,
        ratio: f64,
        parent_based: bool,
        shutdown_timeout: Duration,
    ) -> Self {
        let scope = InstrumentationScope::builder("tollgate-proxy")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Tracing(Some(Box::new(Recorder {
            provider,
            tracer,
            ratio,
            parent_based,
            shutdown_timeout,
        })))
    }

    /// Spans are exported (some requests may record).
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Checks the request's trace context (an invalid one is removed), decides
    /// whether the request records, and if so starts its server span.
    pub fn begin<B>(
        &self,
        req: &mut Request<B>,
        conn: &ConnInfo,
        request_id: &http::HeaderValue,
    ) -> RequestTrace {
        let parent = match w3c::incoming(req.headers()) {
            Incoming::Valid(p) => Some(p),
            Incoming::Invalid => {
                req.headers_mut().remove(&TRACEPARENT);
                req.headers_mut().remove(&TRACESTATE);
                None
            }
            // A `tracestate` alone is left as it is: meaningless without a `traceparent`
            // (its receiver ignores it), and not worth a second lookup on every request.
            Incoming::Absent => None,
        };
        let caller_trace = parent.map_or(0, |p| p.trace_id);
        let Some(rec) = &self.0 else {
            return RequestTrace::unrecorded(caller_trace);
        };
        // Only the connection's first request waited for its handshake, sampled or not.
        let handshake = conn.handshake.as_deref().filter(|h| h.claim());
        let sampled = match parent {
            Some(p) if rec.parent_based => p.sampled(),
            Some(p) => ratio_admits_trace(rec.ratio, p.trace_id),
            None => rec.ratio >= 1.0 || (rec.ratio > 0.0 && fastrand::f64() < rec.ratio),
        };
        if !sampled {
            return RequestTrace::unrecorded(caller_trace);
        }
        let parent_cx = match parent {
            Some(p) => {
                let state = caller_state(req.headers());
                let sc = SpanContext::new(
                    TraceId::from(p.trace_id),
                    SpanId::from(p.parent_id),
                    TraceFlags::new(p.flags),
                    true,
                    state,
                );
                Context::new().with_remote_span_context(sc)
            }
            None => Context::new(),
        };
        let method = method_name(req.method());
        let attrs = server_attributes(req, conn, method, request_id);
        let span = rec
            .tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .with_attributes(attrs)
            .start_with_context(&rec.tracer, &parent_cx);
        let trace = RequestTrace::recorded(rec.tracer.clone(), span);
        if let Some(h) = handshake {
            trace.past("tls handshake", h.started, h.ended, h.attributes());
        }
        trace
    }

    /// Sends what is queued and stops the exporter (at shutdown).
    pub async fn shutdown(&self) {
        let Some(rec) = &self.0 else { return };
        let provider = rec.provider.clone();
        let timeout = rec.shutdown_timeout;
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        match done {
            Ok(Ok(())) => tracing::info!("spans flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing spans at shutdown failed"),
            Err(e) => tracing::warn!(error = %e, "flushing spans at shutdown failed"),
        }
    }
}

/// The caller's `tracestate` as the parent span context carries it: the header lines
/// joined, empty when absent or not a list OpenTelemetry accepts.
#[doc(hidden)]
pub fn caller_state(headers: &http::HeaderMap) -> TraceState {
    w3c::tracestate(headers.get_all(&TRACESTATE))
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default()
}

/// The OpenTelemetry `TraceIdRatioBased` rule, so every service using it keeps or
/// drops the same traces: the trace id's low 63 bits under the ratio's share.
fn ratio_admits_trace(ratio: f64, trace_id: u128) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    ((trace_id as u64) >> 1) < bound
}

/// What the route span and the request span say about the route matched.
pub fn route_attributes(route: &Arc<str>, app: &str) -> [KeyValue; 2] {
    [
        KeyValue::new("http.route", route.clone()),
        KeyValue::new("tollgate.app.id", app.to_owned()),
    ]
}

/// A gRPC call (`/package.Service/Method`) and the protocol the client speaks.
pub fn rpc_attributes(protocol: RpcProtocol, path: &str) -> Vec<KeyValue> {
    let speaks = match protocol {
        RpcProtocol::Grpc => "grpc",
        RpcProtocol::GrpcWeb { text: false } => "grpc-web",
        RpcProtocol::GrpcWeb { text: true } => "grpc-web-text",
        RpcProtocol::ConnectUnary { .. } | RpcProtocol::ConnectStream { .. } => "connect",
    };
    let mut out = vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("tollgate.rpc.protocol", speaks),
        KeyValue::new("tollgate.rpc.codec", protocol.codec().name()),
    ];
    if let Some((service, method)) = path.trim_start_matches('/').split_once('/') {
        out.push(KeyValue::new("rpc.service", service.to_owned()));
        out.push(KeyValue::new("rpc.method", method.to_owned()));
    }
    out
}

/// One try sent upstream: where to (the endpoint as configured and the address
/// dialled), which try, over which protocol.
pub fn attempt_attributes(
    method: &Method,
    cluster: &Cluster,
    endpoint: &Endpoint,
    resend: u32,
    h2: bool,
) -> Vec<KeyValue> {
    let authority = &endpoint.authority;
    let mut out = Vec::with_capacity(10);
    out.push(KeyValue::new("http.request.method", method_name(method)));
    out.push(KeyValue::new("server.address", authority.host().to_owned()));
    if let Some(port) = authority.port_u16() {
        out.push(KeyValue::new("server.port", i64::from(port)));
    }
    // The address as configured, when it is an IP (a name is resolved by the connector).
    if let Some((host, port)) = endpoint.address.rsplit_once(':') {
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        if ip.parse::<std::net::IpAddr>().is_ok() {
            out.push(KeyValue::new("network.peer.address", ip.to_owned()));
            if let Ok(port) = port.parse::<u16>() {
                out.push(KeyValue::new("network.peer.port", i64::from(port)));
            }
        }
    }
    out.push(KeyValue::new(
        "url.scheme",
        cluster.scheme.as_str().to_owned(),
    ));
    out.push(KeyValue::new(
        "network.protocol.version",
        if h2 { "2" } else { "1.1" },
    ));
    out.push(KeyValue::new(
        "http.request.resend_count",
        i64::from(resend),
    ));
    out.push(KeyValue::new(
        "tollgate.upstream.cluster",
        cluster.name.clone(),
    ));
    out
}

/// A status code as an attribute value; the common error codes without allocating.
pub fn status_text(status: u16) -> Cow<'static, str> {
    match status {
        400 => "400".into(),
        401 => "401".into(),
        403 => "403".into(),
        404 => "404".into(),
        429 => "429".into(),
        500 => "500".into(),
        502 => "502".into(),
        503 => "503".into(),
        504 => "504".into(),
        other => other.to_string().into(),
    }
}

/// The method as the semantic conventions name it (`_OTHER` for non-standard ones).
pub fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// What the request span says about the request: no header values but the host, no
/// query string (credentials travel in both).
fn server_attributes<B>(
    req: &Request<B>,
    conn: &ConnInfo,
    method: &'static str,
    request_id: &http::HeaderValue,
) -> Vec<KeyValue> {
    let mut out = Vec::with_capacity(12);
    out.push(KeyValue::new("http.request.method", method));
    out.push(KeyValue::new("url.path", req.uri().path().to_owned()));
    out.push(KeyValue::new(
        "url.scheme",
        if conn.tls { "https" } else { "http" },
    ));
    let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    if let Some(host) = host {
        let name = tollgate_routing::host::normalize(host).into_owned();
        out.push(KeyValue::new("server.address", name));
    }
    out.push(KeyValue::new("server.port", i64::from(conn.local_port)));
    if let Ok(ip) = conn.client_ip.to_str() {
        out.push(KeyValue::new("client.address", ip.to_owned()));
    }
    out.push(KeyValue::new("client.port", i64::from(conn.client.port())));
    out.push(KeyValue::new("network.protocol.name", "http"));
    let version: Cow<'static, str> = match req.version() {
        Version::HTTP_2 => "2".into(),
        Version::HTTP_10 => "1.0".into(),
        _ => "1.1".into(),
    };
    out.push(KeyValue::new("network.protocol.version", version));
    if let Ok(id) = request_id.to_str() {
        out.push(KeyValue::new("tollgate.request_id", id.to_owned()));
    }
    out
}

#[cfg(test)]
mod tests;
