//! gRPC-Web and Connect ↔ gRPC translation: the sans-I/O building blocks.
//!
//! Everything here is pure: functions and small state machines over bytes and
//! header maps, with no sockets, no tasks and no clocks, so each piece is tested on
//! its own and the proxy composes them into body wrappers.
//!
//! - [`status`]: gRPC status codes, their Connect names and HTTP mappings, and the
//!   `grpc-status` / `grpc-message` / `grpc-status-details-bin` trailers.
//! - [`envelope`]: the 5-byte length-prefixed framing shared by gRPC, gRPC-Web and
//!   Connect streaming, with an incremental decoder that refuses oversized
//!   messages before buffering them.
//! - [`base64_stream`]: `application/grpc-web-text` bodies, base64 split anywhere and
//!   padded per segment.
//! - [`protocol`]: which protocol a request speaks, and Connect GET query parsing.
//! - [`connect`]: Connect error bodies, end-of-stream messages and header rules.
//! - [`grpc_web`]: the gRPC-Web trailer frame.
//! - [`timeout`]: `grpc-timeout` and `connect-timeout-ms`.
//! - [`compression`]: gzip with a hard output cap, and encoding negotiation.
//! - [`schema`]: method lookup and JSON ↔ protobuf transcoding from a descriptor
//!   set.
//! - `wire_json`: protobuf → JSON written straight from the wire, for [`schema`].
//! - [`field_path`]: one numeric field read from a message, for metering.
//!
//! Specifications followed: gRPC's PROTOCOL-HTTP2 and PROTOCOL-WEB, gRPC's
//! HTTP-to-status mapping, and the Connect protocol reference.

mod b64;
pub mod base64_stream;
pub mod compression;
pub mod connect;
pub mod envelope;
pub mod field_path;
pub mod grpc_web;
pub mod protocol;
pub mod schema;
pub mod status;
pub mod timeout;
mod wire_json;

pub use envelope::{Envelope, EnvelopeDecoder, FrameError};
pub use protocol::{Codec, RpcProtocol};
pub use schema::{MethodSchema, Schema, SchemaError, TranscodeError};
pub use status::{Code, RpcStatus};
