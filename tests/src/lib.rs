//! End-to-end test harness: starts the real `tollgate` binary on ephemeral ports,
//! real upstream servers, and real TLS / HTTP/1.1 / HTTP/2 clients.
//!
//! Tests live in `tests/tests/e2e/` (one binary); this library is what they share. The binary must be
//! built first (`cargo build --bins`, done by `scripts/test`).

pub mod auth;
pub mod client;
pub mod config;
pub mod connect;
pub mod control;
pub mod grpc;
pub mod helpers;
pub mod oidc;
pub mod otlp;
pub mod pebble;
pub mod ports;
pub mod postgres;
pub mod proxy;
pub mod redis;
pub mod session;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod wait;

/// Error type for harness calls; tests unwrap these with context.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
