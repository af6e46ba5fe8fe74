//! W3C Trace Context (`traceparent`), sans I/O: bytes in, a parsed parent out, and the
//! header the proxy sends when it records a span of its own.
//!
//! <https://www.w3.org/TR/trace-context/#traceparent-header>: `version-traceid-parentid-flags`
//! in lowercase hex, `00-` + 32 + `-` + 16 + `-` + 2 characters. Version `ff` and all-zero
//! ids are invalid; a later version is read by its version-00 prefix when what follows
//! it starts with `-`.

use http::header::{GetAll, HeaderName};
use http::{HeaderMap, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`.
const LEN: usize = 55;

/// A valid incoming `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    /// The caller's span: the parent of the proxy's request span.
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceParent {
    /// The caller recorded its span and asks the callee to record too.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// What the request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    Absent,
    Valid(TraceParent),
    /// Malformed, or more than one `traceparent` header.
    Invalid,
}

/// Reads the request's `traceparent` (exactly one header, valid).
pub fn incoming(headers: &HeaderMap) -> Incoming {
    let mut all = headers.get_all(&TRACEPARENT).iter();
    match (all.next(), all.next()) {
        (None, _) => Incoming::Absent,
        (Some(v), None) => parse(v.as_bytes()).map_or(Incoming::Invalid, Incoming::Valid),
        (Some(_), Some(_)) => Incoming::Invalid,
    }
}

/// Parses one `traceparent` value.
pub fn parse(value: &[u8]) -> Option<TraceParent> {
    let v = value.trim_ascii();
    if v.len() < LEN {
        return None;
    }
    let version = hex(&v[0..2])? as u8;
    match version {
        0xff => return None,
        0 if v.len() != LEN => return None,
        // A later version: its own fields may follow ours, after a dash.
        _ if v.len() > LEN && v[LEN] != b'-' => return None,
        _ => {}
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = hex(&v[3..35])?;
    let parent_id = hex(&v[36..52])? as u64;
    let flags = hex(&v[53..55])? as u8;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

/// Lowercase hex digits only (the spec refuses uppercase), at most 32 of them.
fn hex(digits: &[u8]) -> Option<u128> {
    let mut out: u128 = 0;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        out = (out << 4) | u128::from(n);
    }
    Some(out)
}

/// The `traceparent` naming `span_id` of `trace_id` as the parent, sampled.
pub fn format(trace_id: u128, span_id: u64) -> HeaderValue {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    for (i, slot) in out[3..35].iter_mut().enumerate() {
        *slot = DIGITS[((trace_id >> (124 - 4 * i)) & 0xf) as usize];
    }
    for (i, slot) in out[36..52].iter_mut().enumerate() {
        *slot = DIGITS[((span_id >> (60 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits and dashes are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `tracestate` headers as one list (they may be split over several lines).
pub fn tracestate(values: GetAll<'_, HeaderValue>) -> Option<String> {
    let mut out = String::new();
    for v in values {
        let Ok(s) = v.to_str() else { continue };
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(s);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_what_the_spec_allows_and_nothing_else() {
        let good = TraceParent {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            parent_id: 0x00f067aa0ba902b7,
            flags: 1,
        };
        let table: &[(&str, Option<TraceParent>)] = &[
            (GOOD, Some(good)),
            (&format!(" {GOOD} "), Some(good)),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                Some(TraceParent { flags: 0, ..good }),
            ),
            // A later version: read by its version-00 prefix.
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes",
                Some(good),
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
                Some(TraceParent { flags: 9, ..good }),
            ),
            ("", None),
            ("garbage", None),
            // Version 00 is exactly 55 characters.
            (&format!("{GOOD}-x"), None),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                None,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                None,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                None,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                None,
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                None,
            ),
        ];
        for (text, want) in table {
            assert_eq!(parse(text.as_bytes()), *want, "{text:?}");
        }
    }

    #[test]
    fn formats_what_it_parses() {
        let v = format(0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7);
        assert_eq!(v, GOOD);
        let p = parse(v.as_bytes()).expect("valid");
        assert!(p.sampled());
        assert_eq!(
            format(1, 2),
            "00-00000000000000000000000000000001-0000000000000002-01"
        );
    }

    #[test]
    fn two_traceparent_headers_are_invalid() {
        let mut h = HeaderMap::new();
        assert_eq!(incoming(&h), Incoming::Absent);
        h.append(&TRACEPARENT, HeaderValue::from_static(GOOD));
        assert!(matches!(incoming(&h), Incoming::Valid(_)));
        h.append(&TRACEPARENT, HeaderValue::from_static(GOOD));
        assert_eq!(incoming(&h), Incoming::Invalid);
    }

    #[test]
    fn tracestate_lines_are_joined() {
        let mut h = HeaderMap::new();
        assert_eq!(tracestate(h.get_all(&TRACESTATE)), None);
        h.append(&TRACESTATE, HeaderValue::from_static("a=1"));
        h.append(&TRACESTATE, HeaderValue::from_static("b=2"));
        assert_eq!(
            tracestate(h.get_all(&TRACESTATE)).as_deref(),
            Some("a=1,b=2")
        );
    }
}
