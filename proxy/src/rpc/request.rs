//! Client request → gRPC request: the head rewritten for a gRPC upstream, and the body
//! as gRPC frames (passed through, base64-decoded, transcoded from JSON, or built from
//! a Connect unary body or GET query).

use super::{RpcCall, refuse};
use crate::http::body::{Exchange, RequestBody};
use crate::http::client_body::{ClientBody, ClientFault};
use crate::http::errors::ProxyError;
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderValue, Method, header};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tollgate_filters::rpc::base64_stream::Base64Decoder;
use tollgate_filters::rpc::compression::{self, Encoding};
use tollgate_filters::rpc::envelope::{self, EnvelopeScanner, FLAG_COMPRESSED, REQUEST_FLAGS};
use tollgate_filters::rpc::{
    Code, Codec, EnvelopeDecoder, MethodSchema, RpcProtocol, connect, timeout,
};

static GRPC_PROTO: HeaderValue = HeaderValue::from_static("application/grpc+proto");
static TRAILERS: HeaderValue = HeaderValue::from_static("trailers");

/// Rewrites `parts` for the gRPC upstream and returns the body to send it.
pub async fn translate(
    call: &RpcCall,
    parts: &mut Parts,
    body: ClientBody,
    max_body: Option<u64>,
    exchange: Option<Arc<Exchange>>,
    idle: Duration,
) -> Result<RequestBody, ProxyError> {
    let h = &mut parts.headers;
    if let Some(v) = h.get("connect-timeout-ms") {
        let grpc =
            timeout::connect_to_grpc_timeout(v).map_err(|m| refuse(Code::InvalidArgument, m))?;
        h.insert("grpc-timeout", grpc);
    }
    let stream_encoding = h.get("connect-content-encoding").cloned();
    let unary_encoding = h.get(header::CONTENT_ENCODING).cloned();
    connect::strip_request_headers(h);
    h.remove(header::CONTENT_LENGTH);
    h.remove("x-grpc-web");
    h.insert(header::CONTENT_TYPE, GRPC_PROTO.clone());
    h.insert(header::TE, TRAILERS.clone());
    let body = match call.protocol {
        RpcProtocol::Grpc => RequestBody::new(body, max_body, exchange),
        RpcProtocol::GrpcWeb { text } => {
            // Compressed messages are inflated here: the upstream need not support gzip.
            let encoding = Encoding::from_header(h.remove("grpc-encoding").as_ref())
                .map_err(|m| refuse(Code::Unimplemented, m))?;
            h.remove("grpc-accept-encoding");
            let messages =
                (encoding == Encoding::Gzip).then(|| Messages::new(call, None, encoding));
            let t = Transform {
                base64: text.then(Base64Decoder::new),
                scan: messages
                    .is_none()
                    .then(|| EnvelopeScanner::new(REQUEST_FLAGS)),
                messages,
            };
            RequestBody::new(body, max_body, exchange).with_transform(t)
        }
        RpcProtocol::ConnectStream { codec } => {
            let encoding = Encoding::from_header(stream_encoding.as_ref())
                .map_err(|m| refuse(Code::Unimplemented, m))?;
            let method = call.method.clone().filter(|_| codec == Codec::Json);
            let messages = (method.is_some() || encoding == Encoding::Gzip)
                .then(|| Messages::new(call, method, encoding));
            let t = Transform {
                base64: None,
                scan: messages
                    .is_none()
                    .then(|| EnvelopeScanner::new(REQUEST_FLAGS)),
                messages,
            };
            RequestBody::new(body, max_body, exchange).with_transform(t)
        }
        RpcProtocol::ConnectUnary { get: false, .. } => {
            let encoding = Encoding::from_header(unary_encoding.as_ref())
                .map_err(|m| refuse(Code::Unimplemented, m))?;
            let limit = max_body.unwrap_or(u64::MAX).min(call.max_message_bytes);
            let raw = collect(body, limit, idle).await?;
            RequestBody::once(unary_message(call, encoding, &raw)?)
        }
        RpcProtocol::ConnectUnary { get: true, .. } => {
            let query = parts.uri.query().unwrap_or("");
            let q = tollgate_filters::rpc::protocol::parse_connect_get(query)
                .map_err(|m| refuse(Code::InvalidArgument, m))?;
            let encoding = Encoding::from_header(
                q.compression
                    .as_deref()
                    .and_then(|c| HeaderValue::from_str(c).ok())
                    .as_ref(),
            )
            .map_err(|m| refuse(Code::Unimplemented, m))?;
            let message = unary_message(call, encoding, &q.message)?;
            parts.method = Method::POST;
            parts.uri = strip_query(&parts.uri)?;
            RequestBody::once(message)
        }
    };
    Ok(body)
}

/// A Connect unary message as one uncompressed protobuf gRPC frame.
fn unary_message(call: &RpcCall, encoding: Encoding, raw: &[u8]) -> Result<Bytes, ProxyError> {
    let limit = call.max_message_bytes;
    let plain = match encoding {
        Encoding::Identity => Bytes::copy_from_slice(raw),
        Encoding::Gzip => compression::gunzip(raw, limit)
            .map_err(|e| refuse(Code::InvalidArgument, format!("request body: {e}")))?,
    };
    let proto = match &call.method {
        Some(m) if call.protocol.codec() == Codec::Json => m
            .request_json_to_proto(&plain)
            .map_err(|e| refuse(Code::InvalidArgument, format!("request JSON: {e}")))?,
        _ => plain,
    };
    if proto.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(envelope::encode(0, &proto))
}

fn too_large(limit: u64) -> ProxyError {
    refuse(
        Code::ResourceExhausted,
        format!("message exceeds the limit of {limit} bytes"),
    )
}

/// Reads a whole (unary) request body, refusing more than `limit` bytes.
async fn collect(mut body: ClientBody, limit: u64, idle: Duration) -> Result<Bytes, ProxyError> {
    let mut out = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ProxyError::client_body(ClientFault::Timeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ProxyError::client_body(ClientFault::of(&e))),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() as u64 + data.len() as u64 > limit {
                return Err(too_large(limit));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

fn strip_query(uri: &http::Uri) -> Result<http::Uri, ProxyError> {
    let mut b = http::Uri::builder();
    if let Some(s) = uri.scheme() {
        b = b.scheme(s.clone());
    }
    if let Some(a) = uri.authority() {
        b = b.authority(a.clone());
    }
    b.path_and_query(uri.path())
        .build()
        .map_err(|_| ProxyError::BadRequest("invalid path"))
}

/// Rewrites request body bytes on their way upstream: base64 text decoded, then
/// messages inflated and transcoded from JSON, each stage only where needed; messages
/// passed on as they are still have their envelope flags checked.
#[derive(Debug, Default)]
pub struct Transform {
    base64: Option<Base64Decoder>,
    messages: Option<Messages>,
    scan: Option<EnvelopeScanner>,
}

/// Message by message: gzip inflated, JSON transcoded, re-framed uncompressed.
#[derive(Debug)]
struct Messages {
    decoder: EnvelopeDecoder,
    /// Present for JSON codecs.
    method: Option<MethodSchema>,
    encoding: Encoding,
    limit: u64,
}

impl Messages {
    fn new(call: &RpcCall, method: Option<MethodSchema>, encoding: Encoding) -> Self {
        Messages {
            decoder: EnvelopeDecoder::new(call.max_message_bytes).allow_flags(REQUEST_FLAGS),
            method,
            encoding,
            limit: call.max_message_bytes,
        }
    }

    fn data(&mut self, chunk: Bytes) -> Result<Bytes, String> {
        self.decoder.push(chunk);
        let mut out = BytesMut::new();
        while let Some(env) = self.decoder.next_envelope().map_err(|e| e.to_string())? {
            let plain = if env.flags & FLAG_COMPRESSED != 0 {
                if self.encoding != Encoding::Gzip {
                    return Err("a compressed message without a message encoding".into());
                }
                compression::gunzip(&env.data, self.limit).map_err(|e| e.to_string())?
            } else {
                env.data
            };
            let proto = match &self.method {
                Some(m) => m
                    .request_json_to_proto(&plain)
                    .map_err(|e| format!("request JSON: {e}"))?,
                None => plain,
            };
            out.extend_from_slice(&envelope::header(0, proto.len()));
            out.extend_from_slice(&proto);
        }
        Ok(out.freeze())
    }
}

impl Transform {
    /// Whether any stage is needed.
    pub fn is_noop(&self) -> bool {
        self.base64.is_none() && self.messages.is_none() && self.scan.is_none()
    }

    /// The bytes to send upstream for `chunk` (possibly none yet).
    pub fn data(&mut self, chunk: Bytes) -> Result<Bytes, String> {
        let chunk = match &mut self.base64 {
            Some(d) => d.push(&chunk).map_err(|e| e.to_string())?,
            None => chunk,
        };
        if let Some(s) = &mut self.scan {
            s.push(&chunk).map_err(|e| e.to_string())?;
        }
        match &mut self.messages {
            Some(m) if !chunk.is_empty() => m.data(chunk),
            _ => Ok(chunk),
        }
    }

    /// Called at the end of the body: refuses a partial message.
    pub fn finish(&self) -> Result<(), String> {
        if let Some(d) = &self.base64 {
            d.finish().map_err(|e| e.to_string())?;
        }
        if let Some(m) = &self.messages {
            m.decoder.finish().map_err(|e| e.to_string())?;
        }
        if let Some(s) = &self.scan {
            s.finish().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
