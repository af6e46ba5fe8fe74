//! Layer-4 routing: TLS passthrough by SNI (inspect the ClientHello, never terminate)
//! and raw TCP by listen port, with an optional PROXY v2 prefix, per-route connection
//! limits, idle timeouts and byte metrics.

pub mod client_hello;
mod conn;
pub mod limits;
mod listener;
pub mod proxy_v2;
mod splice;

pub use conn::L4Mode;
pub use listener::serve;
