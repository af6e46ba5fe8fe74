//! The last applied control snapshot on disk, so a proxy restarted while the control
//! service is down serves what it served before.
//!
//! The file is `{"event_id": N, "last_edge": {"event_id", "fingerprint"}, "config":
//! EdgeConfig}`, replaced atomically (temp file, fsync, rename) and readable by the
//! owner only: it holds certificate keys. `last_edge` (the marker a resume sends, see
//! `follower.rs`) is absent from files of older versions and when the service
//! sent none: such a state resumes from its cursor alone.

use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;
use tollgate_routing::{EdgeConfig, EdgeMarker};

/// The model, the cursor it is current at and the last edge event in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedState {
    pub event_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_edge: Option<EdgeMarker>,
    pub config: EdgeConfig,
}

/// Reads the state file: `Ok(None)` when there is none, `Err` when it cannot be used.
pub fn read(path: &Path) -> Result<Option<PersistedState>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut state: PersistedState = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if state.event_id < 0 {
        return Err(format!("negative event_id {}", state.event_id));
    }
    // A marker that is not well formed (or past the cursor) is dropped, not trusted:
    // the state then resumes from its cursor, as one without a marker.
    state.last_edge = state.last_edge.take().and_then(|m| {
        EdgeMarker::checked(m.event_id, m.fingerprint).filter(|m| m.event_id <= state.event_id)
    });
    Ok(Some(state))
}

/// Replaces `path` with `state`: write a temp file next to it, fsync, rename, fsync
/// the folder. A crash leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, state: &PersistedState) -> std::io::Result<()> {
    // Tens of MiB at tenant scale: streamed, not built in memory first.
    crate::files::write_atomic_with(path, |f| Ok(serde_json::to_writer(f, state)?))
}

/// At most one write per this interval: the file holds the whole model (tens of MiB at
/// ten thousand tenants), so a burst of deltas becomes one write, not one per delta.
/// Resuming from a state a few seconds old only replays those seconds' events.
const MIN_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// A write's time is at most this share of the time between writes (1/20: 5 % of a
/// core): at tenant scale a write serialises tens of MiB, and several proxies on one
/// machine rewriting theirs every second while updates flow took CPU the serving needs.
const WRITE_TIME_SHARE: u32 = 20;

/// How long after a write that took `took` the next may start.
fn write_interval(took: std::time::Duration) -> std::time::Duration {
    MIN_WRITE_INTERVAL.max(took.saturating_mul(WRITE_TIME_SHARE))
}

/// Hands states to a background writer; the newest wins when writes fall behind, and
/// writes are at least [`MIN_WRITE_INTERVAL`] apart, and further when they take long
/// ([`WRITE_TIME_SHARE`]).
#[derive(Debug)]
pub struct Persister {
    tx: watch::Sender<Option<Arc<PersistedState>>>,
}

impl Persister {
    /// Starts the writer task for `path`. It ends once the `Persister` is dropped and
    /// the last state handed to it is written.
    pub fn spawn(path: PathBuf, metrics: Arc<Metrics>) -> Self {
        let (tx, mut rx) = watch::channel::<Option<Arc<PersistedState>>>(None);
        tokio::spawn(async move {
            let mut next_write = tokio::time::Instant::now();
            while rx.changed().await.is_ok() {
                // States handed over meanwhile replace this one: the newest is written.
                tokio::time::sleep_until(next_write).await;
                let Some(state) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let started = tokio::time::Instant::now();
                let path = path.clone();
                let event_id = state.event_id;
                // Serialising and fsync block: keep them off the async workers.
                let result = tokio::task::spawn_blocking(move || write_atomic(&path, &state))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                next_write = started + write_interval(started.elapsed());
                match result {
                    Ok(()) => tracing::debug!(event_id, "control snapshot persisted"),
                    Err(e) => {
                        metrics
                            .control_apply_errors
                            .with_label_values(&["persist"])
                            .inc();
                        tracing::error!(event_id, error = %e, "cannot persist the control snapshot");
                    }
                }
            }
        });
        Persister { tx }
    }

    pub fn save(&self, state: PersistedState) {
        self.tx.send_replace(Some(Arc::new(state)));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slow_writes_space_out_the_next_ones() {
        use super::write_interval;
        use std::time::Duration;
        assert_eq!(
            write_interval(Duration::from_millis(3)),
            Duration::from_secs(1)
        );
        assert_eq!(
            write_interval(Duration::from_millis(200)),
            Duration::from_secs(4)
        );
    }

    use super::{PersistedState, read, write_atomic};
    use tollgate_routing::{EdgeConfig, EdgeMarker};

    #[test]
    fn the_marker_round_trips_and_older_files_read_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge-snapshot.json");
        let marker = EdgeMarker::checked(7, "a9e4c93f6547474c".into()).unwrap();
        let state = PersistedState {
            event_id: 9,
            last_edge: Some(marker.clone()),
            config: EdgeConfig::default(),
        };
        write_atomic(&path, &state).unwrap();
        let back = read(&path).unwrap().unwrap();
        assert_eq!((back.event_id, back.last_edge), (9, Some(marker)));

        // A file written before the marker existed (as an older version wrote it).
        let mut v = serde_json::to_value(&state).unwrap();
        v.as_object_mut().unwrap().remove("last_edge");
        std::fs::write(&path, v.to_string()).unwrap();
        let old = read(&path).unwrap().unwrap();
        assert_eq!((old.event_id, old.last_edge), (9, None));

        // A marker that cannot be right is dropped, the rest kept.
        for bad in [
            serde_json::json!({"event_id": 10, "fingerprint": "ab"}),
            serde_json::json!({"event_id": 4, "fingerprint": "a b"}),
        ] {
            v["last_edge"] = bad.clone();
            std::fs::write(&path, v.to_string()).unwrap();
            let s = read(&path).unwrap().unwrap();
            assert_eq!((s.event_id, s.last_edge), (9, None), "{bad}");
        }
    }
}
