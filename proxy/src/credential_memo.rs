//! The last credential a connection presented, with its SHA-256: a client that sends
//! the same API key or access token on every request of a keep-alive connection (or
//! every stream of an HTTP/2 one) has it hashed once per connection, not per request.
//!
//! Only the digest is remembered, never a verdict: the key store and the issuers'
//! verified-token caches are looked up by it as for any request, so revocation, key
//! rotation, expiry and the route's policy apply exactly as without the memo.
//!
//! The comparison with the remembered credential is constant-time (for equal
//! lengths), so a connection shared by several clients (a CDN's, say) tells none of
//! them how much of another's credential their guess matched.

use std::sync::Mutex;
use tollgate_filters::apikey;

/// Longest credential remembered; longer ones are hashed on every request.
pub const MAX_REMEMBERED: usize = 4096;

/// One connection's memo. Requests of an HTTP/2 connection that find it busy hash
/// their credential themselves rather than wait.
#[derive(Debug, Default)]
pub struct CredentialMemo {
    last: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    credential: Vec<u8>,
    /// `None` until a credential is remembered.
    digest: Option<[u8; 32]>,
}

impl CredentialMemo {
    /// `credential`'s SHA-256: the remembered one when `credential` is the last
    /// credential presented here; otherwise taken, and remembered.
    pub fn sha256(&self, credential: &str) -> [u8; 32] {
        self.digest(credential, apikey::sha256)
    }

    /// [`sha256`](Self::sha256) with the hash function given (tests count its calls).
    fn digest(&self, credential: &str, sha256: impl FnOnce(&str) -> [u8; 32]) -> [u8; 32] {
        if credential.len() > MAX_REMEMBERED {
            return sha256(credential);
        }
        let Ok(mut last) = self.last.try_lock() else {
            return sha256(credential);
        };
        if let Some(digest) = last.digest
            && same_bytes(&last.credential, credential.as_bytes())
        {
            return digest;
        }
        let digest = sha256(credential);
        last.credential.clear();
        last.credential.extend_from_slice(credential.as_bytes());
        last.digest = Some(digest);
        digest
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

    #[test]
    fn the_same_credential_is_hashed_once_and_any_other_is_hashed_again() {
        let memo = CredentialMemo::default();
        let calls = Cell::new(0);
        let hash = |s: &str| {
            calls.set(calls.get() + 1);
            fake_sha(s)
        };
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
        let hash = |s: &str| {
            calls.set(calls.get() + 1);
            fake_sha(s)
        };
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
