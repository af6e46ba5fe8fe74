//! Granting budget units and metering a stream against them.

use super::{BudgetError, BudgetStore, PeriodWindow, period_window};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tollgate_routing::{BudgetPeriod, BudgetSpec};

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Units a stream leases at a time unless configured otherwise.
pub const DEFAULT_LEASE: u64 = 64;

/// Grants budget units from a store; cheap to clone.
#[derive(Clone)]
pub struct Budget {
    store: BudgetStore,
    lease: u64,
    clock: Clock,
}

/// Whose budget, per which period, how large.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetAccount {
    pub app: Arc<str>,
    pub period: BudgetPeriod,
    pub limit: u64,
}

/// Units granted by [`Budget::reserve`], from the period named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// At most what was asked; 0 when the budget is spent.
    pub units: u64,
    /// Period key the units were taken from (where unused ones go back).
    pub period: String,
}

/// Whether a metered message may be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Paid for: forward it.
    Continue,
    /// Not paid for: do not forward it; end the stream.
    Exhausted,
}

impl BudgetAccount {
    pub fn new(app: &str, spec: &BudgetSpec) -> Self {
        BudgetAccount {
            app: app.into(),
            period: spec.period,
            limit: spec.limit,
        }
    }
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("store", &self.store)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Budget {
    /// A budget on `store` with the default lease and the system clock.
    pub fn new(store: BudgetStore) -> Self {
        Budget {
            store,
            lease: DEFAULT_LEASE,
            clock: Arc::new(SystemTime::now),
        }
    }

    /// Units a [`Meter`] leases at a time (at least 1). Smaller is fairer to other
    /// streams of the app, larger costs fewer store round trips.
    pub fn with_lease(mut self, units: u64) -> Self {
        self.lease = units.max(1);
        self
    }

    /// Replaces the clock periods are computed from.
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn lease(&self) -> u64 {
        self.lease
    }

    pub fn store(&self) -> &BudgetStore {
        &self.store
    }

    /// The account's current period.
    pub fn period(&self, account: &BudgetAccount) -> PeriodWindow {
        period_window(account.period, (self.clock)())
    }

    /// Units left this period; refuse a request up front when 0.
    pub async fn remaining(&self, account: &BudgetAccount) -> Result<u64, BudgetError> {
        let period = self.period(account);
        let used = self.store.used(&account.app, &period.key).await?;
        Ok(account.limit.saturating_sub(used))
    }

    /// Takes up to `units` from this period; the grant may be smaller, or 0.
    pub async fn reserve(&self, account: &BudgetAccount, units: u64) -> Result<Grant, BudgetError> {
        let period = self.period(account);
        let units = self
            .store
            .take(&account.app, &period, account.limit, units)
            .await?;
        Ok(Grant {
            units,
            period: period.key,
        })
    }

    /// Gives back units of a grant that were not used.
    pub async fn release(&self, account: &BudgetAccount, grant: Grant) -> Result<(), BudgetError> {
        if grant.units == 0 {
            return Ok(());
        }
        self.store
            .give_back(&account.app, &grant.period, grant.units)
            .await
    }

    /// A meter for one stream.
    pub fn meter(&self, account: BudgetAccount) -> Meter {
        Meter {
            budget: self.clone(),
            account,
            held: 0,
            period: String::new(),
            period_ends: 0,
            consumed: 0,
            exhausted: false,
        }
    }
}

/// Meters one stream: leases units in chunks, spends them per message, returns the
/// rest at [`Meter::finish`] (or, less promptly, on drop).
#[derive(Debug)]
pub struct Meter {
    budget: Budget,
    account: BudgetAccount,
    held: u64,
    period: String,
    period_ends: u64,
    consumed: u64,
    exhausted: bool,
}

impl Meter {
    /// Pays for a message of `units`. [`Verdict::Exhausted`] when the budget cannot
    /// pay for all of it (the message must not be forwarded); every later call then
    /// answers `Exhausted` too. A store error leaves the meter as it was.
    pub async fn consume(&mut self, units: u64) -> Result<Verdict, BudgetError> {
        if self.exhausted {
            return Ok(Verdict::Exhausted);
        }
        if units == 0 {
            return Ok(Verdict::Continue);
        }
        let now = (self.budget.clock)();
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now_secs >= self.period_ends {
            // First message, or the period rolled over: units held belong to the old one.
            self.give_back_held().await?;
            let p = period_window(self.account.period, now);
            self.period = p.key;
            self.period_ends = p.ends_at;
        }
        if units > self.held {
            let want = (units - self.held).max(self.budget.lease);
            let period = PeriodWindow {
                key: self.period.clone(),
                ends_at: self.period_ends,
            };
            self.held += self
                .budget
                .store
                .take(&self.account.app, &period, self.account.limit, want)
                .await?;
        }
        if units <= self.held {
            self.held -= units;
            self.consumed += units;
            return Ok(Verdict::Continue);
        }
        self.exhausted = true;
        // Free what is held for the app's other streams now; on error, drop retries.
        let _ = self.give_back_held().await;
        Ok(Verdict::Exhausted)
    }

    /// Pays from the units already leased, without touching the store; `None` when
    /// the store must be asked ([`Meter::consume`]).
    pub fn try_consume_held(&mut self, units: u64) -> Option<Verdict> {
        if self.exhausted {
            return Some(Verdict::Exhausted);
        }
        if units == 0 {
            return Some(Verdict::Continue);
        }
        let now = (self.budget.clock)();
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now_secs >= self.period_ends || units > self.held {
            return None;
        }
        self.held -= units;
        self.consumed += units;
        Some(Verdict::Continue)
    }

    /// Units paid for so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Units leased and not yet spent.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Ends metering and returns the unspent lease; yields the units returned.
    pub async fn finish(mut self) -> Result<u64, BudgetError> {
        let n = self.held;
        self.give_back_held().await?;
        Ok(n)
    }

    async fn give_back_held(&mut self) -> Result<(), BudgetError> {
        if self.held > 0 {
            self.budget
                .store
                .give_back(&self.account.app, &self.period, self.held)
                .await?;
            self.held = 0;
        }
        Ok(())
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let units = std::mem::take(&mut self.held);
        if units == 0 {
            return;
        }
        let (app, period) = (self.account.app.clone(), std::mem::take(&mut self.period));
        match &self.budget.store {
            BudgetStore::InProcess(s) => s.give_back(&app, &period, units),
            BudgetStore::Redis(s) => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let store = BudgetStore::Redis(s.clone());
                    rt.spawn(async move {
                        if let Err(e) = store.give_back(&app, &period, units).await {
                            tracing::warn!(%app, units, error = %e, "unused budget lease not returned");
                        }
                    });
                }
                Err(_) => {
                    tracing::warn!(%app, units, "unused budget lease not returned: no runtime");
                }
            },
        }
    }
}
