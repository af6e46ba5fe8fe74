//! The embedded budget store: atomic counters in a map, persisted to a JSON file.
//!
//! Grants are a compare-and-swap on the counter, so concurrent streams never get
//! more than the limit between them. [`InProcessStore::persist`] writes every live
//! counter to a temporary file beside the target, syncs it and renames it over the
//! target, so a crash leaves the old file or the new one, never half of either;
//! [`InProcessStore::open`] reloads it at start. Run [`spawn_persist`] for periodic
//! writes and call `persist` once more at shutdown. Units consumed after the last
//! write before a crash are lost (under-counted) by at most one interval's worth.

use super::{BudgetError, PeriodWindow};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
struct Counter {
    used: AtomicU64,
    ends_at: u64,
}

type Counters = HashMap<String, HashMap<String, Arc<Counter>>>;

/// Budget counters of this process, optionally backed by a file.
#[derive(Debug, Default)]
pub struct InProcessStore {
    counters: RwLock<Counters>,
    path: Option<PathBuf>,
    write: tokio::sync::Mutex<()>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    counters: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    app: String,
    period: String,
    used: u64,
    ends_at: u64,
}

impl InProcessStore {
    /// Counters in memory only, lost at exit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters persisted at `path`, reloaded from it if it exists (expired periods
    /// are dropped). A file that cannot be read or parsed is an error, not a reset.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, BudgetError> {
        let path = path.into();
        let fail = |reason: String| BudgetError::Persist {
            path: path.display().to_string(),
            reason,
        };
        let mut counters = Counters::new();
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let file: File = serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
                if file.version != 1 {
                    return Err(fail(format!("unknown version {}", file.version)));
                }
                let now = unix(SystemTime::now());
                for e in file.counters.into_iter().filter(|e| e.ends_at > now) {
                    let c = Arc::new(Counter {
                        used: AtomicU64::new(e.used),
                        ends_at: e.ends_at,
                    });
                    counters.entry(e.app).or_default().insert(e.period, c);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e.to_string())),
        }
        Ok(InProcessStore {
            counters: RwLock::new(counters),
            path: Some(path),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// The file counters persist to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub(crate) fn take(&self, app: &str, period: &PeriodWindow, limit: u64, want: u64) -> u64 {
        let counter = self.counter(app, period);
        let mut cur = counter.used.load(Ordering::Acquire);
        loop {
            let grant = limit.saturating_sub(cur).min(want);
            if grant == 0 {
                return 0;
            }
            match counter.used.compare_exchange_weak(
                cur,
                cur + grant,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return grant,
                Err(now) => cur = now,
            }
        }
    }

    pub(crate) fn give_back(&self, app: &str, period_key: &str, units: u64) {
        if let Some(c) = self.get(app, period_key) {
            let _ = c
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    Some(u.saturating_sub(units))
                });
        }
    }

    pub(crate) fn used(&self, app: &str, period_key: &str) -> u64 {
        self.get(app, period_key)
            .map_or(0, |c| c.used.load(Ordering::Acquire))
    }

    /// Drops counters whose period ended before `now`.
    pub fn expire(&self, now: SystemTime) {
        let now = unix(now);
        let mut map = self.counters.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, periods| {
            periods.retain(|_, c| c.ends_at > now);
            !periods.is_empty()
        });
    }

    /// Writes every counter to the file atomically; does nothing without a file.
    pub async fn persist(&self) -> Result<(), BudgetError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let _one_writer = self.write.lock().await;
        let file = File {
            version: 1,
            counters: self.entries(),
        };
        let display = path.display().to_string();
        let bytes = serde_json::to_vec(&file).map_err(|e| BudgetError::Persist {
            path: display.clone(),
            reason: e.to_string(),
        })?;
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|reason| BudgetError::Persist {
                path: display,
                reason,
            })
    }

    fn entries(&self) -> Vec<Entry> {
        let map = self.counters.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (app, periods) in map.iter() {
            for (period, c) in periods {
                out.push(Entry {
                    app: app.clone(),
                    period: period.clone(),
                    used: c.used.load(Ordering::Acquire),
                    ends_at: c.ends_at,
                });
            }
        }
        out
    }

    fn get(&self, app: &str, period_key: &str) -> Option<Arc<Counter>> {
        let map = self.counters.read().unwrap_or_else(|e| e.into_inner());
        map.get(app)?.get(period_key).cloned()
    }

    fn counter(&self, app: &str, period: &PeriodWindow) -> Arc<Counter> {
        if let Some(c) = self.get(app, &period.key) {
            return c;
        }
        let mut map = self.counters.write().unwrap_or_else(|e| e.into_inner());
        map.entry(app.to_owned())
            .or_default()
            .entry(period.key.clone())
            .or_insert_with(|| {
                Arc::new(Counter {
                    used: AtomicU64::new(0),
                    ends_at: period.ends_at,
                })
            })
            .clone()
    }
}

/// Every `every`: drops ended periods and persists, until the store is dropped.
/// Errors are logged and retried next time. At shutdown, abort it and call
/// [`InProcessStore::persist`] once more.
pub fn spawn_persist(store: &Arc<InProcessStore>, every: Duration) -> tokio::task::JoinHandle<()> {
    let weak: Weak<InProcessStore> = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(store) = weak.upgrade() else {
                return;
            };
            store.expire(SystemTime::now());
            if let Err(e) = store.persist().await {
                tracing::warn!(error = %e, "budget counters not persisted");
            }
        }
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "budget".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    // Make the rename itself durable; not every platform lets a directory be synced.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
