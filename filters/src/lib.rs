//! Request and response filters: one module per concern behind one phased trait.
//!
//! Owns credential checks ([`apikey`], [`oidc`], both reading `Authorization` through
//! the one [`bearer`] parser) and, later, limits and protocol translation. Filters read
//! an immutable config built off the request path and never block it: network fetches
//! (JWKS) happen in the background or behind a rate limit.
//! The proxy maps a filter's typed error to the caller's protocol.
//! [`rpc`] is the sans-I/O codec for gRPC-Web and Connect ↔ gRPC translation.
//! The gateway filters are sans-I/O too, compiled once per route: [`redirect`]
//! (plaintext → HTTPS, host and path redirects), [`secure`] (HSTS and security
//! headers), [`headers`] (configured header edits) and [`cors`].

pub mod apikey;
pub mod bearer;
pub mod budget;
pub mod cors;
pub mod filter;
pub mod headers;
pub mod limit;
pub mod oidc;
pub mod redirect;
pub mod rpc;
pub mod secure;
