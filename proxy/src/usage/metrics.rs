//! The flusher's Prometheus metrics (`tollgate_usage_*`).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Counters and gauges of the usage flusher; clones share the same metrics.
#[derive(Clone)]
pub struct UsageMetrics {
    /// `tollgate_usage_batches_sent_total{result="stored"|"duplicate"}`.
    pub batches_sent: IntCounterVec,
    /// `tollgate_usage_send_failures_total{reason="network"|"timeout"|"status"}`:
    /// attempts to be retried.
    pub send_failures: IntCounterVec,
    /// `tollgate_usage_pending_batches`: batches waiting for an acknowledgement.
    pub pending_batches: IntGauge,
    /// `tollgate_usage_batches_merged_total`: intervals merged into a pending
    /// batch because the spool was full.
    pub batches_merged: IntCounter,
    /// `tollgate_usage_batches_rejected_total`: batches the service refused for
    /// good (4xx other than auth and throttling), moved aside, not counted.
    pub batches_rejected: IntCounter,
    /// `tollgate_usage_spool_errors_total`: spool reads and writes that failed.
    pub spool_errors: IntCounter,
    /// `tollgate_usage_records_dropped_total`: counts recorded for an app id the
    /// service would refuse (a wiring bug), dropped so the rest is billed.
    pub records_dropped: IntCounter,
}

impl UsageMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = UsageMetrics {
            batches_sent: IntCounterVec::new(
                Opts::new(
                    "tollgate_usage_batches_sent_total",
                    "Usage batches acknowledged by the control service, by result.",
                ),
                &["result"],
            )?,
            send_failures: IntCounterVec::new(
                Opts::new(
                    "tollgate_usage_send_failures_total",
                    "Usage batch sends that failed and will be retried, by reason.",
                ),
                &["reason"],
            )?,
            pending_batches: IntGauge::new(
                "tollgate_usage_pending_batches",
                "Usage batches waiting for the control service's acknowledgement.",
            )?,
            batches_merged: IntCounter::new(
                "tollgate_usage_batches_merged_total",
                "Usage intervals merged into a pending batch because the spool was full.",
            )?,
            batches_rejected: IntCounter::new(
                "tollgate_usage_batches_rejected_total",
                "Usage batches the control service refused; set aside, not billed.",
            )?,
            spool_errors: IntCounter::new(
                "tollgate_usage_spool_errors_total",
                "Usage spool reads and writes that failed.",
            )?,
            records_dropped: IntCounter::new(
                "tollgate_usage_records_dropped_total",
                "Usage records dropped because their app id is not valid.",
            )?,
        };
        registry.register(Box::new(m.batches_sent.clone()))?;
        registry.register(Box::new(m.send_failures.clone()))?;
        registry.register(Box::new(m.pending_batches.clone()))?;
        registry.register(Box::new(m.batches_merged.clone()))?;
        registry.register(Box::new(m.batches_rejected.clone()))?;
        registry.register(Box::new(m.spool_errors.clone()))?;
        registry.register(Box::new(m.records_dropped.clone()))?;
        Ok(m)
    }
}
