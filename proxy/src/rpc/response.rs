//! gRPC response → gRPC-Web or Connect streaming response: the head rewritten, the
//! messages passed through (or transcoded to JSON), and the upstream's trailers, reset
//! or early end turned into the protocol's final frame, so the client always learns
//! how the call ended.

use super::RpcCall;
use super::reply::{copy_metadata, final_frame, from_http, status_response};
use crate::http::body::{BodyError, Exchange, ResponseBody};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tollgate_filters::rpc::compression::{self, Encoding};
use tollgate_filters::rpc::envelope::{self, FLAG_COMPRESSED};
use tollgate_filters::rpc::{
    Code, Codec, EnvelopeDecoder, MethodSchema, RpcProtocol, RpcStatus, base64_stream,
};

/// Messages at least this large are gzipped for clients that accept it.
pub const COMPRESS_MIN_BYTES: usize = 1024;

/// Turns the upstream's response into the client's, for the streaming protocols.
pub fn respond(
    call: &RpcCall,
    resp: Response<Incoming>,
    idle: Duration,
    exchange: Option<Arc<Exchange>>,
) -> Response<ResponseBody> {
    let protocol = call.protocol;
    let (parts, body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return status_response(protocol, &from_http(parts.status), &HeaderMap::new());
    }
    if let Some(status) = RpcStatus::from_trailers(&parts.headers) {
        // Trailers-only: the call ended before any message.
        return status_response(protocol, &status, &parts.headers);
    }
    let upstream_gzip = matches!(
        Encoding::from_header(parts.headers.get("grpc-encoding")),
        Ok(Encoding::Gzip)
    );
    let json = protocol.codec() == Codec::Json;
    let mut out = Response::new(ResponseBody::empty());
    let h = out.headers_mut();
    copy_metadata(&parts.headers, h);
    h.insert(header::CONTENT_TYPE, protocol.response_content_type());
    match protocol {
        RpcProtocol::GrpcWeb { .. } => {
            // gRPC-Web frames are gRPC frames: compression passes through as it is.
            if let Some(v) = parts.headers.get("grpc-encoding") {
                h.insert("grpc-encoding", v.clone());
            }
        }
        RpcProtocol::ConnectStream { .. } if !json && upstream_gzip => {
            h.insert("connect-content-encoding", HeaderValue::from_static("gzip"));
        }
        RpcProtocol::ConnectStream { .. } if json && call.client_gzip => {
            h.insert("connect-content-encoding", HeaderValue::from_static("gzip"));
        }
        _ => {}
    }
    let stream = RpcStream {
        upstream: Some(body),
        protocol,
        decoder: json.then(|| EnvelopeDecoder::new(call.max_message_bytes)),
        method: call.method.clone().filter(|_| json),
        upstream_gzip,
        client_gzip: call.client_gzip,
        limit: call.max_message_bytes,
        done: false,
    };
    *out.body_mut() = ResponseBody::rpc(stream, idle, exchange);
    out
}

/// The upstream body, translated frame by frame for a gRPC-Web or Connect client.
#[derive(Debug)]
pub struct RpcStream {
    upstream: Option<Incoming>,
    protocol: RpcProtocol,
    /// Present when messages are decoded one by one (JSON transcoding).
    decoder: Option<EnvelopeDecoder>,
    method: Option<MethodSchema>,
    upstream_gzip: bool,
    client_gzip: bool,
    limit: u64,
    done: bool,
}

impl RpcStream {
    /// The next frame for the client; ends after the final frame.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let Some(up) = self.upstream.as_mut() else {
                return Poll::Ready(None);
            };
            let (status, trailers) = match ready!(Pin::new(up).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => match self.on_data(data) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(self.wrap(out))))),
                        Err(status) => (status, HeaderMap::new()),
                    },
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            let status = match self.decoder.as_ref().map(|d| d.finish()) {
                                Some(Err(e)) => {
                                    RpcStatus::new(Code::Internal, format!("upstream: {e}"))
                                }
                                _ => RpcStatus::from_trailers(&trailers).unwrap_or_else(|| {
                                    RpcStatus::new(
                                        Code::Internal,
                                        "upstream trailers carry no grpc-status",
                                    )
                                }),
                            };
                            (status, trailers)
                        }
                        Err(_) => continue,
                    },
                },
                Some(Err(e)) => (reset_status(&e), HeaderMap::new()),
                None => (
                    RpcStatus::new(Code::Internal, "upstream ended the stream without a status"),
                    HeaderMap::new(),
                ),
            };
            return Poll::Ready(Some(Ok(Frame::data(self.end(&status, &trailers)))));
        }
    }

    /// Ends the stream with `status`, cancelling the upstream stream if it still runs.
    pub fn end(&mut self, status: &RpcStatus, trailers: &HeaderMap) -> Bytes {
        self.upstream = None;
        self.done = true;
        final_frame(self.protocol, status, trailers)
    }

    fn wrap(&self, out: Bytes) -> Bytes {
        match self.protocol {
            RpcProtocol::GrpcWeb { text: true } => base64_stream::encode(&out),
            _ => out,
        }
    }

    /// Bytes for the client from one upstream data chunk; a status when the call must end.
    fn on_data(&mut self, data: Bytes) -> Result<Bytes, RpcStatus> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(data);
        };
        decoder.push(data);
        let mut out = BytesMut::new();
        while let Some(env) = decoder.next_envelope().map_err(|e| {
            RpcStatus::new(Code::ResourceExhausted, format!("upstream message: {e}"))
        })? {
            let proto = if env.flags & FLAG_COMPRESSED != 0 {
                if !self.upstream_gzip {
                    return Err(RpcStatus::new(
                        Code::Internal,
                        "upstream compressed a message without grpc-encoding",
                    ));
                }
                compression::gunzip(&env.data, self.limit).map_err(|e| {
                    RpcStatus::new(Code::ResourceExhausted, format!("upstream message: {e}"))
                })?
            } else {
                env.data
            };
            let msg = match &self.method {
                Some(m) => m
                    .response_proto_to_json(&proto)
                    .map_err(|e| RpcStatus::new(Code::Internal, format!("response JSON: {e}")))?,
                None => proto,
            };
            if self.client_gzip && msg.len() >= COMPRESS_MIN_BYTES {
                let z = compression::gzip(&msg);
                out.extend_from_slice(&envelope::header(FLAG_COMPRESSED, z.len()));
                out.extend_from_slice(&z);
            } else {
                out.extend_from_slice(&envelope::header(0, msg.len()));
                out.extend_from_slice(&msg);
            }
        }
        Ok(out.freeze())
    }

    pub fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// How the client learns of an upstream stream that broke off.
fn reset_status(e: &hyper::Error) -> RpcStatus {
    let cancelled = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason)
        == Some(h2::Reason::CANCEL);
    if cancelled {
        RpcStatus::new(Code::Canceled, "upstream cancelled the stream")
    } else {
        RpcStatus::new(Code::Unavailable, format!("upstream stream failed: {e}"))
    }
}
