//! [`UsageRecorder`]: per-app, per-day counters the request path adds to.
//!
//! The app map is an [`ArcSwap`] (copy-on-write, replaced only when an app is
//! seen for the first time), so a lookup takes no lock and allocates nothing.
//! Each app has one slot, the counters of its current day, behind its own
//! `RwLock`: recording takes the read side (several threads add to the atomics
//! at once); only the first record of a new day takes the write side, to move
//! the previous day's counts aside. Counts never go missing between a reader's
//! check of the day and its additions, because the day cannot change while any
//! reader holds the lock.

use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;
use tollgate_routing::usage::Period;

/// Usage of one finished request (or any amount to add).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageDelta {
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub units: u64,
}

impl UsageDelta {
    fn is_zero(&self) -> bool {
        *self == UsageDelta::default()
    }

    /// Field-wise sum, saturating (a `u64` of bytes is 16 EiB per interval).
    pub fn saturating_add(self, other: UsageDelta) -> UsageDelta {
        UsageDelta {
            requests: self.requests.saturating_add(other.requests),
            bytes_in: self.bytes_in.saturating_add(other.bytes_in),
            bytes_out: self.bytes_out.saturating_add(other.bytes_out),
            units: self.units.saturating_add(other.units),
        }
    }
}

/// What one app used in one period since the previous drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    pub app_id: Arc<str>,
    pub period: Period,
    pub usage: UsageDelta,
}

/// Counters of one app for one day.
struct Slot {
    period: Period,
    counts: [AtomicU64; 4],
}

impl Slot {
    fn new(period: Period) -> Self {
        Slot {
            period,
            counts: Default::default(),
        }
    }

    fn add(&self, d: UsageDelta) {
        for (counter, n) in self
            .counts
            .iter()
            .zip([d.requests, d.bytes_in, d.bytes_out, d.units])
        {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Takes the counts, leaving zeros.
    fn take(&self) -> UsageDelta {
        let [requests, bytes_in, bytes_out, units] =
            self.counts.each_ref().map(|c| c.swap(0, Ordering::Relaxed));
        UsageDelta {
            requests,
            bytes_in,
            bytes_out,
            units,
        }
    }
}

struct AppUsage {
    id: Arc<str>,
    slot: RwLock<Slot>,
}

type Apps = HashMap<Arc<str>, Arc<AppUsage>>;

/// Usage counters of every app this proxy served, cheap to share (`Arc`).
///
/// [`record`](Self::record) is for the request path: for an app already seen
/// it is a map lookup, a read lock of that app and up to four atomic adds.
/// [`drain`](Self::drain) takes everything counted so far (the flusher calls
/// it). Apps stay in the map once seen; their number is bounded by the config.
pub struct UsageRecorder {
    apps: ArcSwap<Apps>,
    /// Serialises copy-on-write inserts into `apps`.
    inserting: Mutex<()>,
    /// Counts moved out of their slot: a previous day at a rollover, a late
    /// record for an earlier day, or a remainder handed back by the flusher.
    set_aside: Mutex<Vec<UsageCount>>,
}

impl Default for UsageRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for UsageRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageRecorder").finish_non_exhaustive()
    }
}

impl UsageRecorder {
    pub fn new() -> Self {
        UsageRecorder {
            apps: ArcSwap::from_pointee(HashMap::new()),
            inserting: Mutex::new(()),
            set_aside: Mutex::new(Vec::new()),
        }
    }

    /// Adds `delta` to `app_id`'s usage of today (UTC).
    pub fn record(&self, app_id: &str, delta: UsageDelta) {
        self.record_at(app_id, delta, SystemTime::now());
    }

    /// Adds `delta` to `app_id`'s usage of the UTC day containing `now`.
    pub fn record_at(&self, app_id: &str, delta: UsageDelta, now: SystemTime) {
        if delta.is_zero() {
            return;
        }
        let period = Period::of(now);
        if let Some(app) = self.apps.load().get(app_id) {
            let slot = app.slot.read().unwrap_or_else(PoisonError::into_inner);
            if slot.period == period {
                slot.add(delta);
                return;
            }
        }
        self.record_slow(app_id, delta, period);
    }

    /// A new app, or a day other than the app's current one.
    fn record_slow(&self, app_id: &str, delta: UsageDelta, period: Period) {
        let app = self.app(app_id, period);
        let mut slot = app.slot.write().unwrap_or_else(PoisonError::into_inner);
        if slot.period == period {
            slot.add(delta);
        } else if period > slot.period {
            let previous = slot.take();
            self.set_aside(app.id.clone(), slot.period, previous);
            *slot = Slot::new(period);
            slot.add(delta);
        } else {
            // Finished before midnight, recorded after another request rolled
            // the app over to the new day.
            self.set_aside(app.id.clone(), period, delta);
        }
    }

    fn app(&self, app_id: &str, period: Period) -> Arc<AppUsage> {
        if let Some(app) = self.apps.load().get(app_id) {
            return app.clone();
        }
        let _inserting = self
            .inserting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.apps.load_full();
        if let Some(app) = current.get(app_id) {
            return app.clone();
        }
        let id: Arc<str> = Arc::from(app_id);
        let app = Arc::new(AppUsage {
            id: id.clone(),
            slot: RwLock::new(Slot::new(period)),
        });
        let mut next = (*current).clone();
        next.insert(id, app.clone());
        self.apps.store(Arc::new(next));
        app
    }

    /// Keeps counts outside the slots until the next [`drain`](Self::drain).
    pub(crate) fn set_aside(&self, app_id: Arc<str>, period: Period, usage: UsageDelta) {
        if usage.is_zero() {
            return;
        }
        self.set_aside
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(UsageCount {
                app_id,
                period,
                usage,
            });
    }

    /// Takes everything recorded since the previous drain, one count per app
    /// and period, ordered by app then period. Records made while it runs land
    /// in this drain or the next, never in both or neither.
    pub fn drain(&self) -> Vec<UsageCount> {
        let mut merged: BTreeMap<(Arc<str>, Period), UsageDelta> = BTreeMap::new();
        let set_aside = std::mem::take(
            &mut *self
                .set_aside
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut add = |app_id: Arc<str>, period: Period, usage: UsageDelta| {
            let entry = merged.entry((app_id, period)).or_default();
            *entry = entry.saturating_add(usage);
        };
        for c in set_aside {
            add(c.app_id, c.period, c.usage);
        }
        for app in self.apps.load().values() {
            let slot = app.slot.read().unwrap_or_else(PoisonError::into_inner);
            let usage = slot.take();
            if !usage.is_zero() {
                add(app.id.clone(), slot.period, usage);
            }
        }
        merged
            .into_iter()
            .map(|((app_id, period), usage)| UsageCount {
                app_id,
                period,
                usage,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-11-23T00:00:00Z.
    fn midnight() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(20_780 * 86_400)
    }

    fn delta(requests: u64, bytes_in: u64, bytes_out: u64, units: u64) -> UsageDelta {
        UsageDelta {
            requests,
            bytes_in,
            bytes_out,
            units,
        }
    }

    fn summary(counts: &[UsageCount]) -> Vec<(String, String, UsageDelta)> {
        counts
            .iter()
            .map(|c| (c.app_id.to_string(), c.period.to_string(), c.usage))
            .collect()
    }

    #[test]
    fn drains_per_app_and_day_then_starts_over() {
        let r = UsageRecorder::new();
        let t = midnight() + Duration::from_secs(3600);
        r.record_at("acme", delta(1, 10, 100, 2), t);
        r.record_at("acme", delta(1, 5, 50, 0), t);
        r.record_at("globex", delta(1, 0, 7, 0), t);
        r.record_at("globex", UsageDelta::default(), t);
        assert_eq!(
            summary(&r.drain()),
            [
                ("acme".into(), "2026-11-23".into(), delta(2, 15, 150, 2)),
                ("globex".into(), "2026-11-23".into(), delta(1, 0, 7, 0)),
            ]
        );
        assert!(r.drain().is_empty());
        r.record_at("acme", delta(1, 1, 1, 1), t);
        assert_eq!(
            summary(&r.drain()),
            [("acme".into(), "2026-11-23".into(), delta(1, 1, 1, 1))]
        );
    }

    #[test]
    fn periods_roll_at_utc_midnight() {
        let r = UsageRecorder::new();
        let before = midnight() - Duration::from_millis(1);
        r.record_at("acme", delta(1, 1, 0, 0), before);
        r.record_at("acme", delta(1, 2, 0, 0), midnight());
        // A request that finished before midnight, recorded after the rollover.
        r.record_at("acme", delta(1, 4, 0, 0), before);
        r.record_at(
            "acme",
            delta(1, 8, 0, 0),
            midnight() + Duration::from_secs(86_399),
        );
        assert_eq!(
            summary(&r.drain()),
            [
                ("acme".into(), "2026-11-22".into(), delta(2, 5, 0, 0)),
                ("acme".into(), "2026-11-23".into(), delta(2, 10, 0, 0)),
            ]
        );
    }

    #[test]
    fn concurrent_records_and_drains_lose_and_double_nothing() {
        let r = Arc::new(UsageRecorder::new());
        let threads = 8;
        let per_thread = 20_000u64;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let drainer = {
            let (r, stop) = (r.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut drained = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    drained.extend(r.drain());
                }
                drained
            })
        };
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let apps = ["a", "b", "c"];
                    for i in 0..per_thread {
                        // Half of them cross midnight, in both orders.
                        let at = if (i + t) % 2 == 0 {
                            midnight() - Duration::from_secs(1)
                        } else {
                            midnight()
                        };
                        r.record_at(apps[(i % 3) as usize], delta(1, i, 1, 0), at);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        let mut all = drainer.join().unwrap();
        all.extend(r.drain());
        let mut by_day: BTreeMap<String, UsageDelta> = BTreeMap::new();
        for c in &all {
            let e = by_day.entry(c.period.to_string()).or_default();
            *e = e.saturating_add(c.usage);
        }
        let total: UsageDelta = by_day
            .values()
            .fold(UsageDelta::default(), |a, b| a.saturating_add(*b));
        let n = threads * per_thread;
        let sum_i = threads * (per_thread * (per_thread - 1) / 2);
        assert_eq!(total, delta(n, sum_i, n, 0));
        assert_eq!(by_day["2026-11-22"].requests, n / 2);
        assert_eq!(by_day["2026-11-23"].requests, n / 2);
    }
}
