//! Certificate store and SNI resolver for Tollgate's TLS termination.
//!
//! This crate owns:
//! - validating PEM certificate/key pairs handed to it ([`CertSource`] →
//!   [`CertStore::build`]): parsing, key/certificate match, validity window,
//!   hostname coverage, duplicate names; a certificate that expired after it was
//!   accepted can still be served ([`Expiry`], [`CertStore::build_isolated`]), so
//!   one lapsed certificate never refuses a whole store;
//! - picking a certificate by SNI, exact name first, then a `*.parent`
//!   wildcard covering one label ([`CertStore::resolve`]);
//! - the rustls resolver with atomic hot swap ([`CertResolver`]) and the
//!   rustls `ServerConfig` built on the ring provider ([`server_config`]);
//! - self-signed bootstrap certificates ([`self_signed`]).
//!
//! It must not do I/O beyond what it is handed: it reads no files, opens no
//! sockets and watches nothing; callers load PEM text and call
//! [`CertResolver::swap`]. It must not panic on any input: bad input is a
//! [`CertError`], and an unknown server name makes the handshake fail cleanly.

mod client;
mod clock;
mod error;
mod fingerprint;
mod names;
mod resolver;
mod selfsigned;
mod source;
mod store;
mod tls_config;

pub use client::client_config;
pub use error::{CertError, CertProblem};
pub use resolver::CertResolver;
pub use selfsigned::self_signed;
pub use source::CertSource;
pub use store::{CertStore, CertSummary, Expiry};
pub use tls_config::{TlsOptions, TlsVersion, known_cipher_suites, server_config};
