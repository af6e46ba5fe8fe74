//! Connect's side of a translated call: error bodies, the end-of-stream message,
//! trailers as `trailer-` headers, and which request headers stay at the edge.
//!
//! Trailing metadata copied to Connect leaves out names reserved by the
//! protocols (`grpc-*`, `connect-*`) and HTTP framing headers; see
//! [`is_reserved_metadata`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};
use prost::Message as _;
use serde::Serialize;
use tollgate_proto::google::rpc::Status as StatusProto;

use super::status::RpcStatus;

/// `connect-protocol-version` request header.
pub const PROTOCOL_VERSION: &str = "connect-protocol-version";
/// `connect-timeout-ms` request header.
pub const TIMEOUT_MS: &str = "connect-timeout-ms";
/// `connect-content-encoding` (streaming message compression).
pub const CONTENT_ENCODING: &str = "connect-content-encoding";
/// `connect-accept-encoding` (streaming).
pub const ACCEPT_ENCODING: &str = "connect-accept-encoding";

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<Detail>,
}

#[derive(Serialize)]
struct Detail {
    #[serde(rename = "type")]
    type_name: String,
    value: String,
}

#[derive(Serialize)]
struct EndStream<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<&'a str, Vec<Cow<'a, str>>>,
}

fn error_body(status: &RpcStatus) -> ErrorBody<'_> {
    ErrorBody {
        code: status.code.connect_name(),
        message: &status.message,
        details: details(status.details.as_deref()),
    }
}

/// The `Any`s of an encoded `google.rpc.Status`, as Connect details: `type` is
/// the type URL after its last '/', `value` unpadded base64. Undecodable
/// details are dropped.
fn details(raw: Option<&[u8]>) -> Vec<Detail> {
    let Some(status) = raw.and_then(|b| StatusProto::decode(b).ok()) else {
        return Vec::new();
    };
    status
        .details
        .into_iter()
        .map(|any| Detail {
            type_name: match any.type_url.rsplit_once('/') {
                Some((_, name)) => name.to_owned(),
                None => any.type_url,
            },
            value: STANDARD_NO_PAD.encode(&any.value),
        })
        .collect()
}

fn to_json<T: Serialize>(v: &T) -> Bytes {
    // Serializing these plain structs to memory cannot fail.
    serde_json::to_vec(v).map(Bytes::from).unwrap_or_default()
}

/// Unary error body:
/// `{"code":"not_found","message":"...","details":[{"type":"pkg.Msg","value":"..."}]}`.
/// `message` is omitted when empty and `details` when there are none.
pub fn error_json(status: &RpcStatus) -> Bytes {
    to_json(&error_body(status))
}

/// End-of-stream message: `{"error":{...}}` unless the status is OK, and
/// `"metadata":{"key":["v1","v2"]}` from the trailers that are not reserved
/// (keys sorted; `-bin` values kept as their base64). `{}` for OK without
/// metadata.
pub fn end_stream_json(status: &RpcStatus, trailers: &HeaderMap) -> Bytes {
    let mut metadata: BTreeMap<&str, Vec<Cow<'_, str>>> = BTreeMap::new();
    for (name, value) in trailers {
        if is_reserved_metadata(name) {
            continue;
        }
        metadata
            .entry(name.as_str())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()));
    }
    to_json(&EndStream {
        error: (status.code != super::Code::Ok).then(|| error_body(status)),
        metadata,
    })
}

/// Unary success: copies the trailers into response headers prefixed with
/// `trailer-`, leaving out reserved names.
pub fn trailers_as_headers(trailers: &HeaderMap, out: &mut HeaderMap) {
    let mut prefixed = String::new();
    for name in trailers.keys() {
        if is_reserved_metadata(name) {
            continue;
        }
        prefixed.clear();
        prefixed.push_str("trailer-");
        prefixed.push_str(name.as_str());
        let Ok(key) = HeaderName::from_bytes(prefixed.as_bytes()) else {
            continue;
        };
        for value in trailers.get_all(name) {
            out.append(key.clone(), value.clone());
        }
    }
}

/// Names never carried over as Connect metadata: everything `grpc-` and
/// `connect-` (reserved by the protocols) and the HTTP framing headers.
pub fn is_reserved_metadata(name: &HeaderName) -> bool {
    let s = name.as_str();
    s.starts_with("grpc-")
        || s.starts_with("connect-")
        || matches!(
            s,
            "content-type"
                | "content-length"
                | "content-encoding"
                | "transfer-encoding"
                | "te"
                | "trailer"
                | "connection"
                | "keep-alive"
                | "upgrade"
                | "proxy-connection"
        )
}

/// Removes Connect's own request headers before the call goes to a gRPC
/// upstream: every `connect-*` header (protocol version, timeout, streaming
/// encodings), and `content-encoding`, `accept-encoding` and `content-length`,
/// which describe the Connect body rather than the gRPC one. The caller sets
/// `content-type`, `te`, `grpc-timeout` and `grpc-encoding` for the upstream.
pub fn strip_request_headers(h: &mut HeaderMap) {
    for name in [
        PROTOCOL_VERSION,
        TIMEOUT_MS,
        CONTENT_ENCODING,
        ACCEPT_ENCODING,
    ] {
        h.remove(name);
    }
    h.remove(header::CONTENT_ENCODING);
    h.remove(header::ACCEPT_ENCODING);
    h.remove(header::CONTENT_LENGTH);
    if h.keys().any(|k| k.as_str().starts_with("connect-")) {
        let rest: Vec<HeaderName> = h
            .keys()
            .filter(|k| k.as_str().starts_with("connect-"))
            .cloned()
            .collect();
        for k in rest {
            h.remove(k);
        }
    }
}

/// Checks `connect-protocol-version`: absent is fine unless `required`, `1` is
/// fine, anything else is refused with a message for the client.
pub fn check_protocol_version(h: &HeaderMap, required: bool) -> Result<(), &'static str> {
    match h.get(PROTOCOL_VERSION).map(HeaderValue::as_bytes) {
        None if required => Err("missing connect-protocol-version header (want 1)"),
        None => Ok(()),
        Some(b"1") => Ok(()),
        Some(_) => Err("unsupported connect-protocol-version (want 1)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::Code;
    use prost::Name as _;
    use serde_json::{Value, json};
    use tollgate_proto::test::v1::ErrorDetail;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    fn status_with_detail() -> (RpcStatus, ErrorDetail) {
        let detail = ErrorDetail {
            reason: "QUOTA".into(),
            domain: "tollgate.test".into(),
        };
        let proto = StatusProto {
            code: Code::ResourceExhausted.as_i32(),
            message: "slow down".into(),
            details: vec![prost_types::Any::from_msg(&detail).unwrap()],
        };
        let status = RpcStatus {
            code: Code::ResourceExhausted,
            message: "slow down".into(),
            details: Some(proto.encode_to_vec().into()),
        };
        (status, detail)
    }

    #[test]
    fn error_json_with_real_details() {
        let (status, detail) = status_with_detail();
        let body = parse(&error_json(&status));
        assert_eq!(body["code"], "resource_exhausted");
        assert_eq!(body["message"], "slow down");
        let d = &body["details"][0];
        assert_eq!(d["type"], ErrorDetail::full_name());
        assert_eq!(d["type"], "tollgate.test.v1.ErrorDetail");
        let value = d["value"].as_str().unwrap();
        assert!(!value.contains('='), "value must be unpadded: {value}");
        let raw = STANDARD_NO_PAD.decode(value).unwrap();
        assert_eq!(ErrorDetail::decode(&raw[..]).unwrap(), detail);
    }

    #[test]
    fn error_json_minimal_and_bad_details() {
        let body = error_json(&RpcStatus::new(Code::Unavailable, ""));
        assert_eq!(&body[..], br#"{"code":"unavailable"}"#);
        let mut s = RpcStatus::new(Code::Internal, "boom \"quoted\" ✓");
        s.details = Some(Bytes::from_static(b"\xff\xff not a status"));
        assert_eq!(
            parse(&error_json(&s)),
            json!({"code": "internal", "message": "boom \"quoted\" ✓"})
        );
    }

    #[test]
    fn end_stream_ok_and_error() {
        let empty = HeaderMap::new();
        assert_eq!(
            &end_stream_json(&RpcStatus::new(Code::Ok, ""), &empty)[..],
            b"{}"
        );

        let mut trailers = HeaderMap::new();
        RpcStatus::new(Code::NotFound, "gone").write_trailers(&mut trailers);
        trailers.insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
        trailers.insert("connect-whatever", HeaderValue::from_static("x"));
        trailers.insert("content-type", HeaderValue::from_static("application/grpc"));
        trailers.append("acme-cost", HeaderValue::from_static("237"));
        trailers.append("acme-cost", HeaderValue::from_static("12"));
        trailers.insert("trace-bin", HeaderValue::from_static("AQID"));
        let status = RpcStatus::from_trailers(&trailers).unwrap();
        assert_eq!(
            parse(&end_stream_json(&status, &trailers)),
            json!({
                "error": {"code": "not_found", "message": "gone"},
                "metadata": {"acme-cost": ["237", "12"], "trace-bin": ["AQID"]}
            })
        );
        assert_eq!(
            parse(&end_stream_json(
                &RpcStatus::new(Code::Ok, "ignored"),
                &trailers
            )),
            json!({"metadata": {"acme-cost": ["237", "12"], "trace-bin": ["AQID"]}})
        );
    }

    #[test]
    fn end_stream_error_carries_details() {
        let (status, _) = status_with_detail();
        let body = parse(&end_stream_json(&status, &HeaderMap::new()));
        assert_eq!(
            body["error"]["details"][0]["type"],
            "tollgate.test.v1.ErrorDetail"
        );
        assert!(body.get("metadata").is_none());
    }

    #[test]
    fn trailers_become_prefixed_headers() {
        let mut trailers = HeaderMap::new();
        RpcStatus::new(Code::Ok, "").write_trailers(&mut trailers);
        trailers.append("acme-cost", HeaderValue::from_static("1"));
        trailers.append("acme-cost", HeaderValue::from_static("2"));
        trailers.insert("x-bin", HeaderValue::from_static("AQ"));
        let mut out = HeaderMap::new();
        out.insert("existing", HeaderValue::from_static("kept"));
        trailers_as_headers(&trailers, &mut out);
        let costs: Vec<_> = out.get_all("trailer-acme-cost").iter().collect();
        assert_eq!(costs, ["1", "2"]);
        assert_eq!(out["trailer-x-bin"], "AQ");
        assert_eq!(out["existing"], "kept");
        assert!(out.get("trailer-grpc-status").is_none());
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn strips_connect_request_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connect-protocol-version", "1"),
            ("connect-timeout-ms", "500"),
            ("connect-content-encoding", "gzip"),
            ("connect-accept-encoding", "gzip"),
            ("connect-future-thing", "x"),
            ("content-encoding", "gzip"),
            ("accept-encoding", "gzip, br"),
            ("content-length", "12"),
            ("authorization", "Bearer t"),
            ("x-request-id", "abc"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        strip_request_headers(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "x-request-id"]);
    }

    #[test]
    fn protocol_version_check() {
        let mut h = HeaderMap::new();
        assert_eq!(check_protocol_version(&h, false), Ok(()));
        assert!(check_protocol_version(&h, true).is_err());
        h.insert(PROTOCOL_VERSION, HeaderValue::from_static("1"));
        assert_eq!(check_protocol_version(&h, true), Ok(()));
        h.insert(PROTOCOL_VERSION, HeaderValue::from_static("2"));
        assert!(check_protocol_version(&h, false).is_err());
    }
}
