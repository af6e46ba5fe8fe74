//! The last credential a connection presented, with its SHA-256: a client that sends
//! the same API key or access token on every request of a keep-alive connection (or
//! every stream of an HTTP/2 one) has it parsed and hashed once per connection, not
//! once per request.
//!
//! Only the parse and the digest are remembered, never a verdict: the key store and
//! the issuers' verified-token caches are looked up by the digest as for any request,
//! so revocation, key rotation, expiry and the route's policy apply exactly as without
//! the memo. Both are pure functions of the bytes compared.
//!
//! The comparison with the remembered bytes is constant-time (for equal lengths), so a
//! connection shared by several clients (a CDN's, say) tells none of them how much of
//! another's credential their guess matched.

use std::ops::Range;
use std::sync::Mutex;
use tollgate_filters::apikey;
use tollgate_filters::bearer::{self, BearerError};

/// Longest field value or credential remembered; longer ones are parsed and hashed on
/// every request.
pub const MAX_REMEMBERED: usize = 4096;

/// SHA-256.
pub type Digest = [u8; 32];

/// One connection's memo. Requests of an HTTP/2 connection that find it busy parse
/// and hash their credential themselves rather than wait.
#[derive(Debug, Default)]
pub struct CredentialMemo {
    last: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    /// An `Authorization` field value, or a credential on its own.
    bytes: Vec<u8>,
    /// Where the credential is in `bytes`: the bearer token of a field value, all of a
    /// credential.
    credential: Range<usize>,
    /// Whether `bytes` is a field value.
    field: bool,
    /// The credential's SHA-256; `None` until something is remembered.
    digest: Option<Digest>,
}

/// What a request's `Authorization: Bearer` carries.
pub struct Bearer<'h> {
    pub token: &'h str,
    /// The token's SHA-256, unless the field value was too long to remember.
    pub digest: Option<Digest>,
}

impl CredentialMemo {
    /// The bearer token of the request's `Authorization` field, as
    /// [`bearer::from_headers`] reads it, with its SHA-256: both remembered from the
    /// last request when it sent the same field value.
    pub fn bearer<'h>(
        &self,
        headers: &'h http::HeaderMap,
    ) -> Result<Option<Bearer<'h>>, BearerError> {
        let Some(value) = bearer::field(headers)? else {
            return Ok(None);
        };
        let bytes = value.as_bytes();
        let memo = (bytes.len() <= MAX_REMEMBERED)
            .then(|| self.last.try_lock().ok())
            .flatten();
        let Some(mut last) = memo else {
            return Ok(bearer::parse(bytes)?.map(|token| Bearer {
                token,
                digest: None,
            }));
        };
        if let Some(digest) = last.digest
            && last.field
            && same_bytes(&last.bytes, bytes)
        {
            // The same bytes parsed before: the span is in them, and ASCII.
            let token = bytes
                .get(last.credential.clone())
                .and_then(|t| std::str::from_utf8(t).ok())
                .ok_or(BearerError::Malformed)?;
            return Ok(Some(Bearer {
                token,
                digest: Some(digest),
            }));
        }
        let Some(token) = bearer::parse(bytes)? else {
            return Ok(None);
        };
        let start = token.as_ptr() as usize - bytes.as_ptr() as usize;
        let digest = apikey::sha256(token);
        last.remember(bytes, start..start + token.len(), true, digest);
        Ok(Some(Bearer {
            token,
            digest: Some(digest),
        }))
    }

    /// `credential`'s SHA-256: the remembered one when `credential` is the last
    /// credential presented here on its own; otherwise taken, and remembered.
    pub fn sha256(&self, credential: &str) -> Digest {
        self.digest(credential, apikey::sha256)
    }

    /// [`sha256`](Self::sha256) with the hash function given (tests count its calls).
    fn digest(&self, credential: &str, sha256: impl FnOnce(&str) -> Digest) -> Digest {
        if credential.len() > MAX_REMEMBERED {
            return sha256(credential);
        }
        let Ok(mut last) = self.last.try_lock() else {
            return sha256(credential);
        };
        if let Some(digest) = last.digest
            && !last.field
            && same_bytes(&last.bytes, credential.as_bytes())
        {
            return digest;
        }
        let digest = sha256(credential);
        last.remember(credential.as_bytes(), 0..credential.len(), false, digest);
        digest
    }
}

impl Remembered {
    fn remember(&mut self, bytes: &[u8], credential: Range<usize>, field: bool, digest: Digest) {
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
        self.credential = credential;
        self.field = field;
        self.digest = Some(digest);
    }
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in a8.iter().zip(b8) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn fake_sha(s: &str) -> [u8; 32] {
        let mut d = [0u8; 32];
        d[0] = s.len() as u8;
        d[1] = s
            .bytes()
            .fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
        d
    }

    /// `fake_sha`, counting its calls in `calls`.
    fn counted(calls: &Cell<u32>) -> impl Fn(&str) -> [u8; 32] + Copy + '_ {
        move |s| {
            calls.set(calls.get() + 1);
            fake_sha(s)
        }
    }

    #[test]
    fn the_same_credential_is_hashed_once_and_any_other_is_hashed_again() {
        let memo = CredentialMemo::default();
        let calls = Cell::new(0);
        let hash = counted(&calls);
        let a = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl";
        assert_eq!(memo.digest(a, hash), fake_sha(a));
        assert_eq!(memo.digest(a, hash), fake_sha(a));
        assert_eq!(calls.get(), 1, "the second request reused the digest");
        // Same length, one byte off (last byte, then first): hashed anew.
        let mut near = a.to_string();
        near.replace_range(a.len() - 1.., "X");
        assert_eq!(memo.digest(&near, hash), fake_sha(&near));
        assert_eq!(calls.get(), 2);
        let first_off = format!("F{}", &a[1..]);
        assert_eq!(memo.digest(&first_off, hash), fake_sha(&first_off));
        // A prefix of the remembered credential is a different credential.
        assert_eq!(
            memo.digest(&first_off[..9], hash),
            fake_sha(&first_off[..9])
        );
        assert_eq!(calls.get(), 4);
        // The memo now holds the last one only.
        assert_eq!(memo.digest(a, hash), fake_sha(a));
        assert_eq!(calls.get(), 5);
        // The empty credential is remembered like any other.
        memo.digest("", hash);
        memo.digest("", hash);
        assert_eq!(calls.get(), 6);
    }

    #[test]
    fn long_credentials_and_a_busy_memo_are_hashed_every_time() {
        let memo = CredentialMemo::default();
        let calls = Cell::new(0);
        let hash = counted(&calls);
        let long = "a".repeat(MAX_REMEMBERED + 1);
        memo.digest(&long, hash);
        memo.digest(&long, hash);
        assert_eq!(calls.get(), 2);
        memo.digest("sk_live_x", hash);
        let held = memo.last.lock().unwrap();
        assert_eq!(memo.digest("sk_live_x", hash), fake_sha("sk_live_x"));
        assert_eq!(calls.get(), 4, "hashed rather than waiting for the lock");
        drop(held);
        memo.digest("sk_live_x", hash);
        assert_eq!(calls.get(), 4);
    }

    fn auth(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn a_remembered_field_value_gives_the_same_token_and_digest_as_parsing_it() {
        let memo = CredentialMemo::default();
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl";
        for value in [
            format!("Bearer {jwt}"),
            format!("Bearer {jwt}"),
            format!("bearer   {jwt} "),
            format!("bearer   {jwt} "),
            "Bearer sk_live_acme_0123456789abcdefghijABCDEFGHIJzZ".to_string(),
            format!("Bearer {jwt}"),
        ] {
            let h = auth(&value);
            let got = memo.bearer(&h).unwrap().unwrap();
            let want = bearer::from_headers(&h).unwrap().unwrap();
            assert_eq!(got.token, want, "{value}");
            assert_eq!(got.digest, Some(apikey::sha256(want)), "{value}");
        }
        // A bare credential equal to a remembered field's token is not that field.
        let h = auth(&format!("Bearer {jwt}"));
        memo.bearer(&h).unwrap();
        assert_eq!(memo.sha256(jwt), apikey::sha256(jwt));
        // Refusals and other schemes are answered as the parser answers them.
        for value in ["Bearer", "Bearer a b", "Basic dXNlcg==", "Bearer\tabc"] {
            let h = auth(value);
            assert_eq!(
                memo.bearer(&h).map(|b| b.map(|b| b.token)),
                bearer::from_headers(&h),
                "{value}"
            );
        }
        let mut two = auth("Bearer abc");
        two.append(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(matches!(memo.bearer(&two), Err(BearerError::Repeated)));
        assert!(memo.bearer(&http::HeaderMap::new()).unwrap().is_none());
        // Too long to remember: parsed, not hashed here.
        let long = auth(&format!("Bearer {}", "a".repeat(MAX_REMEMBERED)));
        let b = memo.bearer(&long).unwrap().unwrap();
        assert_eq!((b.token.len(), b.digest), (MAX_REMEMBERED, None));
    }

    #[test]
    fn byte_comparison_covers_every_byte_and_the_length() {
        let base: Vec<u8> = (0..=255u8).cycle().take(613).collect();
        assert!(same_bytes(&base, &base.clone()));
        for i in [0, 7, 8, 300, 607, 608, 612] {
            let mut other = base.clone();
            other[i] ^= 0x40;
            assert!(!same_bytes(&base, &other), "byte {i}");
        }
        assert!(!same_bytes(&base, &base[..612]));
        assert!(same_bytes(b"", b""));
    }
}
