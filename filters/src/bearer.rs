//! The `Authorization: Bearer` credential, parsed one way for every filter that reads it
//! (API keys, OIDC access tokens).
//!
//! RFC 6750 §2.1: `credentials = "Bearer" 1*SP b64token`, with
//! `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`. The scheme
//! is matched case-insensitively (RFC 9110 §11.1); whitespace around the whole field
//! value is not part of it (RFC 9110 §5.5) and is ignored.
//!
//! Under the `Bearer` scheme anything else is [`BearerError::Malformed`] rather than a
//! guess at what was meant: no token, a tab instead of a space, a second word, a byte
//! outside the charset (non-ASCII included). `Authorization` is a singleton field
//! (RFC 9110 §11.6.2), so two of them are [`BearerError::Repeated`], whatever they say:
//! another hop may have read the other one. Other schemes (`Basic`, …) are not bearer
//! credentials and yield `Ok(None)`.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

/// Why a request's `Authorization` header is not a usable bearer credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum BearerError {
    /// The `Bearer` scheme without exactly one well-formed b64token after it.
    #[error("malformed bearer credentials")]
    Malformed,
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    Repeated,
}

impl BearerError {
    /// Stable snake_case label, for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            BearerError::Malformed => "malformed",
            BearerError::Repeated => "ambiguous",
        }
    }
}

/// The token of the request's `Authorization: Bearer <token>`; `Ok(None)` without an
/// `Authorization` header or with another scheme.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<&str>, BearerError> {
    match field(headers)? {
        Some(value) => parse(value.as_bytes()),
        None => Ok(None),
    }
}

/// The request's one `Authorization` field value, unparsed (for [`parse`]); `Ok(None)`
/// without one, [`BearerError::Repeated`] with two or more.
pub fn field(headers: &HeaderMap) -> Result<Option<&HeaderValue>, BearerError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BearerError::Repeated);
    }
    Ok(Some(value))
}

/// The token of one `Authorization` field value; `Ok(None)` for another scheme.
pub fn parse(value: &[u8]) -> Result<Option<&str>, BearerError> {
    let value = trim_ows(value);
    let scheme_len = value
        .iter()
        .position(|&b| !is_tchar(b))
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_len);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    let Some(after_sp) = rest.strip_prefix(b" ") else {
        return Err(BearerError::Malformed);
    };
    let token = skip_spaces(after_sp);
    if !is_b64token(token) {
        return Err(BearerError::Malformed);
    }
    // The b64token charset is ASCII, hence UTF-8.
    std::str::from_utf8(token)
        .map(Some)
        .map_err(|_| BearerError::Malformed)
}

/// Field-value trimming (RFC 9110 §5.5): SP and HTAB at both ends.
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn skip_spaces(mut v: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = v {
        v = rest;
    }
    v
}

/// `tchar` of RFC 9110 §5.6.2, the characters of an auth-scheme.
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// The b64token characters before any `=` padding.
fn is_b64char(b: u8) -> bool {
    B64CHAR[usize::from(b)]
}

/// Every byte of `block` is a b64token character before padding: the same set as
/// [`B64CHAR`], written as comparisons without branches.
fn all_b64chars(block: &[u8]) -> bool {
    block.iter().fold(true, |ok, &b| {
        let lower = b | 0x20;
        ok & ((lower.wrapping_sub(b'a') < 26)
            | (b.wrapping_sub(b'0') < 10)
            | (b == b'-')
            | (b == b'.')
            | (b == b'_')
            | (b == b'~')
            | (b == b'+')
            | (b == b'/'))
    })
}

const TCHAR: [bool; 256] = byte_set(b"!#$%&'*+-.^_`|~");
const B64CHAR: [bool; 256] = byte_set(b"-._~+/");

/// ASCII letters and digits plus `extra`, as a table: a token of a JWT's length is
/// checked at one lookup per byte.
const fn byte_set(extra: &[u8]) -> [bool; 256] {
    let mut set = [false; 256];
    let mut b = 0;
    while b < 256 {
        set[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        set[extra[i] as usize] = true;
        i += 1;
    }
    set
}

fn is_b64token(token: &[u8]) -> bool {
    // A token without padding (a JWT, an API key) is checked in blocks the compiler
    // vectorises; one with `=` or a bad byte takes the exact scan below.
    if !token.is_empty() && token.chunks(32).all(all_b64chars) {
        return true;
    }
    let body = token
        .iter()
        .position(|&b| !is_b64char(b))
        .unwrap_or(token.len());
    let (body, padding) = token.split_at(body);
    !body.is_empty() && padding.iter().all(|&b| b == b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(value: &[u8]) -> Result<Option<String>, BearerError> {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        from_headers(&h).map(|t| t.map(str::to_owned))
    }

    fn token(t: &str) -> Result<Option<String>, BearerError> {
        Ok(Some(t.to_owned()))
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(one(format!("{scheme} abc").as_bytes()), token("abc"));
        }
    }

    #[test]
    fn one_or_more_spaces_separate_scheme_and_token() {
        assert_eq!(one(b"Bearer abc"), token("abc"));
        assert_eq!(one(b"Bearer     abc"), token("abc"));
        // Whitespace around the field value is not part of it.
        assert_eq!(one(b"  Bearer abc \t "), token("abc"));
    }

    #[test]
    fn the_whole_b64token_charset_and_padding_are_accepted() {
        let all = "AZaz09-._~+/";
        assert_eq!(one(format!("Bearer {all}").as_bytes()), token(all));
        assert_eq!(one(b"Bearer abc=="), token("abc=="));
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
        assert_eq!(one(format!("Bearer {jwt}").as_bytes()), token(jwt));
    }

    #[test]
    fn tabs_are_not_spaces() {
        assert_eq!(one(b"Bearer\tabc"), Err(BearerError::Malformed));
        assert_eq!(one(b"Bearer \tabc"), Err(BearerError::Malformed));
        assert_eq!(one(b"Bearer\t abc"), Err(BearerError::Malformed));
    }

    #[test]
    fn an_empty_token_is_malformed() {
        for v in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer    ",
            b"bearer\t",
            b"Bearer =",
        ] {
            assert_eq!(one(v), Err(BearerError::Malformed), "{v:?}");
        }
    }

    #[test]
    fn trailing_junk_is_malformed() {
        for v in [
            &b"Bearer abc def"[..],
            b"Bearer abc,def",
            b"Bearer abc=def",
            b"Bearer abc= =",
            b"Bearer abc\"",
            b"Bearer abc;",
            b"Bearer realm=\"x\"",
            b"Bearer, abc",
        ] {
            assert_eq!(one(v), Err(BearerError::Malformed), "{v:?}");
        }
    }

    #[test]
    fn non_ascii_is_malformed() {
        assert_eq!(one(b"Bearer abc\xe9"), Err(BearerError::Malformed));
        assert_eq!(
            one(b"Bearer \xc3\xa9t\xc3\xa9"),
            Err(BearerError::Malformed)
        );
        assert_eq!(one(b"Bearer\xa0abc"), Err(BearerError::Malformed));
    }

    #[test]
    fn other_schemes_and_no_header_are_not_bearer_credentials() {
        for v in [
            &b"Basic dXNlcjpwYXNz"[..],
            b"Token abc",
            b"Bearerabc",
            b"Bearer-x abc",
            b"",
            b"   ",
        ] {
            assert_eq!(one(v), Ok(None), "{v:?}");
        }
        assert_eq!(from_headers(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn two_authorization_headers_are_refused_even_when_equal() {
        for (a, b) in [
            ("Bearer abc", "Bearer abc"),
            ("Bearer abc", "Bearer def"),
            ("Basic dXNlcjpwYXNz", "Bearer abc"),
        ] {
            let mut h = HeaderMap::new();
            h.append(AUTHORIZATION, HeaderValue::from_static(a));
            h.append(AUTHORIZATION, HeaderValue::from_static(b));
            assert_eq!(from_headers(&h), Err(BearerError::Repeated), "{a} / {b}");
        }
    }

    #[test]
    fn the_tables_hold_exactly_the_grammar_characters() {
        for b in 0..=255u8 {
            let alnum = b.is_ascii_alphanumeric();
            let tchar = alnum || b"!#$%&'*+-.^_`|~".contains(&b);
            let b64 = alnum || b"-._~+/".contains(&b);
            assert_eq!(is_tchar(b), tchar, "tchar {b:#04x}");
            assert_eq!(is_b64char(b), b64, "b64token {b:#04x}");
            assert_eq!(all_b64chars(&[b]), b64, "block check {b:#04x}");
            assert_eq!(
                all_b64chars(&[b'a'; 40].map(|_| b)),
                b64,
                "block of {b:#04x}"
            );
        }
    }

    #[test]
    fn one_bad_byte_anywhere_in_a_long_token_is_refused() {
        // Lengths on both sides of the 32-byte blocks, one wrong byte at each position.
        for len in [1, 31, 32, 33, 64, 65, 600] {
            let good: Vec<u8> = (0..len).map(|i| b"aZ09-._~+/"[i % 10]).collect();
            assert!(is_b64token(&good), "{len} good bytes");
            for at in 0..len {
                for bad in [b' ', b'=', b'"', 0x80, b'\t'] {
                    let mut token = good.clone();
                    token[at] = bad;
                    // `=` is padding: allowed only from there to the end.
                    let padded = bad == b'=' && at > 0 && token[at..].iter().all(|&b| b == b'=');
                    assert_eq!(
                        is_b64token(&token),
                        padded,
                        "{len} bytes, {bad:#04x} at {at}"
                    );
                }
            }
        }
        let mut padded = vec![b'a'; 40];
        padded.extend_from_slice(b"==");
        assert!(is_b64token(&padded));
    }

    #[test]
    fn parse_reads_one_field_value() {
        assert_eq!(parse(b"Bearer abc"), Ok(Some("abc")));
        assert_eq!(parse(b"Basic abc"), Ok(None));
        assert_eq!(parse(b"Bearer a b"), Err(BearerError::Malformed));
        assert_eq!(BearerError::Malformed.reason(), "malformed");
        assert_eq!(BearerError::Repeated.reason(), "ambiguous");
    }
}
