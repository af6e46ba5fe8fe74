//! The edge projection: the [`EdgeConfig`] the event log describes, kept in memory.
//!
//! Events are applied in `event_id` order with [`EdgeConfig::apply`], the same code
//! proxies run, from a cursor (the last applied id). [`Projection::sync`] reads
//! [`EventStore::read_after`] in batches until it reaches the end of the log; the
//! background loop ([`Projection::follow`]) calls it whenever the store signals an
//! append ([`EventStore::subscribe`]) and on a periodic poll, so a lost or
//! coalesced notification (or an append by another process) only delays it.
//! Commands call `sync` themselves before deciding and after appending.
//!
//! - **Which events count.** An event is an edge event when its payload decodes as
//!   an [`EdgeEvent`] whose tag equals the stored `event_type`; anything else in
//!   the log is skipped ([`classify`]).
//! - **Rejected events.** An edge event that does not apply (it can only happen
//!   when two control instances race on different aggregates) changes nothing and
//!   its id is remembered; the feed to proxies leaves it out, so proxies and the
//!   projection stay identical. The outcome depends only on the log, so a rebuild
//!   rejects the same ids.
//! - **Readers** get an immutable [`View`] (config plus the id it is current at, and
//!   the last edge event up to it: the marker a snapshot hands proxies) swapped in
//!   at the end of every sync (so a batch command's events appear together);
//!   [`Projection::wait_applied`] waits on a watch channel for read-your-writes.
//! - **Checkpoint.** The cursor is saved as projection `"edge"`
//!   ([`EventStore::save_checkpoint`]) at most every [`CHECKPOINT_INTERVAL`] and on
//!   shutdown. The config itself is not persisted: a start replays the log from 0
//!   and reports how the result compares with the previous run's checkpoint.
//! - [`Projection::rebuild_from_zero`] replays the log into a fresh config; it
//!   must equal what incremental application produced (tested).

use crate::feed::marker_of;
use crate::store::{AnyStore, EventStore, StoreError, StoredEvent};
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard, watch};
use tollgate_routing::{EdgeConfig, EdgeEvent, EdgeMarker};

/// Name of the checkpoint row.
pub const CHECKPOINT_NAME: &str = "edge";
/// Events read per store query.
pub const BATCH: i64 = 500;
/// Least time between checkpoint writes while events keep arriving.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The config as of one event id; immutable, shared by readers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The last event applied (or skipped) into `config`; 0 for an empty log.
    pub event_id: i64,
    pub config: EdgeConfig,
    /// The last edge event applied into `config` (rejected ones do not count), `None`
    /// while there is none: what a proxy that takes this snapshot resumes from
    /// (`crate::feed`).
    pub last_edge: Option<EdgeMarker>,
}

/// Decodes a stored event: `Some` for an [`EdgeEvent`] whose tag matches
/// `event_type`, `None` for anything else logged (not part of the edge config).
pub fn classify(event: &StoredEvent) -> Option<EdgeEvent> {
    // Read from the stored value in place: a clone of the tree first cost an
    // allocation per node of every event the projection and the feed read.
    <EdgeEvent as serde::Deserialize>::deserialize(&event.payload)
        .ok()
        .filter(|e| e.event_type() == event.event_type)
}

/// Applies one stored event to `config`. Returns the decoded event when it is an
/// edge event that applied, `Err` with the reason when it is one that did not.
pub fn apply_stored(
    config: &mut EdgeConfig,
    event: &StoredEvent,
) -> Result<Option<EdgeEvent>, String> {
    match classify(event) {
        Some(e) => match config.apply(&e) {
            Ok(()) => Ok(Some(e)),
            Err(err) => Err(err.to_string()),
        },
        None => Ok(None),
    }
}

struct Work {
    config: EdgeConfig,
    cursor: i64,
    last_edge: Option<EdgeMarker>,
    saved: i64,
    saved_at: Instant,
}

/// The in-memory edge config and its cursor.
pub struct Projection {
    store: Arc<AnyStore>,
    view: RwLock<Arc<View>>,
    applied: watch::Sender<i64>,
    rejected: RwLock<BTreeSet<i64>>,
    work: Mutex<Work>,
}

impl Projection {
    /// An empty projection at cursor 0; call [`Self::sync`] to catch up.
    pub fn new(store: Arc<AnyStore>) -> Arc<Projection> {
        let (applied, _) = watch::channel(0);
        Arc::new(Projection {
            store,
            view: RwLock::new(Arc::new(View::default())),
            applied,
            rejected: RwLock::new(BTreeSet::new()),
            work: Mutex::new(Work {
                config: EdgeConfig::default(),
                cursor: 0,
                last_edge: None,
                saved: 0,
                saved_at: Instant::now(),
            }),
        })
    }

    /// Replays the whole log and reports it against the previous checkpoint.
    pub async fn start(store: Arc<AnyStore>) -> Result<Arc<Projection>, StoreError> {
        let previous = store.checkpoint(CHECKPOINT_NAME).await?;
        let p = Projection::new(store);
        let applied = p.sync().await?;
        if applied < previous {
            tracing::warn!(
                applied,
                previous,
                "the log ends before the previous run's checkpoint (restored database?)"
            );
        }
        tracing::info!(
            event_id = applied,
            previous_checkpoint = previous,
            "edge projection replayed"
        );
        p.save_checkpoint().await?;
        Ok(p)
    }

    /// The current config and the id it is current at.
    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last applied event id.
    pub fn event_id(&self) -> i64 {
        *self.applied.borrow()
    }

    /// A receiver of the last applied event id.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Whether the edge event `event_id` was left out because it did not apply.
    pub fn is_rejected(&self, event_id: i64) -> bool {
        self.rejected
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&event_id)
    }

    /// Waits until the projection has applied `event_id`; false on timeout.
    pub async fn wait_applied(&self, event_id: i64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|v| *v >= event_id)).await,
            Ok(Ok(_))
        )
    }

    /// Applies every event after the cursor, batch by batch, until the end of the
    /// log; returns the new cursor. Concurrent calls queue.
    pub async fn sync(&self) -> Result<i64, StoreError> {
        let work = self.work.lock().await;
        self.sync_locked(work).await
    }

    /// [`Self::sync`] after an append of `committed`: when they continue the
    /// cursor with no gap they are applied as they are, not read back from the
    /// store.
    pub async fn sync_committed(&self, committed: &[StoredEvent]) -> Result<i64, StoreError> {
        let mut work = self.work.lock().await;
        let follows = committed
            .first()
            .is_some_and(|e| Some(e.event_id) == work.cursor.checked_add(1))
            && committed
                .windows(2)
                .all(|w| Some(w[1].event_id) == w[0].event_id.checked_add(1));
        if follows {
            self.apply_page(&mut work, committed);
        }
        self.sync_locked(work).await
    }

    /// Applies `page` (events in log order after the cursor) and moves the cursor
    /// to its last event.
    fn apply_page(&self, work: &mut Work, page: &[StoredEvent]) {
        let Some(last) = page.last().map(|e| e.event_id) else {
            return;
        };
        let mut rejected = Vec::new();
        for event in page {
            match apply_stored(&mut work.config, event) {
                Ok(Some(_)) => work.last_edge = Some(marker_of(event)),
                Ok(None) => {}
                Err(reason) => {
                    tracing::error!(
                        event_id = event.event_id,
                        event_type = %event.event_type,
                        aggregate = %format!("{}/{}", event.aggregate_type, event.aggregate_id),
                        reason,
                        "edge event does not apply; left out of the projection and the feed"
                    );
                    rejected.push(event.event_id);
                }
            }
        }
        if !rejected.is_empty() {
            self.rejected
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .extend(rejected);
        }
        work.cursor = last;
    }

    async fn sync_locked(&self, mut work: MutexGuard<'_, Work>) -> Result<i64, StoreError> {
        loop {
            let page = self.store.read_after(work.cursor, BATCH).await?;
            if page.is_empty() {
                break;
            }
            self.apply_page(&mut work, &page);
            if (page.len() as i64) < BATCH {
                break;
            }
        }
        let cursor = work.cursor;
        // Published once per sync, not per page read: a batch (one transaction, so
        // either wholly in the log or not at all) is never shown half applied, and a
        // burst costs one copy of the config.
        if cursor > self.view().event_id {
            let view = Arc::new(View {
                event_id: cursor,
                config: work.config.clone(),
                last_edge: work.last_edge.clone(),
            });
            *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
            self.applied.send_replace(cursor);
        }
        if cursor != work.saved && work.saved_at.elapsed() >= CHECKPOINT_INTERVAL {
            self.store.save_checkpoint(CHECKPOINT_NAME, cursor).await?;
            work.saved = cursor;
            work.saved_at = Instant::now();
        }
        Ok(cursor)
    }

    /// Writes the cursor as the `"edge"` checkpoint now.
    pub async fn save_checkpoint(&self) -> Result<(), StoreError> {
        let mut work = self.work.lock().await;
        let cursor = work.cursor;
        self.store.save_checkpoint(CHECKPOINT_NAME, cursor).await?;
        work.saved = cursor;
        work.saved_at = Instant::now();
        Ok(())
    }

    /// Follows the log until `stop` turns true: syncs on every store notification
    /// and at least every `poll`, then saves the checkpoint.
    pub async fn follow(self: Arc<Self>, poll: Duration, mut stop: watch::Receiver<bool>) {
        let mut appended = self.store.subscribe();
        let mut failures = 0u32;
        loop {
            match self.sync().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "edge projection cannot read the log");
                }
            }
            // Back off while the database fails; otherwise wait for a wake-up.
            let wait = if failures > 0 {
                poll.min(Duration::from_millis(100) * failures.min(50))
            } else {
                poll
            };
            tokio::select! {
                changed = appended.changed() => {
                    if changed.is_err() {
                        // The store dropped its sender: polling alone from now on.
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.changed() => {}
                        }
                    }
                }
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
        if let Err(e) = self.save_checkpoint().await {
            tracing::warn!(error = %e, "cannot save the edge checkpoint at shutdown");
        }
    }

    /// Replays the log from event 0 up to the current cursor into a fresh config.
    /// The result equals [`Self::view`] when nothing was appended meanwhile.
    pub async fn rebuild_from_zero(&self) -> Result<View, StoreError> {
        let upto = self.event_id();
        let mut config = EdgeConfig::default();
        let mut cursor = 0;
        let mut last_edge = None;
        'read: while cursor < upto {
            let batch = self.store.read_after(cursor, BATCH).await?;
            if batch.is_empty() {
                break;
            }
            for event in &batch {
                if event.event_id > upto {
                    break 'read;
                }
                // Rejections are logged by `sync`; here they only change nothing.
                if let Ok(Some(_)) = apply_stored(&mut config, event) {
                    last_edge = Some(marker_of(event));
                }
                cursor = event.event_id;
            }
        }
        Ok(View {
            event_id: cursor.max(upto),
            config,
            last_edge,
        })
    }
}
