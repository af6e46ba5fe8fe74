//! Bearer tokens: the admin token (the whole API) and the optional proxy token (the
//! feed only).
//!
//! Comparison is constant-time in the token's content: both the presented and the
//! configured token are hashed with SHA-256 and the two 32-byte digests are compared
//! with a fold that always visits every byte (no early exit). The digests have a
//! fixed length, so not even the configured token's length is revealed by timing.
//! (`subtle` is not a dependency of this crate; the fold is the same technique.)

use tollgate_filters::apikey::sha256_hex;

/// Shortest token accepted at start.
pub const MIN_TOKEN_LEN: usize = 16;

/// A configured token, kept only as its digest.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 64],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Checks and keeps `token`: at least [`MIN_TOKEN_LEN`] characters, all
    /// allowed in an HTTP header.
    pub fn new(token: &str) -> Result<Token, String> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!("must be at least {MIN_TOKEN_LEN} characters"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces".into());
        }
        Ok(Token {
            digest: digest(token),
        })
    }

    /// Whether `presented` is this token, in time independent of either's content.
    pub fn matches(&self, presented: &str) -> bool {
        let other = digest(presented);
        self.digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

fn digest(s: &str) -> [u8; 64] {
    let hex = sha256_hex(s);
    let mut out = [0u8; 64];
    out.copy_from_slice(hex.as_bytes());
    out
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_same_token() {
        let t = Token::new("0123456789abcdef").unwrap();
        assert!(t.matches("0123456789abcdef"));
        assert!(!t.matches("0123456789abcdeF"));
        assert!(!t.matches(""));
        assert!(Token::new("short").is_err());
    }

    #[test]
    fn parses_bearer() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
