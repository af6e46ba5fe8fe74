//! `RateLimit`, `RateLimit-Policy` and `Retry-After` from a [`Decision`].
//!
//! Follows draft-ietf-httpapi-ratelimit-headers (-09 and later): both fields are
//! structured-field lists whose members are a quoted policy name with parameters,
//! `RateLimit-Policy: "api_key.10/1s";q=10;w=1` and `RateLimit: "api_key.10/1s";r=3;t=1`.
//! Only the binding window is advertised. Seconds are rounded up, so a client that
//! waits `t` or `Retry-After` seconds is not refused for having come back early.

use super::Decision;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Sets the rate-limit headers `d` calls for (replacing any present): the two
/// `RateLimit` fields when a window applied, `Retry-After` when refused.
pub fn render_headers(d: &Decision, headers: &mut HeaderMap) {
    if let Some(name) = &d.policy {
        let name = sf_string(name);
        let policy = format!("{name};q={};w={}", d.limit, secs_up(d.window).max(1));
        let state = format!("{name};r={};t={}", d.remaining, secs_up(d.reset));
        if let (Ok(p), Ok(s)) = (
            HeaderValue::from_str(&policy),
            HeaderValue::from_str(&state),
        ) {
            headers.insert(RATELIMIT_POLICY, p);
            headers.insert(RATELIMIT, s);
        }
    }
    if let Some(wait) = d.retry_after {
        headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(secs_up(wait).max(1)),
        );
    }
}

fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A structured-field string: quoted, `"` and `\` escaped, other bytes outside
/// printable ASCII dropped.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_and_escapes() {
        assert_eq!(secs_up(Duration::from_millis(1001)), 2);
        assert_eq!(secs_up(Duration::from_secs(3)), 3);
        assert_eq!(sf_string("a\"b\\c\u{7f}"), r#""a\"b\\c""#);
    }
}
