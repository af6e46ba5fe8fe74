//! A final status rendered in the client's protocol: trailers-only gRPC, a gRPC-Web
//! trailer frame, a Connect unary error body, or a Connect end-of-stream message.

use crate::http::body::ResponseBody;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use tollgate_filters::rpc::base64_stream;
use tollgate_filters::rpc::envelope::{self, FLAG_END_STREAM};
use tollgate_filters::rpc::{Code, RpcProtocol, RpcStatus, connect, grpc_web};

static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The whole response for a call that ends with `status` and no messages. `metadata`
/// holds the upstream's headers and trailers to pass on (may be empty).
pub fn status_response(
    protocol: RpcProtocol,
    status: &RpcStatus,
    metadata: &HeaderMap,
) -> Response<ResponseBody> {
    let mut resp = match protocol {
        RpcProtocol::Grpc => {
            let mut r = Response::new(ResponseBody::empty());
            copy_metadata(metadata, r.headers_mut());
            status.write_trailers(r.headers_mut());
            r
        }
        RpcProtocol::GrpcWeb { .. } | RpcProtocol::ConnectStream { .. } => {
            // The metadata of a trailers-only answer stays in the headers.
            let mut r = Response::new(ResponseBody::full(final_frame(
                protocol,
                status,
                &HeaderMap::new(),
            )));
            copy_metadata(metadata, r.headers_mut());
            r
        }
        RpcProtocol::ConnectUnary { .. } => {
            let mut r = Response::new(ResponseBody::full(connect::error_json(status)));
            *r.status_mut() = status.code.connect_http_status();
            copy_metadata(metadata, r.headers_mut());
            r.headers_mut().insert(header::CONTENT_TYPE, JSON.clone());
            return r;
        }
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, protocol.response_content_type());
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// The last body frame of a stream in a framed browser protocol: the gRPC-Web trailer
/// frame (base64 for text) or the Connect end-of-stream message. Empty for gRPC and
/// Connect unary, which end otherwise.
pub fn final_frame(protocol: RpcProtocol, status: &RpcStatus, trailers: &HeaderMap) -> Bytes {
    match protocol {
        RpcProtocol::GrpcWeb { text } => {
            let mut h = HeaderMap::new();
            copy_metadata(trailers, &mut h);
            status.write_trailers(&mut h);
            let frame = grpc_web::trailer_frame(&h);
            if text {
                base64_stream::encode(&frame)
            } else {
                frame
            }
        }
        RpcProtocol::ConnectStream { .. } => {
            envelope::encode(FLAG_END_STREAM, &connect::end_stream_json(status, trailers))
        }
        RpcProtocol::Grpc | RpcProtocol::ConnectUnary { .. } => Bytes::new(),
    }
}

/// Copies application metadata: everything but framing and gRPC's reserved headers.
pub fn copy_metadata(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let n = name.as_str();
        let reserved = n.starts_with("grpc-")
            || n.starts_with("connect-")
            || name == header::CONTENT_TYPE
            || name == header::CONTENT_LENGTH
            || name == header::CONTENT_ENCODING
            || name == header::TRAILER
            || name == header::TE
            || name == header::TRANSFER_ENCODING;
        if !reserved {
            to.append(name.clone(), value.clone());
        }
    }
}

/// The status for an upstream answer that is not gRPC (HTTP error, wrong framing).
pub fn from_http(status: StatusCode) -> RpcStatus {
    RpcStatus::new(
        Code::from_http_status(status),
        format!("upstream answered HTTP {}", status.as_u16()),
    )
}
