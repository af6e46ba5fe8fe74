//! gRPC response → gRPC-Web or Connect streaming response: the head rewritten, the
//! messages passed through (or transcoded to JSON), and the upstream's trailers, reset
//! or early end turned into the protocol's final frame, so the client always learns
//! how the call ended.

use super::RpcCall;
use super::reply::{copy_metadata, final_frame, from_http, status_response};
use crate::http::body::{BodyError, ResponseBody};
use crate::http::stream_stats::{EnvelopeCounter, RpcEnd};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tollgate_filters::filter::{StreamFilter, Verdict};
use tollgate_filters::rpc::compression::{self, Encoding};
use tollgate_filters::rpc::envelope::{self, FLAG_COMPRESSED};
use tollgate_filters::rpc::{
    Code, Codec, EnvelopeDecoder, MethodSchema, RpcProtocol, RpcStatus, base64_stream,
};

/// Messages at least this large are gzipped for clients that accept it.
pub const COMPRESS_MIN_BYTES: usize = 1024;

/// What [`translate`] makes of an upstream answer.
pub enum Translated {
    /// The client's response head and the stream of its body frames.
    Stream(Response<ResponseBody>, Box<RpcStream>),
    /// The whole answer: the call ended before any message, with this status.
    Answered(Response<ResponseBody>, RpcEnd),
}

/// The client's response head and the stream of its body frames, or the whole answer.
/// With `per_message`, each data frame the stream yields is exactly one message, or
/// the final frame.
pub fn translate(
    call: &RpcCall,
    resp: Response<Incoming>,
    mut filter: Option<Box<dyn StreamFilter>>,
    per_message: bool,
) -> Translated {
    let protocol = call.protocol;
    let (parts, body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return Translated::Answered(
            status_response(protocol, &from_http(parts.status), &HeaderMap::new()),
            RpcEnd::Error,
        );
    }
    if let Some(status) = RpcStatus::from_trailers(&parts.headers) {
        // Trailers-only: the call ended before any message.
        let end = RpcEnd::of_grpc_status(parts.headers.get("grpc-status"));
        return Translated::Answered(status_response(protocol, &status, &parts.headers), end);
    }
    if let Some(f) = filter.as_mut() {
        f.on_response_head(&parts);
    }
    let upstream_gzip = matches!(
        Encoding::from_header(parts.headers.get("grpc-encoding")),
        Ok(Encoding::Gzip)
    );
    let json = protocol.codec() == Codec::Json;
    // Messages are decoded one by one only when something needs them whole.
    let decode = json || filter.is_some() || per_message;
    let client_gzip = call.client_gzip && decode && protocol.is_connect();
    let mut out = Response::new(ResponseBody::empty());
    let h = out.headers_mut();
    copy_metadata(&parts.headers, h);
    h.insert(header::CONTENT_TYPE, protocol.response_content_type());
    if !decode && upstream_gzip {
        // Passed through as they are, compressed frames keep their encoding.
        let name = if protocol.is_connect() {
            "connect-content-encoding"
        } else {
            "grpc-encoding"
        };
        h.insert(name, HeaderValue::from_static("gzip"));
    } else if client_gzip {
        h.insert("connect-content-encoding", HeaderValue::from_static("gzip"));
    }
    let stream = RpcStream {
        upstream: Some(body),
        protocol,
        decoder: decode.then(|| EnvelopeDecoder::new(call.max_message_bytes)),
        method: call.method.clone().filter(|_| json),
        upstream_gzip,
        client_gzip,
        limit: call.max_message_bytes,
        filter,
        held: None,
        ending: None,
        done: false,
        per_message,
        counter: EnvelopeCounter::default(),
        messages: 0,
        end_kind: RpcEnd::Unknown,
    };
    Translated::Stream(out, Box::new(stream))
}

/// The upstream body, translated frame by frame for the client.
pub struct RpcStream {
    upstream: Option<Incoming>,
    protocol: RpcProtocol,
    /// Present when messages are decoded one by one (JSON, or a filter).
    decoder: Option<EnvelopeDecoder>,
    method: Option<MethodSchema>,
    upstream_gzip: bool,
    client_gzip: bool,
    limit: u64,
    filter: Option<Box<dyn StreamFilter>>,
    /// A decoded message waiting for the filter's verdict.
    held: Option<Bytes>,
    /// The status to end with once what was already approved is out.
    ending: Option<RpcStatus>,
    done: bool,
    /// One message per data frame (resumable streams number them).
    per_message: bool,
    /// Counts the messages sent, from the envelopes before any text encoding.
    counter: EnvelopeCounter,
    messages: u64,
    end_kind: RpcEnd,
}

impl std::fmt::Debug for RpcStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcStream")
            .field("protocol", &self.protocol)
            .field("decode", &self.decoder.is_some())
            .field("filter", &self.filter.is_some())
            .field("done", &self.done)
            .finish()
    }
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
            if let Some(status) = self.ending.take() {
                return Poll::Ready(Some(Ok(self.end(&status, &HeaderMap::new()))));
            }
            if self.decoder.is_some() {
                match self.drain(cx) {
                    Ok(out) if !out.is_empty() => {
                        return Poll::Ready(Some(Ok(Frame::data(self.wrap(out)))));
                    }
                    Ok(_) if self.held.is_some() => return Poll::Pending,
                    Ok(_) if self.ending.is_some() => continue,
                    Ok(_) => {}
                    Err(status) => {
                        return Poll::Ready(Some(Ok(self.end(&status, &HeaderMap::new()))));
                    }
                }
            }
            let Some(up) = self.upstream.as_mut() else {
                return Poll::Ready(None);
            };
            let (status, trailers) = match ready!(Pin::new(up).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => match &mut self.decoder {
                        Some(d) => {
                            d.push(data);
                            continue;
                        }
                        None => return Poll::Ready(Some(Ok(Frame::data(self.wrap(data))))),
                    },
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            if let Some(f) = self.filter.as_mut() {
                                f.on_trailers(&trailers);
                            }
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
                Some(Err(e)) => {
                    self.end_kind = RpcEnd::UpstreamReset;
                    (reset_status(&e), HeaderMap::new())
                }
                None => (
                    RpcStatus::new(Code::Internal, "upstream ended the stream without a status"),
                    HeaderMap::new(),
                ),
            };
            return Poll::Ready(Some(Ok(self.end(&status, &trailers))));
        }
    }

    /// Ends the stream with `status`, cancelling the upstream stream if it still runs:
    /// the protocol's final frame (trailers for gRPC).
    pub fn end(&mut self, status: &RpcStatus, trailers: &HeaderMap) -> Frame<Bytes> {
        if self.end_kind == RpcEnd::Unknown {
            self.end_kind = if status.code == Code::Ok {
                RpcEnd::Ok
            } else {
                RpcEnd::Error
            };
        }
        self.upstream = None;
        self.done = true;
        self.held = None;
        if let Some(mut f) = self.filter.take() {
            f.on_end();
        }
        if self.protocol.is_grpc() {
            let mut t = HeaderMap::new();
            copy_metadata(trailers, &mut t);
            status.write_trailers(&mut t);
            return Frame::trailers(t);
        }
        Frame::data(final_frame(self.protocol, status, trailers))
    }

    fn wrap(&mut self, out: Bytes) -> Bytes {
        self.messages += self.counter.feed(&out);
        match self.protocol {
            RpcProtocol::GrpcWeb { text: true } => base64_stream::encode(&out),
            _ => out,
        }
    }

    /// Re-frames the decoded messages the filter lets through; stops at a message
    /// waiting for a verdict (`held`) or at a stop (`ending`).
    fn drain(&mut self, cx: &mut Context<'_>) -> Result<Bytes, RpcStatus> {
        let mut out = BytesMut::new();
        loop {
            let proto = match self.held.take() {
                Some(p) => p,
                None => match self.next_message()? {
                    Some(p) => p,
                    None => break,
                },
            };
            if let Some(f) = self.filter.as_mut() {
                match f.poll_response_message(cx, &proto) {
                    Poll::Pending => {
                        self.held = Some(proto);
                        break;
                    }
                    Poll::Ready(Verdict::Stop(status)) => {
                        self.end_kind = RpcEnd::Cut;
                        self.ending = Some(status);
                        break;
                    }
                    Poll::Ready(Verdict::Continue) => {}
                }
            }
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
            if self.per_message {
                break;
            }
        }
        Ok(out.freeze())
    }

    /// The next whole upstream message, decompressed.
    fn next_message(&mut self) -> Result<Option<Bytes>, RpcStatus> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(None);
        };
        let Some(env) = decoder.next_envelope().map_err(|e| {
            RpcStatus::new(Code::ResourceExhausted, format!("upstream message: {e}"))
        })?
        else {
            return Ok(None);
        };
        if env.flags & FLAG_COMPRESSED == 0 {
            return Ok(Some(env.data));
        }
        if !self.upstream_gzip {
            return Err(RpcStatus::new(
                Code::Internal,
                "upstream compressed a message without grpc-encoding",
            ));
        }
        compression::gunzip(&env.data, self.limit)
            .map(Some)
            .map_err(|e| RpcStatus::new(Code::ResourceExhausted, format!("upstream message: {e}")))
    }

    pub fn is_end_stream(&self) -> bool {
        self.done
    }

    /// Messages sent so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// How the stream ended, once it has.
    pub fn end_kind(&self) -> RpcEnd {
        self.end_kind
    }
}

impl Drop for RpcStream {
    fn drop(&mut self) {
        if let Some(mut f) = self.filter.take() {
            f.on_end();
        }
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
