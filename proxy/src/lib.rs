//! The Tollgate data plane.
//!
//! Owns the listeners (HTTP/1.1, h2c, TLS with SNI certificates), the request path
//! from route match to upstream stream, upstream pools with balancing, health checks
//! and retries, metrics, the admin API, config reload, and the `tollgate` binary.
//! It reads config as immutable snapshots from `tollgate-routing` and never blocks a
//! request on a config change.

pub mod admin;
pub mod auth;
pub mod cert_health;
pub mod clock;
pub mod config;
pub mod control_client;
pub mod demo;
pub mod files;
pub mod http;
pub mod l4;
pub mod limits;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod rpc;
pub mod server;
pub mod state;
pub mod upstream;
pub mod usage;
