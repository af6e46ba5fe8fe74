//! Resume requests of resumable streams (`proxy/src/resume/token.rs`:
//! `ResumeRequest::from_headers` over `tollgate-resume-token`, `tollgate-resume-after` and
//! SSE's `Last-Event-ID: <token>.<n>`, `well_formed`, `generate`; the stored response head
//! `encode_head`/`decode_head` and `Wire::from_name`), and where a client's index lands
//! against the fleet's copy (`proxy/src/resume/mod.rs` `shared_position`).
//!
//! Input: 1 flags byte (bit 0: SSE route; bits 1-3: send the token, after and
//! `Last-Event-ID` headers; bit 4: send each twice, the second copy first-come; bits 5-6:
//! oldest and final entry known), 8 bytes oldest entry, 8 bytes final entry, then
//! `token \n after \n last-event-id \n stored head`.
//!
//! Properties:
//! - no panic; the request is read exactly as documented, checked against a model written
//!   here: the token header's value (ASCII, trimmed) and the after header (absent: 0; else a
//!   decimal `u64`, optional `+`, OWS around), an error otherwise; without a token header on
//!   an SSE route, a `Last-Event-ID` of the form `rs1_…<token>.<n>` (`n` decimal `u64`), `None`
//!   for other ids, an error for a bad `n`; `None` elsewhere;
//! - numbers never overflow: a count over `u64::MAX` is an error, never a wrapped value, and
//!   `shared_position` gives the documented answer for every `u64` (computed here in `u128`);
//! - what parses re-formats to itself: the request written back as the same headers (token
//!   and `after` in decimal, or `<token>.<n>`) reads back equal;
//! - garbage never makes a valid token: `well_formed` holds exactly for `rs1_` and 22 of
//!   `[A-Za-z0-9_-]` (checked for the header's token, the id's token and the raw pieces);
//!   such a token has no `.`, `{`, `}` (Redis hash tags) and is a header value; `generate`
//!   and any 16 bytes encoded like it are well formed and survive `Last-Event-ID`;
//! - a stored head decodes to headers that encode and decode to themselves;
//!   `Wire::from_name` accepts exactly the names `Wire::name` gives.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tollgate_proxy::fuzzing::Refusal;
use tollgate_proxy::fuzzing::shared_position;
use tollgate_proxy::fuzzing::token::{
    AFTER_HEADER, ResumeRequest, TOKEN_HEADER, Wire, decode_head, encode_head, generate,
    well_formed,
};

/// A decimal `u64` as Rust's `str::parse` reads it: an optional `+`, then digits.
fn decimal(s: &str) -> Option<u64> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: u128 = 0;
    for b in digits.bytes() {
        n = n * 10 + u128::from(b - b'0');
        if n > u128::from(u64::MAX) {
            return None;
        }
    }
    Some(n as u64)
}

fn token_shape(s: &str) -> bool {
    s.len() == 26
        && s.starts_with("rs1_")
        && s[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// HTTP's optional whitespace and the other ASCII whitespace `str::trim` drops; header
/// values hold no CR, LF or FF, so for them this is OWS.
fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}

type Expected = Result<Option<(String, u64)>, ()>;

/// The request the headers make, per the documentation of `from_headers`.
fn model(h: &HeaderMap, sse: bool) -> Expected {
    if let Some(t) = h.get(&TOKEN_HEADER) {
        let t = t.to_str().map_err(|_| ())?;
        let after = match h.get(&AFTER_HEADER) {
            None => 0,
            Some(a) => a.to_str().ok().and_then(|a| decimal(trim(a))).ok_or(())?,
        };
        return Ok(Some((trim(t).to_string(), after)));
    }
    if !sse {
        return Ok(None);
    }
    let Some(id) = h.get("last-event-id").and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let id = trim(id);
    let Some(dot) = id.find('.') else {
        return Ok(None);
    };
    let (token, n) = (&id[..dot], &id[dot + 1..]);
    if !token.starts_with("rs1_") {
        return Ok(None);
    }
    Ok(Some((token.to_string(), decimal(n).ok_or(())?)))
}

fn read(h: &HeaderMap, sse: bool) -> Expected {
    ResumeRequest::from_headers(h, sse)
        .map(|r| r.map(|r| (r.token, r.after)))
        .map_err(|_| ())
}

fn u64_at(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

fn check_position(after: u64, first: Option<u64>, end: Option<u64>) {
    let got = shared_position(after, first, end);
    let a = u128::from(after);
    let want = match (first, end) {
        (Some(f), _) if u128::from(f) > a + 1 => Err(Refusal::Gap { first: f }),
        (_, None) => Ok(None),
        (_, Some(e)) => {
            let last = u128::from(e).saturating_sub(1);
            if a > last {
                Err(Refusal::Beyond { last: last as u64 })
            } else {
                Ok(Some(last as u64))
            }
        }
    };
    assert_eq!(got, want, "after {after}, first {first:?}, end {end:?}");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let flags = data[0];
    let sse = flags & 1 != 0;
    let first = (flags & 0x20 != 0).then(|| u64_at(&data[1..9]));
    let end = (flags & 0x40 != 0).then(|| u64_at(&data[9..17]));
    let mut pieces = data[17..].splitn(4, |&b| b == b'\n');
    let token = pieces.next().unwrap_or_default();
    let after = pieces.next().unwrap_or_default();
    let id = pieces.next().unwrap_or_default();
    let stored = pieces.next().unwrap_or_default();

    // The request as the client sent it.
    let mut h = HeaderMap::new();
    let sent = [
        (flags & 2 != 0, &TOKEN_HEADER, token),
        (flags & 4 != 0, &AFTER_HEADER, after),
        (
            flags & 8 != 0,
            &http::HeaderName::from_static("last-event-id"),
            id,
        ),
    ];
    for (on, name, value) in sent {
        let Ok(v) = HeaderValue::from_bytes(value) else {
            continue;
        };
        if on {
            h.append(name.clone(), v.clone());
            if flags & 0x10 != 0 {
                h.append(name.clone(), HeaderValue::from_static("rs1_second.1"));
            }
        }
    }
    let got = read(&h, sse);
    assert_eq!(got, model(&h, sse), "{h:?}");

    // Garbage never makes a valid token.
    for piece in [token, after, id] {
        if let Ok(s) = std::str::from_utf8(piece) {
            assert_eq!(well_formed(s), token_shape(s), "{s:?}");
            assert_eq!(well_formed(trim(s)), token_shape(trim(s)));
        }
    }

    if let Ok(Some((t, n))) = &got {
        assert_eq!(well_formed(t), token_shape(t));
        if well_formed(t) {
            assert!(!t.contains(['.', '{', '}']));
        }
        // Written back the way it came, it reads back the same.
        let mut again = HeaderMap::new();
        if h.contains_key(&TOKEN_HEADER) {
            again.insert(
                TOKEN_HEADER,
                HeaderValue::from_str(t).expect("it was a value"),
            );
            again.insert(AFTER_HEADER, HeaderValue::from(*n));
        } else {
            let v = HeaderValue::from_str(&format!("{t}.{n}")).expect("it was a value");
            again.insert("last-event-id", v);
        }
        assert_eq!(read(&again, sse), Ok(Some((t.clone(), *n))));
        check_position(*n, first, end);
    }
    check_position(u64_at(&data[1..9]), first, end);
    check_position(u64_at(&data[9..17]), first, end);
    check_position(u64::MAX, first, end);

    // Tokens the edge issues are well formed and come back through `Last-Event-ID`.
    let mut raw = [0u8; 16];
    for (slot, b) in raw.iter_mut().zip(token.iter().chain(id)) {
        *slot = *b;
    }
    let issued = format!("rs1_{}", URL_SAFE_NO_PAD.encode(raw));
    let fresh = generate().expect("a random source");
    for t in [issued.as_str(), &*fresh] {
        assert!(well_formed(t), "{t}");
        assert!(!t.contains(['.', '{', '}']));
        let n = u64_at(&data[1..9]);
        let mut h = HeaderMap::new();
        h.insert(
            "last-event-id",
            HeaderValue::from_str(&format!("{t}.{n}")).expect("value"),
        );
        assert_eq!(read(&h, true), Ok(Some((t.to_string(), n))));
        assert_eq!(read(&h, false), Ok(None));
    }

    // Stored heads.
    let head = decode_head(stored);
    let lines = stored
        .split(|&b| b == b'\n')
        .filter(|l| l.contains(&b':'))
        .count();
    assert!(head.len() <= lines);
    let encoded = encode_head(&head);
    assert_eq!(decode_head(&encoded), head);
    assert_eq!(encode_head(&decode_head(&encoded)), encoded);

    // Wire names.
    if let Ok(s) = std::str::from_utf8(stored)
        && let Some(w) = Wire::from_name(s)
    {
        assert_eq!(w.name(), s);
    }
    for name in [
        "connect+proto",
        "connect+json",
        "grpc-web",
        "grpc-web-text",
        "sse",
    ] {
        let w = Wire::from_name(name).expect("a wire");
        assert_eq!(w.name(), name);
        assert!(w.resumable());
    }
    assert_eq!(Wire::from_name("unsupported"), None);
});
