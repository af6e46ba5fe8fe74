//! The HTTP request path: from a client request to an upstream response stream.

mod attempt;
pub mod body;
pub mod client_body;
pub mod completion;
pub mod errors;
pub mod handler;
pub mod headers;
mod join;
pub mod misdirected;
pub mod stream_stats;
pub mod upgrade;
