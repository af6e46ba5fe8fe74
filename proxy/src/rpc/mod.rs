//! gRPC-Web and Connect at the edge: browser protocols translated to gRPC upstreams.
//!
//! A route with an `rpc` section is a gRPC service. Plain gRPC passes through untouched;
//! gRPC-Web (binary and text) and Connect (unary, GET and streaming, proto or JSON) are
//! translated: [`begin`] reads the request head into an [`RpcCall`], [`request`] turns
//! the client's body into gRPC frames, [`response`] and [`unary`] turn the upstream's
//! frames and trailers back into the client's protocol, and [`reply`] renders a status
//! the proxy decides itself in whichever protocol the client speaks.

pub mod reply;
pub mod request;
pub mod response;
pub mod unary;

use crate::http::errors::ProxyError;
use http::{HeaderMap, Method, header};
use std::time::Duration;
use tollgate_filters::rpc::compression::accepts_gzip;
use tollgate_filters::rpc::{Code, Codec, MethodSchema, RpcProtocol, Schema, connect, timeout};
use tollgate_routing::RpcSpec;

/// One translated call: what the client speaks and what the translation needs.
#[derive(Debug, Clone)]
pub struct RpcCall {
    pub protocol: RpcProtocol,
    /// The method's schema, for JSON and GET calls.
    pub method: Option<MethodSchema>,
    pub max_message_bytes: u64,
    /// The client takes gzip-compressed responses.
    pub client_gzip: bool,
    /// The client's deadline, forwarded as `grpc-timeout`.
    pub deadline: Option<Duration>,
}

impl RpcCall {
    /// Whether anything besides passing bytes through is needed.
    pub fn translates(&self) -> bool {
        !self.protocol.is_grpc()
    }
}

fn refuse(code: Code, message: impl Into<String>) -> ProxyError {
    ProxyError::Rpc(code, message.into())
}

/// Reads the request head of a call to a gRPC service; `path` is the upstream path
/// and `schema` the route's descriptor set, when it names one.
pub fn begin(
    spec: &RpcSpec,
    schema: Option<&Schema>,
    protocol: Option<RpcProtocol>,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
) -> Result<RpcCall, ProxyError> {
    let Some(protocol) = protocol else {
        return Err(ProxyError::UnsupportedMediaType);
    };
    let connect = matches!(
        protocol,
        RpcProtocol::ConnectUnary { .. } | RpcProtocol::ConnectStream { .. }
    );
    if (connect && !spec.connect)
        || (matches!(protocol, RpcProtocol::GrpcWeb { .. }) && !spec.grpc_web)
    {
        return Err(ProxyError::UnsupportedMediaType);
    }
    let get = matches!(protocol, RpcProtocol::ConnectUnary { get: true, .. });
    if *method != Method::POST && !get {
        return Err(ProxyError::MethodNotAllowed);
    }
    let mut deadline = None;
    if connect {
        if !get {
            connect::check_protocol_version(headers, spec.require_connect_protocol_version)
                .map_err(|m| refuse(Code::InvalidArgument, m))?;
        }
        if let Some(v) = headers.get("connect-timeout-ms") {
            deadline = Some(
                timeout::parse_connect_timeout(v)
                    .ok_or_else(|| refuse(Code::InvalidArgument, "invalid connect-timeout-ms"))?,
            );
        }
    } else if let Some(v) = headers.get("grpc-timeout") {
        deadline = timeout::parse_grpc_timeout(v);
    }
    let json = protocol.codec() == Codec::Json;
    // Only JSON and GET need the method's schema; binary calls skip the lookup.
    let schema_method = schema.filter(|_| json || get).and_then(|s| s.method(path));
    match (&schema_method, schema.is_some()) {
        (None, true) if json || get => {
            return Err(refuse(
                Code::Unimplemented,
                format!("unknown method {path}"),
            ));
        }
        (None, false) if json => {
            return Err(refuse(
                Code::Unimplemented,
                "JSON needs a descriptor set on this route; use the proto codec",
            ));
        }
        (Some(m), _) if get && !m.no_side_effects() => {
            return Err(refuse(
                Code::Unimplemented,
                "GET is only for methods marked idempotency_level = NO_SIDE_EFFECTS",
            ));
        }
        _ => {}
    }
    let client_gzip = match protocol {
        RpcProtocol::ConnectUnary { .. } => accepts_gzip(headers.get(header::ACCEPT_ENCODING)),
        RpcProtocol::ConnectStream { .. } => accepts_gzip(headers.get("connect-accept-encoding")),
        _ => false,
    };
    Ok(RpcCall {
        protocol,
        method: schema_method,
        max_message_bytes: spec.max_message_bytes,
        client_gzip,
        deadline,
    })
}
