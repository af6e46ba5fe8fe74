//! The last applied control snapshot on disk, so a proxy restarted while the control
//! service is down serves what it served before.
//!
//! The file is `{"event_id": N, "config": EdgeConfig}`, replaced atomically (temp
//! file, fsync, rename) and readable by the owner only: it holds certificate keys.

use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;
use tollgate_routing::EdgeConfig;

/// The model and the cursor it is current at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedState {
    pub event_id: i64,
    pub config: EdgeConfig,
}

/// Reads the state file: `Ok(None)` when there is none, `Err` when it cannot be used.
pub fn read(path: &Path) -> Result<Option<PersistedState>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let state: PersistedState = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if state.event_id < 0 {
        return Err(format!("negative event_id {}", state.event_id));
    }
    Ok(Some(state))
}

/// Replaces `path` with `state`: write a temp file next to it, fsync, rename, fsync
/// the folder. A crash leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, state: &PersistedState) -> std::io::Result<()> {
    crate::files::write_atomic(path, &serde_json::to_vec(state)?)
}

/// Hands states to a background writer; the newest wins when writes fall behind.
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
            while rx.changed().await.is_ok() {
                let Some(state) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let path = path.clone();
                let event_id = state.event_id;
                // Serialising and fsync block: keep them off the async workers.
                let result = tokio::task::spawn_blocking(move || write_atomic(&path, &state))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
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
