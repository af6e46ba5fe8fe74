//! Usage records for billing, as both sides speak them: what a proxy metered per
//! app and UTC day (requests, bytes in and out, metered units), sent to the control
//! service in batches (`POST /v1/usage`, see `control/API.md`).
//!
//! This module owns the wire format ([`UsageBatch`], [`UsageRecord`], serde JSON),
//! the day they are accounted in ([`Period`], `YYYY-MM-DD`, UTC) and the rules a
//! batch must pass to be stored ([`UsageBatch::check`]). Proxies build batches,
//! the control service checks and stores them; neither side defines its own copy.
//! Counting, spooling and sending live in the proxy, storage and totals in the
//! control service.

mod batch;
mod period;

pub use batch::{
    MAX_COUNT, MAX_NODE_ID_BYTES, MAX_RECORDS_PER_BATCH, UsageBatch, UsageRecord, is_app_id,
};
pub use period::Period;
