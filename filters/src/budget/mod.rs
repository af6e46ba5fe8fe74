//! Usage budgets per app per calendar period, consumed exactly, even mid-stream.
//!
//! A [`Budget`] grants units from a [`BudgetStore`] (in-process atomics persisted to a
//! file, or Redis shared by the fleet). [`Budget::reserve`] takes up to N units at once
//! and may grant fewer; [`Budget::remaining`] lets the proxy refuse a request up front
//! when nothing is left. A stream meters through a [`Meter`], which leases units in
//! chunks (the lease size, 64 by default) and spends them locally per message, so a
//! stream costs one store round trip per chunk, not per message, and stops on exactly
//! the message the budget cannot pay for. Unused units go back when the meter ends.
//!
//! Limitation: while streams run, their unspent leases count as used, so other
//! streams of the same app may be told the budget is spent up to `lease × streams`
//! units early (they see the units again once the leases are returned). A smaller
//! lease narrows that at the cost of more round trips; a lease of 1 is exact
//! at every instant. If a proxy dies holding leases, those units stay counted.
//!
//! Periods are UTC days (`2026-11-23`) or months (`2026-11`); a period's counter
//! expires when the period ends. The clock is injectable for tests.

mod memory;
mod meter;
mod period;
mod redis;
mod store;

pub use self::redis::RedisBudgetStore;
pub use memory::{InProcessStore, spawn_persist};
pub use meter::{Budget, BudgetAccount, Grant, Meter, Verdict};
pub use period::{PeriodWindow, period_window};
pub use store::BudgetStore;

use crate::limit::BackendError;

/// Why a budget could not be read or charged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("budget file {path}: {reason}")]
    Persist { path: String, reason: String },
}
