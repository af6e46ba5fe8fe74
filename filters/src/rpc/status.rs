//! Status codes and the final status of a call.
//!
//! [`Code`] is the gRPC code space (0–16), which Connect shares under snake_case
//! names. It maps both ways to HTTP: [`Code::connect_http_status`] follows the
//! Connect error-code table, and [`Code::from_http_status`] follows gRPC's
//! HTTP-to-status mapping (for responses that carry no status of their own).
//!
//! [`RpcStatus`] reads and writes the gRPC trailers: `grpc-status`, a
//! percent-encoded `grpc-message`, and `grpc-status-details-bin` (a base64
//! `google.rpc.Status`).

use std::borrow::Cow;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

/// `grpc-status` trailer name.
pub const GRPC_STATUS: &str = "grpc-status";
/// `grpc-message` trailer name.
pub const GRPC_MESSAGE: &str = "grpc-message";
/// `grpc-status-details-bin` trailer name.
pub const GRPC_STATUS_DETAILS: &str = "grpc-status-details-bin";

/// Binary metadata is base64 with or without padding (PROTOCOL-HTTP2).
const BASE64_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Ok = 0,
    Canceled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Canceled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The numeric code.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code for a number; anything outside 0–16 is `Unknown`.
    pub fn from_i32(v: i32) -> Code {
        usize::try_from(v)
            .ok()
            .and_then(|i| Code::ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// Parses a `grpc-status` value: decimal digits only, else `None`.
    /// A well-formed number outside 0–16 is `Unknown`.
    pub fn from_header(v: &HeaderValue) -> Option<Code> {
        let b = v.as_bytes();
        if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = b.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        Some(i32::try_from(n).map_or(Code::Unknown, Code::from_i32))
    }

    /// The `grpc-status` value for this code.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Code::Ok => "0",
            Code::Canceled => "1",
            Code::Unknown => "2",
            Code::InvalidArgument => "3",
            Code::DeadlineExceeded => "4",
            Code::NotFound => "5",
            Code::AlreadyExists => "6",
            Code::PermissionDenied => "7",
            Code::ResourceExhausted => "8",
            Code::FailedPrecondition => "9",
            Code::Aborted => "10",
            Code::OutOfRange => "11",
            Code::Unimplemented => "12",
            Code::Internal => "13",
            Code::Unavailable => "14",
            Code::DataLoss => "15",
            Code::Unauthenticated => "16",
        })
    }

    /// The Connect name (`"not_found"`, ...). Connect has no name for `Ok`;
    /// this returns `"ok"`, which a Connect client reads as `unknown`.
    pub fn connect_name(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The code for a Connect name; `None` for anything not in the Connect table
    /// (plus `"ok"`, the inverse of [`Code::connect_name`]).
    pub fn from_connect_name(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.connect_name() == s)
    }

    /// HTTP status of a Connect unary error with this code (Connect error-code
    /// table). `Ok` is 200.
    pub fn connect_http_status(self) -> StatusCode {
        match self {
            Code::Ok => StatusCode::OK,
            // 499 Client Closed Request has no constant.
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::REQUEST_TIMEOUT),
            Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }

    /// The code for an HTTP response that carries no status of its own (gRPC's
    /// HTTP-to-status mapping; Connect's inference table agrees).
    pub fn from_http_status(s: StatusCode) -> Code {
        match s.as_u16() {
            400 | 431 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// Final status of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcStatus {
    pub code: Code,
    pub message: String,
    /// Raw `google.rpc.Status` bytes from `grpc-status-details-bin`
    /// (already base64-decoded).
    pub details: Option<Bytes>,
}

impl RpcStatus {
    /// A status without details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RpcStatus {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Reads gRPC trailers (or trailers-only headers); `None` without `grpc-status`.
    ///
    /// A `grpc-status` that is not a number reads as `Unknown`. `grpc-message` is
    /// percent-decoded leniently; `grpc-status-details-bin` is base64-decoded
    /// (padded or not) and dropped if invalid.
    pub fn from_trailers(h: &HeaderMap) -> Option<RpcStatus> {
        let raw = h.get(GRPC_STATUS)?;
        let code = Code::from_header(raw).unwrap_or(Code::Unknown);
        let message = h
            .get(GRPC_MESSAGE)
            .map(|v| percent_decode_message(v.as_bytes()))
            .unwrap_or_default();
        let details = h
            .get(GRPC_STATUS_DETAILS)
            .and_then(|v| BASE64_ANY_PADDING.decode(v.as_bytes().trim_ascii()).ok())
            .map(Bytes::from);
        Some(RpcStatus {
            code,
            message,
            details,
        })
    }

    /// Writes `grpc-status`, `grpc-message` (percent-encoded; removed when the
    /// message is empty) and `grpc-status-details-bin` (unpadded base64; removed
    /// without details), replacing any earlier values.
    pub fn write_trailers(&self, h: &mut HeaderMap) {
        h.insert(GRPC_STATUS, self.code.header_value());
        let message = (!self.message.is_empty())
            .then(|| percent_encode_message(&self.message))
            .and_then(|m| HeaderValue::from_maybe_shared(Bytes::from(m)).ok());
        set_or_remove(h, GRPC_MESSAGE, message);
        let details = self.details.as_ref().and_then(|d| {
            HeaderValue::from_maybe_shared(Bytes::from(STANDARD_NO_PAD.encode(d))).ok()
        });
        set_or_remove(h, GRPC_STATUS_DETAILS, details);
    }
}

fn set_or_remove(h: &mut HeaderMap, name: &'static str, value: Option<HeaderValue>) {
    match value {
        Some(v) => {
            h.insert(name, v);
        }
        None => {
            h.remove(name);
        }
    }
}

/// Percent-encodes a status message for `grpc-message`: bytes outside
/// space..`~`, and `%` itself, become `%XX` (uppercase hex) of their UTF-8 bytes.
pub fn percent_encode_message(msg: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let keep = |b: u8| (0x20..=0x7e).contains(&b) && b != b'%';
    let mut out = String::with_capacity(msg.len());
    for &b in msg.as_bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Decodes a `grpc-message` value: valid `%XX` sequences are decoded, invalid
/// ones kept literally, and invalid UTF-8 replaced with U+FFFD. Never fails.
pub fn percent_decode_message(raw: &[u8]) -> String {
    match percent_decode(raw, false) {
        Cow::Borrowed(b) => String::from_utf8_lossy(b).into_owned(),
        Cow::Owned(v) => match String::from_utf8(v) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        },
    }
}

/// Decodes `%XX` sequences (malformed ones are kept as they are); with
/// `plus_is_space`, `+` becomes a space as in HTML form / query encoding.
/// Borrows when there is nothing to decode.
pub(crate) fn percent_decode(raw: &[u8], plus_is_space: bool) -> Cow<'_, [u8]> {
    if !raw
        .iter()
        .any(|&b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let decoded = match b {
            b'%' => match (
                raw.get(i + 1).copied().and_then(hex_value),
                raw.get(i + 2).copied().and_then(hex_value),
            ) {
                (Some(hi), Some(lo)) => Some(hi << 4 | lo),
                _ => None,
            },
            _ => None,
        };
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if plus_is_space && b == b'+' { b' ' } else { b });
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (code, number, connect name, Connect HTTP status) from the Connect spec.
    const TABLE: [(Code, i32, &str, u16); 17] = [
        (Code::Ok, 0, "ok", 200),
        (Code::Canceled, 1, "canceled", 499),
        (Code::Unknown, 2, "unknown", 500),
        (Code::InvalidArgument, 3, "invalid_argument", 400),
        (Code::DeadlineExceeded, 4, "deadline_exceeded", 504),
        (Code::NotFound, 5, "not_found", 404),
        (Code::AlreadyExists, 6, "already_exists", 409),
        (Code::PermissionDenied, 7, "permission_denied", 403),
        (Code::ResourceExhausted, 8, "resource_exhausted", 429),
        (Code::FailedPrecondition, 9, "failed_precondition", 400),
        (Code::Aborted, 10, "aborted", 409),
        (Code::OutOfRange, 11, "out_of_range", 400),
        (Code::Unimplemented, 12, "unimplemented", 501),
        (Code::Internal, 13, "internal", 500),
        (Code::Unavailable, 14, "unavailable", 503),
        (Code::DataLoss, 15, "data_loss", 500),
        (Code::Unauthenticated, 16, "unauthenticated", 401),
    ];

    #[test]
    fn every_code_maps_per_spec_tables() {
        for (code, n, name, http) in TABLE {
            assert_eq!(code.as_i32(), n);
            assert_eq!(Code::from_i32(n), code);
            assert_eq!(code.header_value(), n.to_string().as_str());
            assert_eq!(Code::from_header(&code.header_value()), Some(code));
            assert_eq!(code.connect_name(), name);
            assert_eq!(Code::from_connect_name(name), Some(code));
            assert_eq!(code.connect_http_status().as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn http_to_code_follows_grpc_mapping() {
        let cases = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (431, Code::Internal),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (200, Code::Unknown),
            (409, Code::Unknown),
            (500, Code::Unknown),
            (501, Code::Unknown),
        ];
        for (http, code) in cases {
            let s = StatusCode::from_u16(http).unwrap();
            assert_eq!(Code::from_http_status(s), code, "{http}");
        }
    }

    #[test]
    fn out_of_range_and_garbage() {
        assert_eq!(Code::from_i32(-1), Code::Unknown);
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(i32::MAX), Code::Unknown);
        for bad in ["", "x", "1a", " 1", "-1", "+1", "12345678901"] {
            assert_eq!(
                Code::from_header(&HeaderValue::from_static(bad)),
                None,
                "{bad:?}"
            );
        }
        assert_eq!(
            Code::from_header(&HeaderValue::from_static("17")),
            Some(Code::Unknown)
        );
        assert_eq!(
            Code::from_header(&HeaderValue::from_static("9999999999")),
            Some(Code::Unknown)
        );
        assert_eq!(Code::from_connect_name("NOT_FOUND"), None);
        assert_eq!(Code::from_connect_name("cancelled"), None);
    }

    #[test]
    fn percent_encoding_of_non_ascii_and_percent() {
        assert_eq!(percent_encode_message("plain text ~!"), "plain text ~!");
        assert_eq!(percent_encode_message("100%"), "100%25");
        assert_eq!(percent_encode_message("é"), "%C3%A9");
        assert_eq!(percent_encode_message("a\r\nb\t"), "a%0D%0Ab%09");
        assert_eq!(percent_encode_message("\u{7f}"), "%7F");
        let msg = "naïve 100% ✓ 🦀";
        assert_eq!(
            percent_decode_message(percent_encode_message(msg).as_bytes()),
            msg
        );
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode_message(b"%41%42c"), "ABc");
        assert_eq!(percent_decode_message(b"%e2%9c%93"), "✓");
        // Broken sequences are kept as they are.
        assert_eq!(percent_decode_message(b"50% off %zz %4"), "50% off %zz %4");
        assert_eq!(percent_decode_message(b"%"), "%");
        // Invalid UTF-8 is replaced, not refused.
        assert_eq!(percent_decode_message(b"a%FFb"), "a\u{FFFD}b");
        // '+' is literal in grpc-message.
        assert_eq!(percent_decode_message(b"a+b"), "a+b");
        assert_eq!(&*percent_decode(b"a+b%2B", true), b"a b+");
    }

    #[test]
    fn trailers_round_trip() {
        let status = RpcStatus {
            code: Code::NotFound,
            message: "no such thing: ünïcode 100%".into(),
            details: Some(Bytes::from_static(b"\x08\x05\x12\x01x\xff")),
        };
        let mut h = HeaderMap::new();
        status.write_trailers(&mut h);
        assert_eq!(h[GRPC_STATUS], "5");
        assert_eq!(h[GRPC_MESSAGE], "no such thing: %C3%BCn%C3%AFcode 100%25");
        // Unpadded base64 on the wire.
        assert!(!h[GRPC_STATUS_DETAILS].as_bytes().contains(&b'='));
        assert_eq!(RpcStatus::from_trailers(&h), Some(status));

        // Rewriting a status without message or details removes the old ones.
        RpcStatus::new(Code::Ok, "").write_trailers(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(
            RpcStatus::from_trailers(&h),
            Some(RpcStatus::new(Code::Ok, ""))
        );
    }

    #[test]
    fn from_trailers_edge_cases() {
        assert_eq!(RpcStatus::from_trailers(&HeaderMap::new()), None);

        let mut h = HeaderMap::new();
        h.insert(GRPC_STATUS, HeaderValue::from_static("nope"));
        h.insert(GRPC_MESSAGE, HeaderValue::from_static("bad%"));
        h.insert(
            GRPC_STATUS_DETAILS,
            HeaderValue::from_static("!!!not base64"),
        );
        let s = RpcStatus::from_trailers(&h).unwrap();
        assert_eq!(s.code, Code::Unknown);
        assert_eq!(s.message, "bad%");
        assert_eq!(s.details, None);

        // Padded and unpadded details both decode.
        for v in ["AQID", "AQI=", "AQI"] {
            h.insert(GRPC_STATUS_DETAILS, HeaderValue::from_static(v));
            assert!(
                RpcStatus::from_trailers(&h).unwrap().details.is_some(),
                "{v}"
            );
        }
        h.insert(GRPC_STATUS_DETAILS, HeaderValue::from_static("AQI="));
        assert_eq!(
            RpcStatus::from_trailers(&h).unwrap().details.as_deref(),
            Some(&[1u8, 2][..])
        );
    }
}
