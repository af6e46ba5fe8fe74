//! Usage records for billing: what proxies metered per app and UTC day
//! (requests, bytes in and out, metered units), received in batches.
//!
//! - **Batches, once.** A proxy sends `POST /v1/usage` with a [`UsageBatch`]
//!   named by `(node_id, batch_seq)`. The batch row and its records are written
//!   in one transaction; the batch row goes first and its primary key makes a
//!   replay insert nothing, so a batch resent after a lost answer (or a proxy
//!   restart) is counted once ([`Recorded::Duplicate`]). A replay with other
//!   records is [`Recorded::Mismatch`] (HTTP 409), never a silent overwrite.
//! - **Not the event log.** Usage is high volume and never part of the edge
//!   config, so it lives in its own tables (`usage_batches`, `usage_records`,
//!   migration `0002_usage.sql`), which are not append-only-enforced.
//! - **Totals** ([`UsageStore::usage`]) are sums over the stored records of an
//!   app per period, across nodes. A period is a [`Period`] (`YYYY-MM-DD`, UTC).
//!
//! The wire types ([`UsageBatch`], [`UsageRecord`], [`Period`]) and the rules a
//! batch must pass ([`UsageBatch::check`]) live in [`tollgate_routing::usage`],
//! which proxies build batches with, so both sides share one format; they are
//! re-exported here. The HTTP side is `crate::http::usage`; see `control/API.md`.

mod store;

use crate::commands::Problem;

pub use store::{PeriodUsage, Recorded, UsageStore};
pub use tollgate_routing::usage::{
    MAX_COUNT, MAX_NODE_ID_BYTES, MAX_RECORDS_PER_BATCH, Period, UsageBatch, UsageRecord, is_app_id,
};

/// [`UsageBatch::check`], with its problems in the form the API answers with.
pub fn check(batch: &UsageBatch) -> Result<(), Vec<Problem>> {
    batch.check().map_err(|problems| {
        problems
            .into_iter()
            .map(|p| Problem {
                at: p.at,
                reason: p.reason,
            })
            .collect()
    })
}
