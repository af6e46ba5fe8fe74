//! The three wire protocols as bytes: the request of one `ServerStream` call, the
//! envelope scanner that counts response messages without buffering them, and how each
//! protocol reports the call's final status.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Full;
use prost::Message;
use tollgate_proto::test::v1::{StreamRequest, StreamResponse};

/// Path of the method every stream calls.
pub const METHOD_PATH: &str = "/tollgate.test.v1.TestService/ServerStream";

/// gRPC-Web: the envelope carries the trailer block.
const FLAG_TRAILERS: u8 = 0x80;
/// Connect: the envelope carries the end-of-stream JSON.
const FLAG_END_STREAM: u8 = 0x02;
/// Any protocol: the message is compressed (never asked for here).
const FLAG_COMPRESSED: u8 = 0x01;
/// Largest trailer block or end-of-stream message kept to read the status.
const MAX_END_MESSAGE: usize = 1 << 20;

/// A wire protocol for one server-streaming call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// gRPC: `application/grpc`, status in HTTP trailers.
    Grpc,
    /// gRPC-Web binary: `application/grpc-web+proto`, status in a trailer envelope.
    GrpcWeb,
    /// Connect streaming, protobuf: `application/connect+proto`.
    ConnectProto,
    /// Connect streaming, JSON: `application/connect+json`.
    ConnectJson,
}

impl Protocol {
    /// Stable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::ConnectProto => "connect-proto",
            Protocol::ConnectJson => "connect-json",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Protocol::Grpc => "application/grpc",
            Protocol::GrpcWeb => "application/grpc-web+proto",
            Protocol::ConnectProto => "application/connect+proto",
            Protocol::ConnectJson => "application/connect+json",
        }
    }

    /// The flag marking the envelope that ends the stream, if the protocol has one.
    fn end_flag(self) -> Option<u8> {
        match self {
            Protocol::Grpc => None,
            Protocol::GrpcWeb => Some(FLAG_TRAILERS),
            Protocol::ConnectProto | Protocol::ConnectJson => Some(FLAG_END_STREAM),
        }
    }
}

/// The encoded request body (one envelope) for `count` messages of `payload_bytes`,
/// `interval_ms` apart.
pub fn request_body(protocol: Protocol, count: u32, payload_bytes: u32, interval_ms: u32) -> Bytes {
    let count = i32::try_from(count).unwrap_or(i32::MAX);
    let payload_bytes = i32::try_from(payload_bytes).unwrap_or(i32::MAX);
    let interval_ms = i32::try_from(interval_ms).unwrap_or(i32::MAX);
    let message = if protocol == Protocol::ConnectJson {
        serde_json::json!({ "count": count, "payloadBytes": payload_bytes, "intervalMs": interval_ms })
            .to_string()
            .into_bytes()
    } else {
        StreamRequest {
            count,
            payload_bytes,
            interval_ms,
            ..StreamRequest::default()
        }
        .encode_to_vec()
    };
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(&message);
    out.freeze()
}

/// A request for the call, its body shared between all streams.
pub fn request(
    protocol: Protocol,
    authority: &http::uri::Authority,
    scheme: &http::uri::Scheme,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let uri = http::Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(METHOD_PATH)
        .build()?;
    let mut b = Request::post(uri).header(http::header::CONTENT_TYPE, protocol.content_type());
    b = match protocol {
        Protocol::Grpc => b.header(http::header::TE, "trailers"),
        Protocol::GrpcWeb => b.header("x-grpc-web", "1"),
        Protocol::ConnectProto | Protocol::ConnectJson => b.header("connect-protocol-version", "1"),
    };
    b.body(Full::new(body))
}

/// Counts the envelopes of one response body as its chunks arrive. Message bodies are
/// skipped, except the first (to check it decodes) and the end-of-stream envelope.
#[derive(Debug)]
pub struct Scanner {
    end_flag: Option<u8>,
    head: [u8; 5],
    head_len: usize,
    /// Bytes of the current message still to come (valid once the head is complete).
    left: usize,
    flags: u8,
    /// The current message's bytes, when it is one of those kept.
    keep: Option<Vec<u8>>,
    /// The first data message, once complete.
    pub first: Option<Vec<u8>>,
    /// The end-of-stream envelope's content, once complete.
    pub end: Option<Vec<u8>>,
    /// [`Scanner::first_seen_now`] has said yes.
    first_reported: bool,
}

/// What a chunk added: complete data messages and their envelope bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub messages: u64,
    pub bytes: u64,
}

impl Scanner {
    /// True once: the first time it is asked after the first message completed.
    pub fn first_seen_now(&mut self) -> bool {
        if self.first.is_some() && !self.first_reported {
            self.first_reported = true;
            return true;
        }
        false
    }

    /// A scanner for a response in `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        Scanner {
            end_flag: protocol.end_flag(),
            head: [0; 5],
            head_len: 0,
            left: 0,
            flags: 0,
            keep: None,
            first: None,
            end: None,
            first_reported: false,
        }
    }

    /// Whether the body so far ends on an envelope boundary.
    pub fn at_boundary(&self) -> bool {
        self.head_len == 0
    }

    /// Takes one body chunk, which may split envelopes anywhere.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<Counted, String> {
        let mut counted = Counted::default();
        while !chunk.is_empty() {
            if self.end.is_some() {
                return Err("data after the end-of-stream envelope".into());
            }
            if self.head_len < 5 {
                let n = (5 - self.head_len).min(chunk.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&chunk[..n]);
                self.head_len += n;
                chunk = &chunk[n..];
                if self.head_len < 5 {
                    break;
                }
                self.start_message()?;
            } else {
                let n = self.left.min(chunk.len());
                if let Some(keep) = &mut self.keep {
                    keep.extend_from_slice(&chunk[..n]);
                }
                self.left -= n;
                chunk = &chunk[n..];
            }
            if self.head_len == 5 && self.left == 0 {
                self.finish_message(&mut counted);
            }
        }
        Ok(counted)
    }

    fn start_message(&mut self) -> Result<(), String> {
        self.flags = self.head[0];
        let len = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]]);
        self.left = len as usize;
        if self.flags & FLAG_COMPRESSED != 0 {
            return Err("compressed message, though none was asked for".into());
        }
        let is_end = self.end_flag.is_some_and(|f| self.flags & f != 0);
        if is_end && self.left > MAX_END_MESSAGE {
            return Err(format!("end-of-stream envelope of {len} bytes"));
        }
        if is_end || self.first.is_none() {
            self.keep = Some(Vec::with_capacity(self.left));
        }
        Ok(())
    }

    fn finish_message(&mut self, counted: &mut Counted) {
        let kept = self.keep.take();
        if self.end_flag.is_some_and(|f| self.flags & f != 0) {
            self.end = Some(kept.unwrap_or_default());
        } else {
            counted.messages += 1;
            counted.bytes += 5 + self.message_len();
            if self.first.is_none() {
                self.first = kept;
            }
        }
        self.head_len = 0;
    }

    fn message_len(&self) -> u64 {
        u64::from(u32::from_be_bytes([
            self.head[1],
            self.head[2],
            self.head[3],
            self.head[4],
        ]))
    }
}

/// Checks that the first message is message 0 with the requested payload size.
pub fn check_first(protocol: Protocol, message: &[u8], payload_bytes: u32) -> Result<(), String> {
    let (seq, len) = if protocol == Protocol::ConnectJson {
        let v: serde_json::Value =
            serde_json::from_slice(message).map_err(|e| format!("first message: {e}"))?;
        // proto3 JSON leaves out zero values; bytes are standard base64 with padding.
        let seq = v
            .get("seq")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        let b64 = v.get("payload").and_then(|p| p.as_str()).unwrap_or("");
        let pad = b64.bytes().rev().take_while(|&b| b == b'=').count();
        (seq, (b64.len() / 4 * 3).saturating_sub(pad) as u64)
    } else {
        let m = StreamResponse::decode(message).map_err(|e| format!("first message: {e}"))?;
        (i64::from(m.seq), m.payload.len() as u64)
    };
    if seq != 0 || len != u64::from(payload_bytes) {
        return Err(format!(
            "first message is seq {seq} with {len} payload bytes, want seq 0 with {payload_bytes}"
        ));
    }
    Ok(())
}

/// The call's outcome from the response head, the trailers and the end envelope.
pub fn check_status(
    protocol: Protocol,
    status: StatusCode,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
    end: Option<&[u8]>,
) -> Result<(), String> {
    if status != StatusCode::OK {
        return Err(format!("HTTP status {status}"));
    }
    // A trailers-only answer (an error before any message) puts the status in the head.
    let grpc_status = |h: &HeaderMap| {
        h.get("grpc-status")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let message = |h: &HeaderMap| {
        h.get("grpc-message")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    match protocol {
        Protocol::Grpc => {
            let t = trailers.filter(|t| t.contains_key("grpc-status"));
            let h = t.unwrap_or(headers);
            match grpc_status(h).as_deref() {
                Some("0") => Ok(()),
                Some(code) => Err(format!("grpc-status {code}: {}", message(h))),
                None => Err("no grpc-status".into()),
            }
        }
        Protocol::GrpcWeb => {
            if let Some(code) = grpc_status(headers).filter(|c| c != "0") {
                return Err(format!("grpc-status {code}: {}", message(headers)));
            }
            let block = end.ok_or("no trailer envelope")?;
            let text = String::from_utf8_lossy(block);
            let code = text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("grpc-status")
                    .then(|| v.trim().to_owned())
            });
            match code.as_deref() {
                Some("0") => Ok(()),
                Some(code) => Err(format!(
                    "grpc-status {code} in the trailer envelope: {text}"
                )),
                None => Err(format!("no grpc-status in the trailer envelope: {text}")),
            }
        }
        Protocol::ConnectProto | Protocol::ConnectJson => {
            let end = end.ok_or("no end-of-stream envelope")?;
            let v: serde_json::Value =
                serde_json::from_slice(end).map_err(|e| format!("end-of-stream message: {e}"))?;
            match v.get("error") {
                None | Some(serde_json::Value::Null) => Ok(()),
                Some(e) => Err(format!("end-of-stream error: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(flags: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![flags];
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn counts_envelopes_split_anywhere() {
        let first = StreamResponse {
            seq: 0,
            payload: vec![0; 10],
            usage_tokens: 0,
        }
        .encode_to_vec();
        let mut body = envelope(0, &first);
        body.extend(envelope(0, &[1, 2, 3]));
        body.extend(envelope(0, &[]));
        body.extend(envelope(FLAG_TRAILERS, b"grpc-status: 0\r\n"));
        for split in 1..body.len() {
            let mut s = Scanner::new(Protocol::GrpcWeb);
            let mut total = Counted::default();
            for chunk in body.chunks(split) {
                let c = s.feed(chunk).expect("valid body");
                total.messages += c.messages;
                total.bytes += c.bytes;
            }
            assert_eq!(total.messages, 3, "split {split}");
            assert_eq!(total.bytes, (5 + first.len() + 8 + 5) as u64);
            assert!(s.at_boundary());
            assert_eq!(s.first.as_deref(), Some(&first[..]));
            check_first(Protocol::GrpcWeb, s.first.as_deref().unwrap_or(&[]), 10).expect("ok");
            let hm = HeaderMap::new();
            check_status(
                Protocol::GrpcWeb,
                StatusCode::OK,
                &hm,
                None,
                s.end.as_deref(),
            )
            .expect("status 0");
        }
    }

    #[test]
    fn connect_end_of_stream_error_is_reported() {
        let mut s = Scanner::new(Protocol::ConnectJson);
        let mut body = envelope(0, br#"{"payload":"AAAA"}"#);
        body.extend(envelope(
            FLAG_END_STREAM,
            br#"{"error":{"code":"internal"}}"#,
        ));
        assert_eq!(s.feed(&body).map(|c| c.messages), Ok(1));
        check_first(Protocol::ConnectJson, s.first.as_deref().unwrap_or(&[]), 3).expect("3 bytes");
        let err = check_status(
            Protocol::ConnectJson,
            StatusCode::OK,
            &HeaderMap::new(),
            None,
            s.end.as_deref(),
        );
        assert!(err.is_err_and(|e| e.contains("internal")));
    }

    #[test]
    fn truncated_body_is_not_at_a_boundary() {
        let mut s = Scanner::new(Protocol::Grpc);
        let body = envelope(0, &[0; 8]);
        assert_eq!(s.feed(&body[..7]).map(|c| c.messages), Ok(0));
        assert!(!s.at_boundary());
    }
}
