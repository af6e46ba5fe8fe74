//! Usage records for billing: per app and UTC day, the requests, bytes in, bytes
//! out and metered units this proxy served, flushed to the control service.
//! The batches and days are `tollgate_routing::usage`'s, the format the control
//! service stores.
//!
//! - [`UsageRecorder::record`] is called once per finished request. It adds to
//!   per-app atomic counters found through a lock-free map: no global lock, no
//!   allocation for an app already seen. Days roll at UTC midnight.
//! - [`spawn_flusher`] starts a task that, every [`FlushConfig::interval`],
//!   drains the counters into a batch named `(node_id, batch_seq)`, writes it to
//!   the spool (`usage-spool.json` in the spool folder, replaced atomically,
//!   0600) and only then sends it (`POST /v1/usage`, bounded by a timeout). A
//!   batch leaves the spool only after the service acknowledged it (200, stored
//!   or duplicate). Failed sends are retried oldest first, with backoff, under
//!   their original `batch_seq`; the service stores each name once. So a
//!   control outage, a lost answer or a proxy restart (the spool and the next
//!   `batch_seq` are reloaded) neither loses nor double counts.
//! - The spool is bounded by merging, not by dropping: with
//!   [`FlushConfig::max_pending`] batches waiting, new usage is summed into the
//!   newest pending batch, which was never sent (see `spool.rs`).
//! - A batch the service refuses for good (4xx other than 401, 403, 404, 408,
//!   429) is kept as `usage-rejected-<seq>.json` beside the spool, logged and
//!   counted (`tollgate_usage_batches_rejected_total`), and the next is sent.
//!
//! Limits: usage of the interval in progress is in memory until its drain; a
//! crash (not a graceful [`UsageFlusher::shutdown`]) loses at most that. Without
//! a spool folder, pending batches do not survive a restart. `node_id` must be
//! unique per proxy, and a spool folder belongs to one proxy.

mod flusher;
mod metrics;
mod recorder;
mod send;
mod spool;

pub use flusher::{
    DEFAULT_INTERVAL, DEFAULT_MAX_PENDING, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_MAX, FlushConfig,
    FlushError, UsageFlusher, spawn_flusher,
};
pub use metrics::UsageMetrics;
pub use recorder::{UsageCount, UsageDelta, UsageRecorder};
