//! Which RPC protocol a request speaks, and Connect GET query parsing.
//!
//! Detection reads only the method, the `content-type` and the query, so the
//! proxy can decide on translation from the request head alone.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};

use super::status::percent_decode;

/// Message serialization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Binary protobuf.
    Proto,
    /// The canonical proto3 JSON mapping.
    Json,
}

impl Codec {
    /// The codec's name as Connect writes it (`encoding=` and content-types).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Proto => "proto",
            Codec::Json => "json",
        }
    }

    fn from_name(s: &str) -> Option<Codec> {
        if s.eq_ignore_ascii_case("proto") {
            Some(Codec::Proto)
        } else if s.eq_ignore_ascii_case("json") {
            Some(Codec::Json)
        } else {
            None
        }
    }
}

/// The protocol of an incoming request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcProtocol {
    /// Native gRPC (`application/grpc[+proto]`).
    Grpc,
    /// gRPC-Web, binary or base64 text (`application/grpc-web[-text][+proto]`).
    GrpcWeb { text: bool },
    /// Connect unary: a bare message in the body, or in the query for GET.
    ConnectUnary { codec: Codec, get: bool },
    /// Connect streaming (`application/connect+proto|json`), enveloped messages.
    ConnectStream { codec: Codec },
}

impl RpcProtocol {
    /// Detects the protocol from the request method, `content-type` (parameters
    /// ignored, case-insensitive) and query.
    ///
    /// POST: `application/grpc` and any `application/grpc+X` are gRPC;
    /// `application/grpc-web[+proto]` and `application/grpc-web-text[+proto]` are
    /// gRPC-Web; `application/proto|json` are Connect unary;
    /// `application/connect+proto|json` are Connect streaming. GET with
    /// `encoding=proto|json` in the query is Connect unary GET. Anything else,
    /// including gRPC-Web or Connect with another codec, is `None`.
    pub fn detect(
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Option<RpcProtocol> {
        if method == Method::GET {
            let codec = query_param(query?, "encoding").and_then(Codec::from_name)?;
            return Some(RpcProtocol::ConnectUnary { codec, get: true });
        }
        if method != Method::POST {
            return None;
        }
        let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = ct.split(';').next()?.trim();
        let subtype = strip_prefix_ignore_case(essence, "application/")?;
        let (base, suffix) = match subtype.split_once('+') {
            Some((b, s)) => (b, Some(s)),
            None => (subtype, None),
        };
        let proto_only = |s: Option<&str>| s.is_none_or(|s| s.eq_ignore_ascii_case("proto"));
        if base.eq_ignore_ascii_case("grpc") {
            Some(RpcProtocol::Grpc)
        } else if base.eq_ignore_ascii_case("grpc-web") {
            proto_only(suffix).then_some(RpcProtocol::GrpcWeb { text: false })
        } else if base.eq_ignore_ascii_case("grpc-web-text") {
            proto_only(suffix).then_some(RpcProtocol::GrpcWeb { text: true })
        } else if base.eq_ignore_ascii_case("connect") {
            let codec = Codec::from_name(suffix?)?;
            Some(RpcProtocol::ConnectStream { codec })
        } else if suffix.is_none() {
            let codec = Codec::from_name(base)?;
            Some(RpcProtocol::ConnectUnary { codec, get: false })
        } else {
            None
        }
    }

    /// Native gRPC, which needs no translation.
    pub fn is_grpc(self) -> bool {
        matches!(self, RpcProtocol::Grpc)
    }

    /// gRPC-Web, binary or text.
    pub fn is_grpc_web(self) -> bool {
        matches!(self, RpcProtocol::GrpcWeb { .. })
    }

    /// Connect, unary or streaming.
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            RpcProtocol::ConnectUnary { .. } | RpcProtocol::ConnectStream { .. }
        )
    }

    /// The message codec; the gRPC family is always protobuf here.
    pub fn codec(self) -> Codec {
        match self {
            RpcProtocol::Grpc | RpcProtocol::GrpcWeb { .. } => Codec::Proto,
            RpcProtocol::ConnectUnary { codec, .. } | RpcProtocol::ConnectStream { codec } => codec,
        }
    }

    /// Response `content-type` for a successful call in this protocol. (Connect
    /// unary errors are always `application/json`.)
    pub fn response_content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            RpcProtocol::Grpc => "application/grpc",
            RpcProtocol::GrpcWeb { text: false } => "application/grpc-web+proto",
            RpcProtocol::GrpcWeb { text: true } => "application/grpc-web-text+proto",
            RpcProtocol::ConnectUnary {
                codec: Codec::Proto,
                ..
            } => "application/proto",
            RpcProtocol::ConnectUnary {
                codec: Codec::Json, ..
            } => "application/json",
            RpcProtocol::ConnectStream {
                codec: Codec::Proto,
            } => "application/connect+proto",
            RpcProtocol::ConnectStream { codec: Codec::Json } => "application/connect+json",
        })
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// The raw (still percent-encoded) value of the first `name` parameter.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Connect GET's base64: URL-safe, padding optional (and percent-encoded if sent).
const BASE64_URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A parsed Connect unary GET query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectGetQuery {
    /// The message bytes, still compressed if `compression` says so.
    pub message: Bytes,
    pub codec: Codec,
    /// `compression=` as sent (`None` when absent; "identity" or "gzip" expected).
    pub compression: Option<String>,
    /// Whether `connect=v1` was present.
    pub connect_v1: bool,
}

/// Parses a Connect GET query. `message` is base64url-decoded (padded or not)
/// when `base64=1`, else percent-decoded with `+` as space; parameters may come
/// in any order and unknown ones are ignored. Errors name the missing or invalid
/// parameter.
pub fn parse_connect_get(query: &str) -> Result<ConnectGetQuery, String> {
    let mut message = None;
    let mut encoding = None;
    let mut compression = None;
    let mut base64 = false;
    let mut connect = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "message" => {
                message.get_or_insert(v);
            }
            "encoding" => {
                encoding.get_or_insert(v);
            }
            "compression" => {
                compression.get_or_insert(v);
            }
            "base64" => base64 = v == "1",
            "connect" => {
                connect.get_or_insert(v);
            }
            _ => {}
        }
    }
    let encoding = encoding.ok_or("missing encoding query parameter")?;
    let codec = Codec::from_name(encoding)
        .ok_or_else(|| format!("unsupported encoding {encoding:?} (want proto or json)"))?;
    let connect_v1 = match connect {
        None => false,
        Some("v1") => true,
        Some(other) => return Err(format!("unsupported connect protocol version {other:?}")),
    };
    let raw = message.ok_or("missing message query parameter")?;
    let message = if base64 {
        let text = percent_decode(raw.as_bytes(), false);
        BASE64_URL_ANY_PADDING
            .decode(&*text)
            .map_err(|e| format!("invalid base64 in message: {e}"))?
            .into()
    } else {
        Bytes::from(percent_decode(raw.as_bytes(), true).into_owned())
    };
    let compression = compression
        .filter(|c| !c.is_empty())
        .map(|c| String::from_utf8_lossy(&percent_decode(c.as_bytes(), true)).into_owned());
    Ok(ConnectGetQuery {
        message,
        codec,
        compression,
        connect_v1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(ct: &str) -> Option<RpcProtocol> {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        RpcProtocol::detect(&Method::POST, &h, None)
    }

    #[test]
    fn detects_by_content_type() {
        use Codec::*;
        use RpcProtocol::*;
        let cases = [
            ("application/grpc", Some(Grpc)),
            ("application/grpc+proto", Some(Grpc)),
            ("application/grpc+thrift", Some(Grpc)),
            ("Application/GRPC; charset=utf-8", Some(Grpc)),
            ("application/grpc-web", Some(GrpcWeb { text: false })),
            ("application/grpc-web+proto", Some(GrpcWeb { text: false })),
            ("application/grpc-web-text", Some(GrpcWeb { text: true })),
            (
                "application/grpc-web-text+proto",
                Some(GrpcWeb { text: true }),
            ),
            ("application/grpc-web+json", None),
            ("application/grpc-web-text+thrift", None),
            (
                "application/proto",
                Some(ConnectUnary {
                    codec: Proto,
                    get: false,
                }),
            ),
            (
                "application/json",
                Some(ConnectUnary {
                    codec: Json,
                    get: false,
                }),
            ),
            (
                "application/json; charset=utf-8",
                Some(ConnectUnary {
                    codec: Json,
                    get: false,
                }),
            ),
            (
                "application/connect+proto",
                Some(ConnectStream { codec: Proto }),
            ),
            (
                "application/connect+json",
                Some(ConnectStream { codec: Json }),
            ),
            (
                "APPLICATION/CONNECT+JSON",
                Some(ConnectStream { codec: Json }),
            ),
            ("application/connect+cbor", None),
            ("application/connect", None),
            ("application/xml", None),
            ("text/plain", None),
            ("application/", None),
            ("", None),
        ];
        for (ct, want) in cases {
            assert_eq!(post(ct), want, "{ct:?}");
        }
        assert_eq!(
            RpcProtocol::detect(&Method::POST, &HeaderMap::new(), None),
            None
        );
    }

    #[test]
    fn detects_connect_get_and_ignores_other_methods() {
        let h = HeaderMap::new();
        let get = |q: Option<&str>| RpcProtocol::detect(&Method::GET, &h, q);
        assert_eq!(
            get(Some("connect=v1&encoding=json&message=%7B%7D")),
            Some(RpcProtocol::ConnectUnary {
                codec: Codec::Json,
                get: true
            })
        );
        assert_eq!(
            get(Some("message=AA&base64=1&encoding=proto")),
            Some(RpcProtocol::ConnectUnary {
                codec: Codec::Proto,
                get: true
            })
        );
        assert_eq!(get(Some("encoding=xml&message=x")), None);
        assert_eq!(get(Some("q=1")), None);
        assert_eq!(get(None), None);

        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        assert_eq!(RpcProtocol::detect(&Method::PUT, &h, None), None);
        assert_eq!(RpcProtocol::detect(&Method::GET, &h, None), None);
    }

    #[test]
    fn codecs_and_content_types() {
        use Codec::*;
        use RpcProtocol::*;
        let cases = [
            (Grpc, Proto, "application/grpc"),
            (GrpcWeb { text: false }, Proto, "application/grpc-web+proto"),
            (
                GrpcWeb { text: true },
                Proto,
                "application/grpc-web-text+proto",
            ),
            (
                ConnectUnary {
                    codec: Proto,
                    get: true,
                },
                Proto,
                "application/proto",
            ),
            (
                ConnectUnary {
                    codec: Json,
                    get: false,
                },
                Json,
                "application/json",
            ),
            (
                ConnectStream { codec: Proto },
                Proto,
                "application/connect+proto",
            ),
            (
                ConnectStream { codec: Json },
                Json,
                "application/connect+json",
            ),
        ];
        for (p, codec, ct) in cases {
            assert_eq!(p.codec(), codec);
            assert_eq!(p.response_content_type(), ct);
            // Detection of the response type gives back the same protocol family.
            if !matches!(p, ConnectUnary { get: true, .. }) {
                assert_eq!(post(ct), Some(p), "{ct}");
            }
        }
        assert!(Grpc.is_grpc() && !Grpc.is_connect() && !Grpc.is_grpc_web());
        assert!(GrpcWeb { text: true }.is_grpc_web());
        assert!(ConnectStream { codec: Json }.is_connect());
    }

    #[test]
    fn get_query_base64_url_safe_unpadded() {
        // 0xfb 0xff encodes to "-_8" in URL-safe base64 ("+/8=" standard).
        let q = parse_connect_get(
            "connect=v1&base64=1&compression=identity&encoding=proto&message=-_8",
        )
        .unwrap();
        assert_eq!(
            q,
            ConnectGetQuery {
                message: Bytes::from_static(&[0xfb, 0xff]),
                codec: Codec::Proto,
                compression: Some("identity".into()),
                connect_v1: true,
            }
        );
        // Padding, percent-encoded as the spec requires, is accepted too.
        let q = parse_connect_get("message=-_8%3D&base64=1&encoding=proto").unwrap();
        assert_eq!(q.message, &[0xfb, 0xff][..]);
        assert!(!q.connect_v1);
        assert_eq!(q.compression, None);
    }

    #[test]
    fn get_query_percent_encoded_json() {
        let q = parse_connect_get(
            "encoding=json&message=%7B%22message%22%3A%22hi+there%2B%E2%9C%93%22%7D&connect=v1&extra=1",
        )
        .unwrap();
        assert_eq!(q.codec, Codec::Json);
        assert_eq!(q.message, "{\"message\":\"hi there+✓\"}".as_bytes());
        assert!(q.connect_v1);
        // Empty message is an empty request, not an error.
        let q = parse_connect_get("encoding=proto&message=").unwrap();
        assert!(q.message.is_empty());
    }

    #[test]
    fn get_query_errors() {
        assert!(
            parse_connect_get("message=e30")
                .unwrap_err()
                .contains("encoding")
        );
        assert!(
            parse_connect_get("encoding=json")
                .unwrap_err()
                .contains("message")
        );
        assert!(
            parse_connect_get("encoding=xml&message=x")
                .unwrap_err()
                .contains("xml")
        );
        assert!(
            parse_connect_get("encoding=json&message=x&connect=v2")
                .unwrap_err()
                .contains("v2")
        );
        assert!(
            parse_connect_get("encoding=proto&base64=1&message=!!")
                .unwrap_err()
                .contains("base64")
        );
    }
}
