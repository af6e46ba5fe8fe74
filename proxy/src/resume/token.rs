//! Resume tokens and what they are bound to: an opaque random token names one stream;
//! the stream records its owner (app, verified caller, call) and its wire protocol, and
//! a resume must match all three.

use crate::auth::Identity;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::Arc;
use tollgate_filters::rpc::{Codec, RpcProtocol};

/// Response header carrying a new stream's token; request header of a resume.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("tollgate-resume-token");
/// Request header of a resume: how many messages the client has received.
pub const AFTER_HEADER: HeaderName = HeaderName::from_static("tollgate-resume-after");

const PREFIX: &str = "rs1_";
/// 128 random bits.
const RANDOM_BYTES: usize = 16;

/// A fresh token, or `None` if the system's random source failed.
pub fn generate() -> Option<Arc<str>> {
    let mut raw = [0u8; RANDOM_BYTES];
    SystemRandom::new().fill(&mut raw).ok()?;
    Some(Arc::from(format!(
        "{PREFIX}{}",
        URL_SAFE_NO_PAD.encode(raw)
    )))
}

/// Whether `s` has the shape of a token (it may still name no stream).
pub fn well_formed(s: &str) -> bool {
    s.strip_prefix(PREFIX).is_some_and(|rest| {
        rest.len() == 22
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Who may resume a stream: the same app, caller and call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(String);

impl Owner {
    pub fn new(app: &str, caller: &str, call: &str) -> Self {
        Owner(format!("{app}\n{caller}\n{call}"))
    }

    /// The caller as the edge verified it: a key, a token subject of an issuer, or
    /// nobody on an open route.
    pub fn of(app: &str, identity: Option<&Identity>, call: &str) -> Self {
        let caller = match identity {
            None => "anonymous".to_string(),
            Some(id) => match id.key_id() {
                Some(key) => format!("key:{key}"),
                None => format!(
                    "{}:{}:{}",
                    id.method(),
                    id.issuer().unwrap_or(""),
                    id.subject()
                ),
            },
        };
        Owner::new(app, &caller, call)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_stored(s: String) -> Self {
        Owner(s)
    }
}

/// The protocol a stream's frames are encoded in; a resume must speak the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Rpc(RpcProtocol),
    Sse,
}

impl Wire {
    pub fn name(self) -> &'static str {
        match self {
            Wire::Rpc(RpcProtocol::ConnectStream {
                codec: Codec::Proto,
            }) => "connect+proto",
            Wire::Rpc(RpcProtocol::ConnectStream { codec: Codec::Json }) => "connect+json",
            Wire::Rpc(RpcProtocol::GrpcWeb { text: false }) => "grpc-web",
            Wire::Rpc(RpcProtocol::GrpcWeb { text: true }) => "grpc-web-text",
            Wire::Rpc(_) => "unsupported",
            Wire::Sse => "sse",
        }
    }

    pub fn from_name(s: &str) -> Option<Wire> {
        Some(match s {
            "connect+proto" => Wire::Rpc(RpcProtocol::ConnectStream {
                codec: Codec::Proto,
            }),
            "connect+json" => Wire::Rpc(RpcProtocol::ConnectStream { codec: Codec::Json }),
            "grpc-web" => Wire::Rpc(RpcProtocol::GrpcWeb { text: false }),
            "grpc-web-text" => Wire::Rpc(RpcProtocol::GrpcWeb { text: true }),
            "sse" => Wire::Sse,
            _ => return None,
        })
    }

    /// Whether streams of this protocol can be resumed.
    pub fn resumable(self) -> bool {
        !matches!(
            self,
            Wire::Rpc(RpcProtocol::Grpc | RpcProtocol::ConnectUnary { .. })
        )
    }
}

/// A response head as stored for resumes: `name: value` lines.
pub fn encode_head(head: &HeaderMap) -> Bytes {
    let mut out = Vec::new();
    for (name, value) in head {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// The inverse of [`encode_head`]; lines that do not parse are dropped.
pub fn decode_head(raw: &[u8]) -> HeaderMap {
    let mut head = HeaderMap::new();
    for line in raw.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii_start());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            head.append(n, v);
        }
    }
    head
}

/// A resume request: the token and the number of messages already received. SSE
/// carries both in `Last-Event-ID` as `<token>.<index>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    pub token: String,
    pub after: u64,
}

/// Why a resume request is malformed.
pub type ParseError = &'static str;

impl ResumeRequest {
    /// Reads a resume from the request headers; `Ok(None)` when it is not one.
    pub fn from_headers(headers: &HeaderMap, sse: bool) -> Result<Option<Self>, ParseError> {
        if let Some(token) = headers.get(&TOKEN_HEADER) {
            let token = token.to_str().map_err(|_| "invalid resume token")?;
            let after = match headers.get(&AFTER_HEADER) {
                None => 0,
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or("tollgate-resume-after must be a message count")?,
            };
            return Ok(Some(ResumeRequest {
                token: token.trim().to_string(),
                after,
            }));
        }
        if !sse {
            return Ok(None);
        }
        // Only ids this edge issued are resumes; others belong to the upstream.
        let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
        let Some((token, index)) = id.trim().split_once('.') else {
            return Ok(None);
        };
        if !token.starts_with(PREFIX) {
            return Ok(None);
        }
        let after = index
            .parse()
            .map_err(|_| "Last-Event-ID index is not a number")?;
        Ok(Some(ResumeRequest {
            token: token.to_string(),
            after,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_well_formed() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        assert!(!well_formed("rs1_short"));
        assert!(!well_formed(&a.replace("rs1_", "xx1_")));
    }

    #[test]
    fn owners_differ_by_app_caller_and_call() {
        let key = crate::auth::test_identities::key("k1");
        let a = Owner::of("app", Some(&key), "/svc/M");
        assert_eq!(a, Owner::of("app", Some(&key), "/svc/M"));
        assert_ne!(a, Owner::of("other", Some(&key), "/svc/M"));
        assert_ne!(a, Owner::of("app", Some(&key), "/svc/N"));
        assert_ne!(a, Owner::of("app", None, "/svc/M"));
        let user = crate::auth::test_identities::token("k1", false);
        assert_ne!(a, Owner::of("app", Some(&user), "/svc/M"));
    }

    #[test]
    fn heads_round_trip() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/connect+proto"),
        );
        h.append("x-meta", HeaderValue::from_static("a: b"));
        h.append("x-meta", HeaderValue::from_static("c"));
        assert_eq!(decode_head(&encode_head(&h)), h);
    }

    #[test]
    fn resume_requests_come_from_headers_or_last_event_id() {
        let mut h = HeaderMap::new();
        assert_eq!(ResumeRequest::from_headers(&h, true), Ok(None));
        h.insert("last-event-id", HeaderValue::from_static("upstream-7"));
        assert_eq!(ResumeRequest::from_headers(&h, true), Ok(None));
        h.insert("last-event-id", HeaderValue::from_static("rs1_abc.12"));
        let r = ResumeRequest::from_headers(&h, true).unwrap().unwrap();
        assert_eq!((r.token.as_str(), r.after), ("rs1_abc", 12));
        assert_eq!(ResumeRequest::from_headers(&h, false), Ok(None));
        h.insert(TOKEN_HEADER, HeaderValue::from_static("rs1_x"));
        h.insert(AFTER_HEADER, HeaderValue::from_static("nope"));
        assert!(ResumeRequest::from_headers(&h, false).is_err());
        h.insert(AFTER_HEADER, HeaderValue::from_static("3"));
        let r = ResumeRequest::from_headers(&h, false).unwrap().unwrap();
        assert_eq!((r.token.as_str(), r.after), ("rs1_x", 3));
    }
}
