//! API keys: format, generation, hashing and constant-time verification.
//!
//! # Format
//!
//! The platform issues keys of the form `{pk|sk}_{live|test}_{appprefix}_{secret}`:
//!
//! - `sk_` keys are [`KeyKind::Secret`] (servers), `pk_` keys [`KeyKind::Public`]
//!   (browsers, bound to allowed `Origin`s);
//! - `live`/`test` is the environment;
//! - `appprefix` is 1–12 characters `[a-z0-9]`, a short label for humans and secret
//!   scanners (not necessarily the app id, and never trusted for authorization);
//! - `secret` is exactly 32 base62 characters `[0-9A-Za-z]` (≈190 bits), drawn from
//!   the OS CSPRNG by rejection sampling, so every character is uniform.
//!
//! Well-formed keys are 42–53 bytes of ASCII ([`MIN_KEY_LEN`], [`MAX_KEY_LEN`]);
//! [`parse`] refuses anything else before looking further, so no large input is ever
//! scanned or hashed.
//!
//! # What the edge stores
//!
//! Only the SHA-256 of the whole key string ([`ApiKeySpec::sha256`]) with its binding:
//! app, kind, scopes, expiry, and for public keys the allowed origins. Revocation
//! removes the record from the config; a [`KeyStore`] is an immutable snapshot built
//! off the request path from that config and swapped with it, so nothing can outlive
//! a revocation.
//!
//! # Verification ([`KeyStore::verify`])
//!
//! 1. [`parse`] strictly (`Malformed`);
//! 2. SHA-256 the presented string;
//! 3. look the digest up in a `HashMap<[u8; 32], _>` (the shard of its first byte;
//!    `Unknown` when absent), then
//!    compare the stored digest with the computed one using
//!    [`subtle::ConstantTimeEq`];
//! 4. the key's `sk_`/`pk_` prefix must match the record's kind (`KindMismatch`);
//! 5. the record's app must be the app the request is for (`WrongApp`);
//! 6. the key must not be expired (`Expired`);
//! 7. public keys: the request's `Origin` must be present and listed
//!    (`OriginNotAllowed`).
//!
//! Scopes are checked by the caller with [`has_scopes`], against the route's policy.
//!
//! # Review note: the constant-time path
//!
//! The secret an attacker wants is a valid key. The edge never holds one: it holds
//! SHA-256 digests, and no step compares the presented key's bytes with anything
//! secret. What each step can reveal through timing:
//!
//! - **Parsing** branches on the presented string's characters and length. That is
//!   the attacker's own input; it says nothing about any stored key.
//! - **Hashing** with `ring::digest` runs in time that depends only on the input
//!   length (no data-dependent branches or table lookups), and the length of a
//!   well-formed key depends only on its public app prefix.
//! - **The hash-indexed lookup** is not constant-time: the map hashes the digest with
//!   a per-process random SipHash key and, on a tag match, compares candidate digests
//!   with an ordinary `==`. At most this reveals whether the *digest* of a guess
//!   lands near, or shares leading bytes with, a stored digest. That does not leak
//!   the secret: the index is a digest of the secret, unrelated to the order of its
//!   bytes. Changing any character of a guess changes the whole digest
//!   unpredictably, so there is no gradient — a guess sharing 31 of 32 secret
//!   characters with a real key is no "closer" in digest space than a random one, and
//!   the classic byte-by-byte timing attack on a plaintext `==` has nothing to climb.
//!   Even a fully known digest would only help with a SHA-256 preimage, which is
//!   infeasible, and a digest alone authenticates nothing.
//! - **The final equality** of stored and computed digest uses
//!   [`subtle::ConstantTimeEq`], so the accept/reject decision itself takes the same
//!   time whatever bytes differ. (After a successful map lookup it always holds; it
//!   is kept so that the one comparison that decides acceptance is constant-time
//!   independently of the map's implementation.)
//! - **Kind, app, expiry and origin checks** run only after the caller has proved
//!   possession of a valid key, so their timing tells nothing to anyone who does not
//!   already hold it.
//!
//! That is enough because the only question a remote caller can time is "is this
//! string a valid key", and timing adds no information about the answer's secret
//! beyond digest-space facts that preimage resistance makes useless; the 190-bit
//! secret keeps online guessing itself hopeless. The integration test
//! `filters/tests/apikey_timing.rs` checks statistically (with a wide band, to catch
//! only gross regressions such as a plaintext comparison) that near-miss keys are
//! rejected no faster or slower than random ones.
//!
//! Callers should answer every [`KeyError`] with the same external response (401/403
//! without detail) and use [`KeyError::reason`] only as a metrics label.
//!
//! [`ApiKeySpec::sha256`]: tollgate_routing::ApiKeySpec::sha256

mod format;
mod headers;
mod store;
mod verified;

pub use format::{
    APP_PREFIX_MAX, MAX_KEY_LEN, MIN_KEY_LEN, ParsedKey, SECRET_LEN, generate, parse,
    random_base62, sha256, sha256_hex,
};
pub use headers::{API_KEY_HEADER, from_headers, looks_like_key, with_bearer};
pub use store::{KeyIdentity, KeyStore, check_record, has_scopes};
pub use tollgate_routing::KeyKind;

/// Why a key was refused (or a key store could not be built).
///
/// Variants carry no data so the type is `Copy` and cheap on the hot path; details
/// about bad records are logged when a store is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a well-formed key (wrong prefix, environment, app prefix, secret, length).
    #[error("malformed API key")]
    Malformed,
    /// Well-formed but not a key the edge knows (never issued, or revoked).
    #[error("unknown API key")]
    Unknown,
    /// A valid key of another app.
    #[error("API key belongs to another app")]
    WrongApp,
    /// A valid key past its expiry.
    #[error("API key expired")]
    Expired,
    /// A public key used without an `Origin`, or from an origin it does not allow.
    #[error("origin not allowed for this public key")]
    OriginNotAllowed,
    /// The key's `sk_`/`pk_` prefix disagrees with its record's kind.
    #[error("API key kind does not match its record")]
    KindMismatch,
    /// The request carries two different keys (`Authorization` and `x-api-key`).
    #[error("request carries more than one API key")]
    Ambiguous,
    /// A key record is unusable: bad hash, duplicate hash, or bad allowed origin.
    #[error("invalid API key record")]
    InvalidRecord,
    /// The OS random number generator failed while generating a key.
    #[error("random number generator unavailable")]
    Rng,
}

impl KeyError {
    /// A short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyError::Malformed => "malformed",
            KeyError::Unknown => "unknown",
            KeyError::WrongApp => "wrong_app",
            KeyError::Expired => "expired",
            KeyError::OriginNotAllowed => "origin_not_allowed",
            KeyError::KindMismatch => "kind_mismatch",
            KeyError::Ambiguous => "ambiguous",
            KeyError::InvalidRecord => "invalid_record",
            KeyError::Rng => "rng",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_and_snake_case() {
        let all = [
            KeyError::Malformed,
            KeyError::Unknown,
            KeyError::WrongApp,
            KeyError::Expired,
            KeyError::OriginNotAllowed,
            KeyError::KindMismatch,
            KeyError::Ambiguous,
            KeyError::InvalidRecord,
            KeyError::Rng,
        ];
        let mut seen = std::collections::HashSet::new();
        for e in all {
            let r = e.reason();
            assert!(seen.insert(r), "duplicate reason {r}");
            assert!(r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(!e.to_string().is_empty());
        }
    }
}
