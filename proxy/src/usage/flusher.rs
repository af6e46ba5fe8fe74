//! The flusher task: every interval, drain the recorder into a batch, spool it,
//! and send the spool to the control service in order (see the module docs of
//! [`crate::usage`]).

use super::metrics::UsageMetrics;
use super::recorder::{UsageCount, UsageDelta, UsageRecorder};
use super::send::{Sender, Sent};
use super::spool::{Added, BATCH_RECORDS, Spool};
use crate::control_client::{Backoff, ControlSettings};
use crate::files::write_atomic;
use bytes::Bytes;
use http::Uri;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tollgate_routing::usage::{MAX_COUNT, UsageBatch, UsageRecord, is_app_id};

/// Default time between drains.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default bound of one `POST /v1/usage`, connect to last byte.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest wait between retries.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
/// Default number of pending batches before new records are merged.
pub const DEFAULT_MAX_PENDING: usize = 64;
const RETRY_MIN: Duration = Duration::from_millis(250);

/// Where and how the flusher sends usage.
#[derive(Clone)]
pub struct FlushConfig {
    /// The control service's HTTP API (`/v1/usage` is appended).
    pub http_url: Uri,
    /// Bearer token (the proxy token).
    pub token: Option<String>,
    /// Names this proxy's batches; unique per proxy.
    pub node_id: String,
    /// Time between drains.
    pub interval: Duration,
    /// Folder of `usage-spool.json`; `None` keeps pending batches in memory only
    /// (they survive control outages, not proxy restarts).
    pub spool_dir: Option<PathBuf>,
    /// PEM CAs trusted for an `https://` URL; the web PKI when absent.
    pub ca_file: Option<String>,
    /// Bound of one send.
    pub request_timeout: Duration,
    /// Longest wait between retries (they start at 250 ms and double).
    pub retry_max: Duration,
    /// Pending batches before new records are merged into the newest (at least 2).
    pub max_pending: usize,
}

impl std::fmt::Debug for FlushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushConfig")
            .field("http_url", &self.http_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("node_id", &self.node_id)
            .field("interval", &self.interval)
            .field("spool_dir", &self.spool_dir)
            .finish_non_exhaustive()
    }
}

impl FlushConfig {
    /// The defaults for `http_url`, without a spool folder.
    pub fn new(http_url: Uri, token: Option<String>, node_id: String) -> Self {
        FlushConfig {
            http_url,
            token,
            node_id,
            interval: DEFAULT_INTERVAL,
            spool_dir: None,
            ca_file: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_max: DEFAULT_RETRY_MAX,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }

    /// From the `[control]` settings: their `http_url`, token, `node_id`, CA
    /// file, and the spool in `state_dir`. `None` without an `http_url`.
    pub fn from_control(settings: &ControlSettings) -> Option<Self> {
        let http_url = settings.http_url.clone()?;
        Some(FlushConfig {
            spool_dir: settings.state_file.parent().map(PathBuf::from),
            ca_file: settings.ca_file.clone(),
            interval: settings.usage_flush_interval,
            ..FlushConfig::new(http_url, settings.token.clone(), settings.node_id.clone())
        })
    }
}

/// Why the flusher could not start.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("usage flusher: {0}")]
    Config(String),
}

/// The running flusher. Dropping it leaves the task running; call
/// [`shutdown`](Self::shutdown) on a graceful stop so the last interval's
/// usage is spooled (and sent if the service answers in time).
pub struct UsageFlusher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl UsageFlusher {
    /// Drains one last time, spools, tries to send what is pending (bounded by
    /// the request timeout) and waits for the task to end.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "usage flusher task failed");
        }
    }
}

/// Starts the flusher for `recorder` (call within a Tokio runtime). Fails only
/// for a config that cannot work (CA file, token, URL); a control service that
/// is down is retried.
pub fn spawn_flusher(
    recorder: Arc<UsageRecorder>,
    config: FlushConfig,
    metrics: UsageMetrics,
) -> Result<UsageFlusher, FlushError> {
    if config.node_id.is_empty() || config.interval.is_zero() {
        return Err(FlushError::Config(
            "node_id must not be empty and interval not zero".into(),
        ));
    }
    let sender = Sender::new(
        &config.http_url,
        config.token.as_deref(),
        config.ca_file.as_deref(),
        config.request_timeout,
    )
    .map_err(FlushError::Config)?;
    let (stop, stopped) = watch::channel(false);
    let flusher = Flusher {
        backoff: Backoff::new(RETRY_MIN, config.retry_max),
        spool: Spool::in_memory(config.max_pending),
        recorder,
        config,
        metrics,
        sender,
    };
    let task = tokio::spawn(flusher.run(stopped));
    Ok(UsageFlusher { stop, task })
}

struct Flusher {
    recorder: Arc<UsageRecorder>,
    config: FlushConfig,
    metrics: UsageMetrics,
    sender: Sender,
    spool: Spool,
    backoff: Backoff,
}

impl Flusher {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        self.load().await;
        // A dropped handle never stops the task.
        let stop = async move {
            if stopped.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(stop);
        let mut next_drain = Instant::now() + self.config.interval;
        let mut retry_at: Option<Instant> = None;
        loop {
            if retry_at.is_none_or(|t| Instant::now() >= t) {
                retry_at = self.send_pending().await;
            }
            let wake = retry_at.map_or(next_drain, |t| t.min(next_drain));
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if Instant::now() >= next_drain {
                self.collect().await;
                next_drain = Instant::now() + self.config.interval;
            }
        }
        self.collect().await;
        // One bounded attempt; whatever is left stays in the spool for the next run.
        let _ = tokio::time::timeout(self.config.request_timeout, self.send_pending()).await;
        if !self.spool.is_empty() {
            tracing::warn!(
                pending = self.spool.len(),
                spooled = self.spool.file().is_some(),
                "usage batches left unsent at shutdown"
            );
        }
    }

    /// Loads the spool of an earlier run, if any.
    async fn load(&mut self) {
        let Some(dir) = self.config.spool_dir.clone() else {
            return;
        };
        let max = self.config.max_pending;
        match tokio::task::spawn_blocking(move || Spool::open(&dir, max)).await {
            Ok((spool, problem)) => {
                if let Some(problem) = problem {
                    self.metrics.spool_errors.inc();
                    tracing::error!(error = %problem, "usage spool");
                }
                if !spool.is_empty() {
                    tracing::info!(
                        pending = spool.len(),
                        "usage batches of an earlier run will be resent"
                    );
                }
                self.spool = spool;
            }
            Err(e) => {
                self.metrics.spool_errors.inc();
                tracing::error!(error = %e, "usage spool could not be loaded; keeping batches in memory");
            }
        }
        self.metrics.pending_batches.set(self.spool.len() as i64);
    }

    /// Drains the recorder into the spool and saves it.
    async fn collect(&mut self) {
        let records = self.records(self.recorder.drain());
        if records.is_empty() {
            return;
        }
        for chunk in records.chunks(BATCH_RECORDS) {
            match self.spool.add(&self.config.node_id, chunk.to_vec()) {
                Added::New(seq) => {
                    tracing::debug!(batch_seq = seq, records = chunk.len(), "usage batch queued")
                }
                Added::Merged(seq) => {
                    self.metrics.batches_merged.inc();
                    tracing::debug!(
                        batch_seq = seq,
                        "usage merged into a pending batch (spool full)"
                    );
                }
            }
        }
        self.save().await;
    }

    /// Counts as records the service accepts: invalid app ids dropped (loudly),
    /// counts above `MAX_COUNT` split, the rest handed back for the next batch.
    fn records(&self, counts: Vec<UsageCount>) -> Vec<UsageRecord> {
        let limit = u64::try_from(MAX_COUNT).unwrap_or(u64::MAX);
        let clip = |n: u64| (n.min(limit), n.saturating_sub(limit));
        let mut records = Vec::with_capacity(counts.len());
        for c in counts {
            if !is_app_id(&c.app_id) {
                self.metrics.records_dropped.inc();
                tracing::error!(app = %c.app_id, "usage for an invalid app id dropped");
                continue;
            }
            let u = c.usage;
            let (requests, r) = clip(u.requests);
            let (bytes_in, i) = clip(u.bytes_in);
            let (bytes_out, o) = clip(u.bytes_out);
            let (units, n) = clip(u.units);
            self.recorder.set_aside(
                c.app_id.clone(),
                c.period,
                UsageDelta {
                    requests: r,
                    bytes_in: i,
                    bytes_out: o,
                    units: n,
                },
            );
            let signed = |n: u64| i64::try_from(n).unwrap_or(MAX_COUNT);
            records.push(UsageRecord {
                app_id: c.app_id.to_string(),
                period: c.period.to_string(),
                requests: signed(requests),
                bytes_in: signed(bytes_in),
                bytes_out: signed(bytes_out),
                units: signed(units),
            });
        }
        records
    }

    /// Sends pending batches oldest first until the spool is empty (`None`) or
    /// an attempt fails (the time to retry).
    async fn send_pending(&mut self) -> Option<Instant> {
        while let Some(head) = self.spool.head() {
            let seq = head.batch_seq;
            let body = match serde_json::to_vec(head) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    let batch = self.spool.pop_head();
                    self.reject(batch, format!("cannot encode: {e}")).await;
                    continue;
                }
            };
            match self.sender.send(body).await {
                Sent::Acked { duplicate } => {
                    let result = if duplicate { "duplicate" } else { "stored" };
                    self.metrics.batches_sent.with_label_values(&[result]).inc();
                    tracing::debug!(batch_seq = seq, result, "usage batch acknowledged");
                    self.spool.pop_head();
                    self.backoff.reset();
                    self.save().await;
                }
                Sent::Retry { reason, detail } => {
                    self.metrics
                        .send_failures
                        .with_label_values(&[reason])
                        .inc();
                    let delay = self.backoff.next_delay();
                    tracing::warn!(batch_seq = seq, pending = self.spool.len(), error = %detail, retry_in = ?delay, "usage batch not delivered");
                    return Some(Instant::now() + delay);
                }
                Sent::Rejected { status, detail } => {
                    let batch = self.spool.pop_head();
                    self.reject(batch, format!("refused with {status}: {detail}"))
                        .await;
                }
            }
        }
        None
    }

    /// Keeps a refused batch for operators (`usage-rejected-<seq>.json` next to
    /// the spool) and moves on; it is not billed.
    async fn reject(&mut self, batch: Option<UsageBatch>, why: String) {
        let Some(batch) = batch else { return };
        self.metrics.batches_rejected.inc();
        tracing::error!(batch_seq = batch.batch_seq, node_id = %batch.node_id, records = batch.records.len(), error = %why, "usage batch refused by the control service; set aside, not billed");
        if let Some(dir) = &self.config.spool_dir {
            let file = dir.join(format!("usage-rejected-{}.json", batch.batch_seq));
            let kept = serde_json::json!({ "error": why, "batch": batch });
            let bytes = kept.to_string().into_bytes();
            let written = tokio::task::spawn_blocking(move || write_atomic(&file, &bytes)).await;
            if !matches!(written, Ok(Ok(()))) {
                self.metrics.spool_errors.inc();
                tracing::error!("cannot keep the refused usage batch on disk");
            }
        }
        self.save().await;
    }

    /// Writes the spool (if it has a file) and updates the pending gauge. A
    /// failed write keeps the batches in memory and is counted.
    async fn save(&mut self) {
        self.metrics.pending_batches.set(self.spool.len() as i64);
        let Some(file) = self.spool.file().map(PathBuf::from) else {
            return;
        };
        let result = match self.spool.encode() {
            Ok(bytes) => tokio::task::spawn_blocking(move || write_atomic(&file, &bytes))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Err(e) = result {
            self.metrics.spool_errors.inc();
            tracing::error!(error = %e, "cannot write the usage spool; pending batches are kept in memory only");
        }
    }
}
