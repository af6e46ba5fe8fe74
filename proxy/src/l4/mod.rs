//! Layer-4 routing: TLS passthrough by SNI and raw TCP, with an optional PROXY v2 prefix.

pub mod client_hello;
pub mod proxy_v2;
