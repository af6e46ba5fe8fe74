//! [`Spool`]: batches not yet acknowledged by the control service, in order, and
//! the next `batch_seq`, kept in one file (`usage-spool.json`, replaced
//! atomically, mode 0600) so a restart resends them under their original names.
//!
//! **Only the oldest batch is ever sent.** Batches are sent one at a time, in
//! order, and dropped only after the service acknowledged them, so every batch
//! behind the oldest one has never been sent and its `batch_seq` is unused.
//!
//! **Bounded by merging.** Once [`Spool::max_pending`] batches wait (the control
//! service is down), new records are merged into the newest batch (per app and
//! period, summed) instead of adding batches; that batch was never sent, so
//! changing it cannot double count. The spool then grows only with the number of
//! distinct apps and days seen during the outage, not with its length. A merge
//! that would exceed [`BATCH_RECORDS`] records or [`MAX_COUNT`] in a count adds
//! a batch instead: nothing is ever dropped to bound the spool.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use tollgate_routing::usage::{MAX_COUNT, UsageBatch, UsageRecord};

/// Name of the spool file inside the spool folder.
pub const SPOOL_FILE: &str = "usage-spool.json";
/// Most records per batch the proxy builds (the service accepts up to 5000).
pub const BATCH_RECORDS: usize = 1000;

#[derive(Serialize, Deserialize)]
struct SpoolFile {
    next_seq: i64,
    pending: Vec<UsageBatch>,
}

/// Where a new batch's records went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Into a new batch with this `batch_seq`.
    New(i64),
    /// Into the newest pending batch, this one.
    Merged(i64),
}

/// The pending batches, oldest first.
#[derive(Debug)]
pub struct Spool {
    file: Option<PathBuf>,
    next_seq: i64,
    pending: VecDeque<UsageBatch>,
    max_pending: usize,
}

impl Spool {
    /// An empty spool kept only in memory (survives control outages, not
    /// restarts).
    pub fn in_memory(max_pending: usize) -> Spool {
        Spool {
            file: None,
            next_seq: first_seq(0),
            pending: VecDeque::new(),
            max_pending: max_pending.max(2),
        }
    }

    /// Loads `dir/usage-spool.json`, creating `dir` if needed. A spool that
    /// cannot be read is renamed aside (`….corrupt-<unix seconds>`) and an empty
    /// one started; the error is returned with it so the caller reports it.
    pub fn open(dir: &Path, max_pending: usize) -> (Spool, Option<String>) {
        let file = dir.join(SPOOL_FILE);
        let mut spool = Spool {
            file: Some(file.clone()),
            ..Spool::in_memory(max_pending)
        };
        if let Err(e) = std::fs::create_dir_all(dir) {
            return (spool, Some(format!("creating {}: {e}", dir.display())));
        }
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (spool, None),
            Err(e) => return (spool, Some(format!("reading {}: {e}", file.display()))),
        };
        match serde_json::from_slice::<SpoolFile>(&bytes) {
            Ok(saved) => {
                let last_pending = saved.pending.iter().map(|b| b.batch_seq).max();
                spool.next_seq = first_seq(saved.next_seq.max(last_pending.map_or(0, |s| s + 1)));
                spool.pending = saved.pending.into();
                (spool, None)
            }
            Err(e) => {
                let aside = file.with_extension(format!("json.corrupt-{}", unix_seconds()));
                let moved = std::fs::rename(&file, &aside)
                    .map(|()| format!("moved to {}", aside.display()))
                    .unwrap_or_else(|r| format!("cannot move it aside: {r}"));
                (
                    spool,
                    Some(format!(
                        "{} is not a usage spool ({e}); {moved}",
                        file.display()
                    )),
                )
            }
        }
    }

    /// Batches waiting, oldest first.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The batch to send next.
    pub fn head(&self) -> Option<&UsageBatch> {
        self.pending.front()
    }

    /// Drops the oldest batch (acknowledged, or set aside as refused).
    pub fn pop_head(&mut self) -> Option<UsageBatch> {
        self.pending.pop_front()
    }

    /// The `batch_seq` the next new batch gets.
    #[cfg(test)]
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// Queues `records` (at most [`BATCH_RECORDS`], one per app and period) from
    /// `node_id`: a new batch, or merged into the newest one when the spool is
    /// full (see the module docs).
    pub fn add(&mut self, node_id: &str, records: Vec<UsageRecord>) -> Added {
        if self.pending.len() >= self.max_pending
            && let Some(tail) = self.pending.back_mut()
            && tail.node_id == node_id
            && let Some(merged) = merge(&tail.records, &records)
        {
            tail.records = merged;
            return Added::Merged(tail.batch_seq);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(UsageBatch {
            node_id: node_id.to_string(),
            batch_seq: seq,
            records,
        });
        Added::New(seq)
    }

    /// The file the spool is kept in (`None` in memory).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The spool's file content.
    pub fn encode(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&SpoolFile {
            next_seq: self.next_seq,
            pending: self.pending.iter().cloned().collect(),
        })
    }
}

/// Sums `extra` into `base` per app and period; `None` when the result would
/// exceed [`BATCH_RECORDS`] records or [`MAX_COUNT`] in any count.
fn merge(base: &[UsageRecord], extra: &[UsageRecord]) -> Option<Vec<UsageRecord>> {
    let mut by_key: BTreeMap<(&str, &str), UsageRecord> = base
        .iter()
        .map(|r| ((r.app_id.as_str(), r.period.as_str()), r.clone()))
        .collect();
    for r in extra {
        match by_key.get_mut(&(r.app_id.as_str(), r.period.as_str())) {
            None => {
                by_key.insert((r.app_id.as_str(), r.period.as_str()), r.clone());
            }
            Some(m) => {
                let sum = |a: i64, b: i64| a.checked_add(b).filter(|s| *s <= MAX_COUNT);
                m.requests = sum(m.requests, r.requests)?;
                m.bytes_in = sum(m.bytes_in, r.bytes_in)?;
                m.bytes_out = sum(m.bytes_out, r.bytes_out)?;
                m.units = sum(m.units, r.units)?;
            }
        }
    }
    (by_key.len() <= BATCH_RECORDS).then(|| by_key.into_values().collect())
}

/// The first `batch_seq` of this run: past every one used before (`floor`), and
/// past the current time in microseconds, so even a proxy that lost its spool
/// (or has none) does not reuse a name its `node_id` used in an earlier run,
/// unless the clock went back.
fn first_seq(floor: i64) -> i64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2))
        .unwrap_or(0);
    floor.max(micros)
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::write_atomic;

    fn record(app: &str, period: &str, n: i64) -> UsageRecord {
        UsageRecord {
            app_id: app.into(),
            period: period.into(),
            requests: n,
            bytes_in: n,
            bytes_out: n,
            units: n,
        }
    }

    fn save(spool: &Spool) {
        write_atomic(spool.file().unwrap(), &spool.encode().unwrap()).unwrap();
    }

    #[test]
    fn sequence_continues_across_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, err) = Spool::open(dir.path(), 8);
        assert_eq!(err, None);
        let Added::New(first) = spool.add("n1", vec![record("a", "2026-11-23", 1)]) else {
            panic!("not a new batch");
        };
        assert_eq!(
            spool.add("n1", vec![record("a", "2026-11-23", 2)]),
            Added::New(first + 1)
        );
        save(&spool);
        let (mut again, err) = Spool::open(dir.path(), 8);
        assert_eq!(err, None);
        assert_eq!(again.len(), 2);
        assert_eq!(again.head().unwrap().batch_seq, first);
        assert!(again.next_seq() >= first + 2);
        // Acknowledged batches are gone; their numbers are never handed out again.
        again.pop_head();
        again.pop_head();
        save(&again);
        let (third, _) = Spool::open(dir.path(), 8);
        assert!(third.is_empty());
        assert!(third.next_seq() >= first + 2);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SPOOL_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_full_spool_merges_into_its_newest_batch_only() {
        let mut spool = Spool::in_memory(3);
        let seqs: Vec<Added> = (1..=3)
            .map(|n| spool.add("n1", vec![record("a", "2026-11-23", n)]))
            .collect();
        let Added::New(third) = seqs[2] else {
            panic!("{seqs:?}")
        };
        let merged = spool.add(
            "n1",
            vec![record("a", "2026-11-23", 10), record("b", "2026-11-24", 5)],
        );
        assert_eq!(merged, Added::Merged(third));
        assert_eq!(spool.len(), 3);
        let tail = &spool.pending[2].records;
        assert_eq!(
            tail,
            &[record("a", "2026-11-23", 13), record("b", "2026-11-24", 5)]
        );
        // The head (the only batch that may have been sent) never changes.
        assert_eq!(
            spool.head().unwrap().records,
            [record("a", "2026-11-23", 1)]
        );
        // Another node's batch (an earlier run's) is not merged into.
        assert!(matches!(
            spool.add("n2", vec![record("a", "2026-11-23", 1)]),
            Added::New(_)
        ));
    }

    #[test]
    fn merging_never_overflows_a_batch() {
        let mut spool = Spool::in_memory(2);
        spool.add("n1", vec![record("a", "2026-11-23", 1)]);
        spool.add("n1", vec![record("a", "2026-11-23", MAX_COUNT)]);
        assert!(matches!(
            spool.add("n1", vec![record("a", "2026-11-23", 1)]),
            Added::New(_)
        ));
        let wide: Vec<UsageRecord> = (0..BATCH_RECORDS)
            .map(|i| record(&format!("a{i}"), "2026-11-23", 1))
            .collect();
        let mut spool = Spool::in_memory(2);
        spool.add("n1", vec![record("x", "2026-11-23", 1)]);
        spool.add("n1", wide.clone());
        assert!(matches!(
            spool.add("n1", vec![record("b", "2026-11-23", 1)]),
            Added::New(_)
        ));
        assert_eq!(spool.len(), 3);
    }

    #[test]
    fn an_unreadable_spool_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SPOOL_FILE), b"{not json").unwrap();
        let (spool, err) = Spool::open(dir.path(), 8);
        let err = err.unwrap();
        assert!(err.contains("moved to"), "{err}");
        assert!(spool.is_empty());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("usage-spool.json.corrupt-")),
            "{names:?}"
        );
    }
}
