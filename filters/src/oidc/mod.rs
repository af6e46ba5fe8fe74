//! OIDC access tokens: JWT verification (RFC 7515/7517/7518/7519, RFC 8725, RFC 9068)
//! and JWKS management.
//!
//! - [`verify`] is pure: one token against known keys at a given time.
//! - [`IssuerKeys`] keeps one issuer's keys fresh (discovery, background refresh,
//!   rate-limited refetch on unknown `kid`, last good keys kept, fail closed before the
//!   first fetch).
//! - [`IssuerRegistry`] holds every configured issuer and picks one by `iss`.
//!
//! Only `RS256`, `PS256`, `ES256` and `EdDSA` (Ed25519) are ever accepted, and only
//! those the issuer allows; never `none`, never HMAC. Identity comes only from a token
//! whose signature and claims were checked. Header members that point at other keys
//! (`jku`, `x5u`, `jwk`, `x5c`) are ignored: keys come only from the issuer's JWKS.
//!
//! Signatures are checked through `jsonwebtoken` (with `ring` as its crypto provider),
//! keys read through its JWK model. The compact-JWS framing stays here, in front of it,
//! because it is stricter than the crate: duplicate JSON members, `crit`, `b64`, JWE
//! headers, non-canonical base64url and oversized tokens are refused before any key is
//! used.

mod claims;
mod error;
mod fetch;
mod json;
mod jwk;
mod jwks_cache;
mod jws;
mod registry;
mod ring_provider;
mod verify;

pub use claims::{TokenValues, VerifiedToken};
pub use error::TokenError;
pub use fetch::{FETCH_TIMEOUT, MAX_DOCUMENT};
pub use jwk::{Algorithm, JwkSet};
pub use jwks_cache::{IssuerKeys, TokenDigest, VERIFIED_CACHE_CAPACITY};
pub use jws::MAX_TOKEN_LEN;
pub use registry::IssuerRegistry;
pub use verify::{peek_issuer, verify};
