//! Rate limits and stream quotas: GCRA per key, locally or across the fleet.
//!
//! - [`Window`]: one compiled rate rule (`routing::RateRule`), and [`RequestKeys`], the
//!   values a request is counted by.
//! - [`LocalLimiter`]: keyed GCRA in this process (`governor`).
//! - [`ClusterLimiter`]: the same GCRA in Redis, one atomic script per check, so N
//!   proxies honour one limit; [`RedisBackend`] is the connection it (and the Redis
//!   budget store) uses.
//! - [`AppLimiter`]: an app's limits with its scope and `on_backend_error` policy
//!   applied; it says in [`Source`] where each answer came from so the proxy can count
//!   fallbacks.
//! - [`StreamQuota`]: concurrent streams per app, held by an RAII [`StreamPermit`].
//! - [`render_headers`]: `RateLimit`, `RateLimit-Policy` and `Retry-After`.
//!
//! Nothing here maps a refusal to a status code; the proxy answers 429 or
//! `resource_exhausted` in the caller's protocol.

mod backend;
mod concurrency;
mod decision;
mod headers;
mod local;
mod policy;
mod redis;
mod window;

pub use self::redis::ClusterLimiter;
pub use backend::{BackendError, RedisBackend, RedisConfig};
pub use concurrency::{StreamPermit, StreamQuota};
pub use decision::Decision;
pub use headers::render_headers;
pub use local::{LocalLimiter, spawn_housekeeping};
pub use policy::{AppLimiter, Checked, Source};
pub use window::{RequestKeys, Window};
