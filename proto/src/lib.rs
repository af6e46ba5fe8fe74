//! Tollgate's wire contracts: the `.proto` files under `proto/` and the
//! Rust types generated from them at build time (pure Rust, no `protoc`).
//!
//! Owns today:
//! - `tollgate.test.v1.TestService` ([`test::v1`]): the demo tenant and the
//!   upstream for end-to-end gRPC / gRPC-Web / Connect proxy tests, with a
//!   ready-made implementation in [`testsvc`].
//! - `google.rpc.Status` ([`google::rpc`]): the rich error model carried in
//!   `grpc-status-details-bin`.
//!
//! - `tollgate.control.v1.EdgeFeed` ([`control::v1`]): the control service's
//!   snapshot-then-deltas feed that proxies follow by event id.
//! - `grpc.health.v1.Health` ([`grpc::health::v1`]): the standard health service the
//!   proxy's gRPC health checks call, with a settable test implementation in
//!   [`testsvc::HealthServiceImpl`].
//!
//! [`FILE_DESCRIPTOR_SET`] describes every
//! compiled file (imports included) for reflection-based JSON transcoding.

pub mod testsvc;

/// Generated code, nested by protobuf package so cross-package paths resolve.
pub mod tollgate {
    /// `tollgate.control.*` packages.
    pub mod control {
        /// `tollgate.control.v1`: the proxies' feed (`edge_feed_client`, `edge_feed_server`).
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/tollgate.control.v1.rs"));
        }
    }
    /// `tollgate.test.*` packages.
    pub mod test {
        /// `tollgate.test.v1`: messages, `test_service_client`, `test_service_server`.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/tollgate.test.v1.rs"));
        }
    }
}

/// `grpc.*` packages.
pub mod grpc {
    /// `grpc.health.*` packages.
    pub mod health {
        /// `grpc.health.v1`: `HealthCheckRequest`, `HealthCheckResponse`, `health_client`,
        /// `health_server`.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
        }
    }
}

/// `google.*` packages not provided by `prost-types`.
pub mod google {
    /// `google.rpc`: [`Status`](rpc::Status).
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

pub use testsvc::{TestServiceImpl, serve, serve_with_shutdown};
pub use tollgate::{control, test};

/// Encoded `google.protobuf.FileDescriptorSet` of all compiled `.proto` files,
/// including imports and source info.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));
