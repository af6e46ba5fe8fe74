//! The control service: commands, the append-only event log, projections, and the
//! watch/polling API that feeds proxies.
//!
//! - [`store`]: the event log (SQLite or PostgreSQL) with optimistic concurrency.
//! - [`commands`]: the only way the edge config changes; each command checks its
//!   result against the projected config and appends events to one aggregate; a
//!   batch runs many commands as one atomic append (`POST /api/v1/batch`).
//! - [`projection`]: the [`tollgate_routing::EdgeConfig`] the log describes, in
//!   memory, followed by cursor.
//! - [`feed`], [`grpc`]: `EdgeFeed.Watch`, a snapshot then deltas by event id.
//! - [`http`]: the JSON API for operators (`/api/v1`) and the polling fallback for
//!   proxies (`/v1/snapshot`, `/v1/events`); see `control/API.md`.
//! - [`grace`]: completing app deletions when their grace period ends.
//! - [`usage`]: usage batches from proxies (`POST /v1/usage`) and per-app totals.
//! - [`metrics`]: the service's Prometheus metrics (`GET /metrics`): appends, log
//!   head and projection, the feed to proxies, API latency; bounded labels only.
//! - [`service`]: [`run`] with [`ControlOptions`] (`tollgate control`).
pub mod store;

pub mod acme;
pub mod commands;
pub mod feed;
pub mod feed_share;
pub mod grace;
pub mod grpc;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod ownership;
pub mod projection;
pub mod service;
pub mod token;
pub mod usage;

pub use commands::{CommandError, Commands, Ctx, Written};
pub use projection::{Projection, View};
pub use service::{ControlError, ControlOptions, Running, run, start};
