//! Request and response filters: one module per concern behind one phased trait.
//!
//! Owns credential checks ([`apikey`], [`oidc`]) and, later, limits and protocol
//! translation. Filters read an immutable config built off the request path and never
//! block it: network fetches (JWKS) happen in the background or behind a rate limit.
//! The proxy maps a filter's typed error to the caller's protocol.
//! [`rpc`] is the sans-I/O codec for gRPC-Web and Connect ↔ gRPC translation.

pub mod apikey;
pub mod budget;
pub mod cors;
pub mod filter;
pub mod limit;
pub mod oidc;
pub mod rpc;
