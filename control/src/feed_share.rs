//! Work that every proxy's watch would otherwise do again, done once and shared by
//! the watchers at the same place in the log.
//!
//! Proxies that keep up sit at the same cursor: when the projection advances, each
//! of their watches wakes and asks for the same range. Without sharing, a fleet of
//! N proxies costs the service N reads of every event from the store, N JSON
//! decodes and N encodes, and N encodings of the same snapshot when several start
//! at once. Here the first watcher to ask for a range (or a snapshot) makes it; the
//! others asking for the same one meanwhile wait for that result and take a copy.
//!
//! A range is keyed by its bounds (`after`, `upto`): the edge events in it are fixed
//! once the projection has applied them, so two watchers asking for the same bounds
//! get the same page. A snapshot is keyed by the event id of the projection view it
//! encodes and its encoding. Only the last few of each are kept ([`PAGES`], one
//! snapshot: about 2.5 MiB gzip-compressed at 10,000 tenants, tens of MiB for a
//! proxy that asks for it plain); an error is not kept, and the next watcher to ask
//! tries again.

use crate::feed::read_range;
use crate::projection::Projection;
use crate::store::AnyStore;
use prometheus::IntCounter;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::OnceCell;
use tollgate_proto::control::v1::Delta;

/// Ranges kept for watchers that ask late. Watchers at one cursor ask within
/// moments of each other, so a handful covers them; a lagging watcher reads alone.
pub const PAGES: usize = 16;

/// A range of the feed, encoded as the deltas proxies are sent.
#[derive(Debug)]
pub struct Page {
    pub deltas: Vec<Delta>,
    /// Every event with `after < id <= covered` was examined: resume after it.
    pub covered: i64,
}

/// One snapshot's `config_json` and `config_encoding`.
#[derive(Debug)]
pub struct EncodedSnapshot {
    pub config_json: Vec<u8>,
    pub encoding: &'static str,
}

type Slot<K, V> = (K, Arc<OnceCell<Arc<V>>>);

/// Pages and snapshots shared between the watches of one feed.
#[derive(Default)]
pub struct FeedShare {
    pages: Mutex<VecDeque<Slot<(i64, i64), Page>>>,
    snapshot: Mutex<VecDeque<Slot<(i64, bool), EncodedSnapshot>>>,
    counts: Option<ShareCounts>,
}

/// `tollgate_control_feed_reads_total` handles: made (the store read or the
/// snapshot encoded) and shared (taken from another watcher's), for pages and
/// snapshots.
#[derive(Clone)]
pub struct ShareCounts {
    pub pages_made: IntCounter,
    pub pages_shared: IntCounter,
    pub snapshots_made: IntCounter,
    pub snapshots_shared: IntCounter,
}

impl FeedShare {
    /// Sharing that counts what it makes and shares in `counts`, when given.
    pub fn new(counts: Option<ShareCounts>) -> Self {
        FeedShare {
            counts,
            ..FeedShare::default()
        }
    }

    /// The edge events with `after < id <= upto`, at most `limit`, encoded as deltas:
    /// read from the store by the first watcher that asks, shared with the others.
    /// One feed always asks with the same `limit`, so the bounds are the key.
    pub async fn page(
        &self,
        store: &AnyStore,
        projection: &Projection,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Arc<Page>, String> {
        let cell = slot(&self.pages, (after, upto), PAGES);
        let read = async {
            let page = read_range(store, projection, after, upto, limit)
                .await
                .map_err(|e| e.to_string())?;
            let mut deltas = Vec::with_capacity(page.items.len());
            for item in page.items {
                deltas.push(Delta {
                    event_id: item.event_id,
                    event_type: item.event_type,
                    event_json: serde_json::to_vec(&item.event).map_err(|e| e.to_string())?,
                    fingerprint: item.fingerprint,
                });
            }
            Ok(Page {
                deltas,
                covered: page.covered,
            })
        };
        self.counted(cell, |c| (&c.pages_made, &c.pages_shared), read)
            .await
    }

    /// The snapshot of the view at `event_id`, encoded by `encode` (off the async
    /// workers) for the first watcher that asks, shared with the others.
    pub async fn snapshot<F>(
        &self,
        event_id: i64,
        gzip: bool,
        encode: F,
    ) -> Result<Arc<EncodedSnapshot>, String>
    where
        F: FnOnce() -> Result<EncodedSnapshot, String> + Send + 'static,
    {
        let cell = slot(&self.snapshot, (event_id, gzip), 1);
        self.counted(
            cell,
            |c| (&c.snapshots_made, &c.snapshots_shared),
            async move {
                tokio::task::spawn_blocking(encode)
                    .await
                    .map_err(|e| e.to_string())?
            },
        )
        .await
    }

    /// The cell's value, made by `make` if no one has made it yet; counted as made
    /// or shared.
    async fn counted<V>(
        &self,
        cell: Arc<OnceCell<Arc<V>>>,
        pick: impl Fn(&ShareCounts) -> (&IntCounter, &IntCounter),
        make: impl Future<Output = Result<V, String>>,
    ) -> Result<Arc<V>, String> {
        let mut made = false;
        let value = cell
            .get_or_try_init(|| async {
                made = true;
                make.await.map(Arc::new)
            })
            .await?
            .clone();
        if let Some(c) = &self.counts {
            let (m, s) = pick(c);
            if made { m.inc() } else { s.inc() }
        }
        Ok(value)
    }
}

/// The cell for `key` in `slots`, added (and the oldest beyond `keep` dropped) when
/// there is none.
fn slot<K: PartialEq, V>(
    slots: &Mutex<VecDeque<Slot<K, V>>>,
    key: K,
    keep: usize,
) -> Arc<OnceCell<Arc<V>>> {
    let mut slots = lock(slots);
    if let Some((_, cell)) = slots.iter().find(|(k, _)| *k == key) {
        return cell.clone();
    }
    let cell = Arc::new(OnceCell::new());
    slots.push_back((key, cell.clone()));
    while slots.len() > keep {
        slots.pop_front();
    }
    cell
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded deque is consistent after any panic: every change is one call.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    fn counted() -> (FeedShare, ShareCounts) {
        let c = |name: &str| IntCounter::new(name, name).expect("a valid counter");
        let counts = ShareCounts {
            pages_made: c("pm"),
            pages_shared: c("ps"),
            snapshots_made: c("sm"),
            snapshots_shared: c("ss"),
        };
        (FeedShare::new(Some(counts.clone())), counts)
    }

    fn encoded(bytes: &[u8]) -> Result<EncodedSnapshot, String> {
        Ok(EncodedSnapshot {
            config_json: bytes.to_vec(),
            encoding: "",
        })
    }

    #[tokio::test]
    async fn a_watcher_asking_while_the_snapshot_is_encoded_waits_for_it() {
        let (share, counts) = counted();
        let share = Arc::new(share);
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let first = tokio::spawn({
            let share = share.clone();
            async move {
                share
                    .snapshot(7, true, move || {
                        let _ = started_tx.send(());
                        gate.recv().map_err(|e| e.to_string())?;
                        encoded(b"seven")
                    })
                    .await
            }
        });
        started.await.expect("the first encode started");
        let second_ran = Arc::new(AtomicUsize::new(0));
        let second = tokio::spawn({
            let (share, ran) = (share.clone(), second_ran.clone());
            async move {
                share
                    .snapshot(7, true, move || {
                        ran.fetch_add(1, SeqCst);
                        encoded(b"other")
                    })
                    .await
            }
        });
        // Whether the second asks while the encode runs (it waits on the cell) or
        // after, it takes the first's result.
        tokio::task::yield_now().await;
        release.send(()).expect("the encode waits");
        let (a, b) = (first.await.expect("joined"), second.await.expect("joined"));
        let (a, b) = (a.expect("encoded"), b.expect("shared"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.config_json, b"seven");
        assert_eq!(second_ran.load(SeqCst), 0, "encoded once");
        assert_eq!(
            (counts.snapshots_made.get(), counts.snapshots_shared.get()),
            (1, 1)
        );

        // Another event id or encoding is another snapshot, and only one is kept.
        let plain = share.snapshot(7, false, || encoded(b"plain")).await;
        assert_eq!(plain.expect("encoded").config_json, b"plain");
        let again = share.snapshot(7, true, || encoded(b"anew")).await;
        assert_eq!(again.expect("encoded").config_json, b"anew");
        assert_eq!(counts.snapshots_made.get(), 3);
    }

    #[tokio::test]
    async fn a_failed_encode_is_not_kept() {
        let (share, counts) = counted();
        let failed = share
            .snapshot(3, false, || Err("disk on fire".into()))
            .await;
        assert_eq!(failed.expect_err("the error"), "disk on fire");
        let next = share.snapshot(3, false, || encoded(b"ok")).await;
        assert_eq!(next.expect("tried again").config_json, b"ok");
        assert_eq!(counts.snapshots_made.get(), 1, "only a success counts");
        assert_eq!(counts.snapshots_shared.get(), 0);
    }

    #[test]
    fn the_oldest_slots_go_beyond_the_bound() {
        let slots: Mutex<VecDeque<Slot<(i64, i64), Page>>> = Mutex::default();
        let first = slot(&slots, (0, 1), 2);
        assert!(Arc::ptr_eq(&first, &slot(&slots, (0, 1), 2)));
        slot(&slots, (1, 2), 2);
        slot(&slots, (2, 3), 2);
        assert_eq!(lock(&slots).len(), 2);
        assert!(!Arc::ptr_eq(&first, &slot(&slots, (0, 1), 2)), "evicted");
    }
}
