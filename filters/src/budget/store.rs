//! Where budget counters live: this process, or Redis for the whole fleet.

use super::{BudgetError, InProcessStore, PeriodWindow, RedisBudgetStore};
use std::sync::Arc;

/// A counter of units used per app per period; grants are atomic in both backends.
#[derive(Clone, Debug)]
pub enum BudgetStore {
    /// Embedded: atomics in a map, persisted to a file.
    InProcess(Arc<InProcessStore>),
    /// Shared by every proxy through Redis.
    Redis(RedisBudgetStore),
}

impl BudgetStore {
    /// Grants up to `want` units of `limit` for `app` in `period`; may grant fewer,
    /// or 0 when spent.
    pub async fn take(
        &self,
        app: &str,
        period: &PeriodWindow,
        limit: u64,
        want: u64,
    ) -> Result<u64, BudgetError> {
        match self {
            BudgetStore::InProcess(s) => Ok(s.take(app, period, limit, want)),
            BudgetStore::Redis(s) => s.take(app, period, limit, want).await,
        }
    }

    /// Returns `units` granted earlier in period `period_key` (never below zero; a
    /// counter whose period has expired stays gone).
    pub async fn give_back(
        &self,
        app: &str,
        period_key: &str,
        units: u64,
    ) -> Result<(), BudgetError> {
        match self {
            BudgetStore::InProcess(s) => {
                s.give_back(app, period_key, units);
                Ok(())
            }
            BudgetStore::Redis(s) => s.give_back(app, period_key, units).await,
        }
    }

    /// Units counted as used (consumed or leased) for `app` in `period_key`.
    pub async fn used(&self, app: &str, period_key: &str) -> Result<u64, BudgetError> {
        match self {
            BudgetStore::InProcess(s) => Ok(s.used(app, period_key)),
            BudgetStore::Redis(s) => s.used(app, period_key).await,
        }
    }
}
