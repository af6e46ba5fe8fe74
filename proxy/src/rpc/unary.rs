//! gRPC response → Connect unary response. The HTTP status depends on the gRPC status,
//! which comes in the trailers, so the (single, size-limited) message is read in full
//! before the client gets its answer.

use super::RpcCall;
use super::reply::{copy_metadata, from_http, status_response};
use super::response::COMPRESS_MIN_BYTES;
use crate::http::body::ResponseBody;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::time::Duration;
use tollgate_filters::rpc::compression::{self, Encoding};
use tollgate_filters::rpc::envelope::FLAG_COMPRESSED;
use tollgate_filters::rpc::{Code, Codec, EnvelopeDecoder, RpcStatus, connect};

/// Reads the upstream's answer and renders it as a Connect unary response.
pub async fn respond(
    call: &RpcCall,
    resp: Response<Incoming>,
    idle: Duration,
) -> Response<ResponseBody> {
    let (parts, body) = resp.into_parts();
    let fail = |status: RpcStatus, meta: &HeaderMap| status_response(call.protocol, &status, meta);
    if parts.status != StatusCode::OK {
        return fail(from_http(parts.status), &HeaderMap::new());
    }
    if let Some(status) = RpcStatus::from_trailers(&parts.headers) {
        return fail(status, &parts.headers);
    }
    let (message, trailers) = match read(call, body, idle, &parts.headers).await {
        Ok(read) => read,
        Err(status) => return fail(status, &parts.headers),
    };
    let status = RpcStatus::from_trailers(&trailers).unwrap_or_else(|| {
        RpcStatus::new(Code::Internal, "upstream trailers carry no grpc-status")
    });
    let mut meta = parts.headers;
    if status.code != Code::Ok {
        copy_metadata(&trailers, &mut meta);
        return fail(status, &meta);
    }
    let Some(message) = message else {
        return fail(
            RpcStatus::new(Code::Unimplemented, "upstream sent no response message"),
            &meta,
        );
    };
    let body = match &call.method {
        Some(m) if call.protocol.codec() == Codec::Json => match m.response_proto_to_json(&message)
        {
            Ok(json) => json,
            Err(e) => {
                return fail(
                    RpcStatus::new(Code::Internal, format!("response JSON: {e}")),
                    &meta,
                );
            }
        },
        _ => message,
    };
    let mut out = Response::new(ResponseBody::empty());
    let h = out.headers_mut();
    copy_metadata(&meta, h);
    connect::trailers_as_headers(&trailers, h);
    h.insert(header::CONTENT_TYPE, call.protocol.response_content_type());
    let body = if call.client_gzip && body.len() >= COMPRESS_MIN_BYTES {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        compression::gzip(&body)
    } else {
        body
    };
    *out.body_mut() = ResponseBody::full(body);
    out
}

/// The one response message (decompressed) and the trailers.
async fn read(
    call: &RpcCall,
    mut body: Incoming,
    idle: Duration,
    headers: &HeaderMap,
) -> Result<(Option<Bytes>, HeaderMap), RpcStatus> {
    let gzip = matches!(
        Encoding::from_header(headers.get("grpc-encoding")),
        Ok(Encoding::Gzip)
    );
    let mut decoder = EnvelopeDecoder::new(call.max_message_bytes);
    let mut message = None;
    let trailers = loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(RpcStatus::new(Code::Unavailable, "upstream stalled")),
            Ok(None) => {
                return Err(RpcStatus::new(
                    Code::Internal,
                    "upstream ended the call without a status",
                ));
            }
            Ok(Some(Err(e))) => {
                return Err(RpcStatus::new(
                    Code::Unavailable,
                    format!("upstream failed: {e}"),
                ));
            }
            Ok(Some(Ok(f))) => f,
        };
        let data = match frame.into_data() {
            Ok(d) => d,
            Err(f) => match f.into_trailers() {
                Ok(t) => break t,
                Err(_) => continue,
            },
        };
        decoder.push(data);
        while let Some(env) = decoder.next_envelope().map_err(|e| {
            RpcStatus::new(Code::ResourceExhausted, format!("upstream message: {e}"))
        })? {
            if message.is_some() {
                return Err(RpcStatus::new(
                    Code::Unimplemented,
                    "upstream sent more than one message to a unary call",
                ));
            }
            let data = if env.flags & FLAG_COMPRESSED != 0 {
                if !gzip {
                    return Err(RpcStatus::new(
                        Code::Internal,
                        "upstream compressed a message without grpc-encoding",
                    ));
                }
                compression::gunzip(&env.data, call.max_message_bytes).map_err(|e| {
                    RpcStatus::new(Code::ResourceExhausted, format!("upstream message: {e}"))
                })?
            } else {
                env.data
            };
            message = Some(data);
        }
    };
    decoder
        .finish()
        .map_err(|e| RpcStatus::new(Code::Internal, format!("upstream: {e}")))?;
    Ok((message, trailers))
}
