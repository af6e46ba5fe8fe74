//! ACME challenges answered at the edge while the control service validates a
//! hostname (RFC 8555 HTTP-01, RFC 8737 TLS-ALPN-01).
//!
//! The control service decides which challenges exist; the proxy only compiles them
//! ([`AcmeTable`], built with each config generation, off the request path) and
//! answers them: [`http01::answer`] before routing on every listener, and
//! [`tls_alpn`] in the TLS acceptor for clients that offer `acme-tls/1`.
//! Nothing here runs for a request or handshake that is not a challenge beyond one
//! prefix compare or one ALPN scan.

pub mod http01;
mod metrics;
mod table;
pub mod tls_alpn;

pub use metrics::AcmeMetrics;
pub use table::AcmeTable;
