//! The control service's own Prometheus metrics, served on `GET /metrics` (admin
//! token) from one registry that the ACME metrics ([`crate::acme::AcmeMetrics`])
//! share: appends to the event log, the log head and the projection following it,
//! the feed to proxies, and API latency. Listed in `control/API.md`, "Metrics".
//!
//! Every label has a fixed set of values (event types, refusal reasons,
//! transports, snapshot reasons, route templates, methods, status classes): tenant,
//! app, hostname and key ids are never labels, whatever the number of tenants.
//! Series whose label values are known up front are resolved once, here, so the
//! feed and the commands bump a handle instead of looking one up.

use crate::commands::CommandError;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::time::Duration;
use tollgate_routing::EdgeEvent;

/// Buckets of `tollgate_control_feed_cursor_lag_events` (events).
const LAG_BUCKETS: [f64; 14] = [
    0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
/// Buckets of `tollgate_control_http_request_duration_seconds`: reads take
/// milliseconds, writes wait for the projection (up to 5 s), batches longer.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric of the control service, registered in [`Self::registry`].
pub struct ControlMetrics {
    pub registry: Registry,
    pub appends: AppendMetrics,
    pub log: LogMetrics,
    pub feed: FeedMetrics,
    pub http: HttpMetrics,
    pub commits: CommitMetrics,
}

impl ControlMetrics {
    /// A fresh registry holding the control metrics (register the ACME ones in it too).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        Ok(ControlMetrics {
            appends: AppendMetrics::register(&registry)?,
            log: LogMetrics::register(&registry)?,
            feed: FeedMetrics::register(&registry)?,
            http: HttpMetrics::register(&registry)?,
            commits: CommitMetrics::register(&registry)?,
            registry,
        })
    }
}

/// Why a write command appended nothing (the `reason` label), one per error kind
/// of [`CommandError`].
const REFUSALS: [&str; 6] = [
    "bad_request",
    "not_found",
    "conflict",
    "version_conflict",
    "validation",
    "store_unavailable",
];

fn refusal(e: &CommandError) -> usize {
    match e {
        CommandError::BadRequest(_) => 0,
        CommandError::NotFound(_) => 1,
        CommandError::Conflict(_) => 2,
        CommandError::VersionConflict { .. } => 3,
        CommandError::Invalid { .. } => 4,
        CommandError::Store(_) => 5,
    }
}

/// Events the commands appended, and commands refused.
pub struct AppendMetrics {
    appended: IntCounterVec,
    failures: [IntCounter; REFUSALS.len()],
}

impl AppendMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let appended = IntCounterVec::new(
            Opts::new(
                "tollgate_control_events_appended_total",
                "Events appended to the log by this replica's commands, by event type.",
            ),
            &["kind"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "tollgate_control_append_failures_total",
                "Write commands (single or batch) refused without appending, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(appended.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(AppendMetrics {
            appended,
            failures: REFUSALS.map(|r| failures.with_label_values(&[r])),
        })
    }

    /// Counts events just appended. Event types are the fixed set of
    /// [`EdgeEvent`] variants.
    pub fn appended(&self, events: &[EdgeEvent]) {
        self.appended_types(events.iter().map(EdgeEvent::event_type));
    }

    /// Counts appended events by their types.
    pub fn appended_types(&self, types: impl IntoIterator<Item = &'static str>) {
        for t in types {
            self.appended.with_label_values(&[t]).inc();
        }
    }

    /// Counts a command that appended nothing because of `e`.
    pub fn refused(&self, e: &CommandError) {
        self.failures[refusal(e)].inc();
    }
}

/// Buckets of `tollgate_control_group_commit_events` (events per append).
const COMMIT_EVENT_BUCKETS: [f64; 10] =
    [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

/// What a group commit holds: the `holds` label, fixed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitHolds {
    /// Single commands only.
    Commands,
    /// A batch, with or without single commands beside it.
    Batch,
}

/// Group commits: how long each append took and how many events it held.
pub struct CommitMetrics {
    /// By [`CommitHolds`], in declaration order.
    duration: [Histogram; 2],
    events: [Histogram; 2],
}

impl CommitMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_control_group_commit_duration_seconds",
                "Appends of a group of commands to the log, from the commit taking the group to the store's answer, by what the group holds (commands, or batch).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["holds"],
        )?;
        let events = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_control_group_commit_events",
                "Events per group commit, by what the group holds (commands, or batch).",
            )
            .buckets(COMMIT_EVENT_BUCKETS.to_vec()),
            &["holds"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(events.clone()))?;
        let by = |h: &HistogramVec| ["commands", "batch"].map(|l| h.with_label_values(&[l]));
        Ok(CommitMetrics {
            duration: by(&duration),
            events: by(&events),
        })
    }

    /// Observes one append of `events` events that took `took`.
    pub fn committed(&self, holds: CommitHolds, events: usize, took: Duration) {
        self.duration[holds as usize].observe(took.as_secs_f64());
        self.events[holds as usize].observe(events as f64);
    }
}

/// Where the log ends and how far this replica's projection follows it; set when
/// `/metrics` is scraped.
pub struct LogMetrics {
    head: IntGauge,
    projection: IntGauge,
    lag: IntGauge,
}

impl LogMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let head = IntGauge::new(
            "tollgate_control_log_head_event_id",
            "Highest committed event id of the log (every replica's appends).",
        )?;
        let projection = IntGauge::new(
            "tollgate_control_projection_event_id",
            "Last event id this replica's projection (and so its feed) has applied.",
        )?;
        let lag = IntGauge::new(
            "tollgate_control_projection_lag_events",
            "Log head minus projection cursor: events not yet visible to this replica's proxies.",
        )?;
        registry.register(Box::new(head.clone()))?;
        registry.register(Box::new(projection.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        Ok(LogMetrics {
            head,
            projection,
            lag,
        })
    }

    /// Sets the gauges; `head` is `None` when the store could not say (the last
    /// known head stays).
    pub fn observe(&self, head: Option<i64>, projection: i64) {
        if let Some(head) = head {
            self.head.set(head);
        }
        self.projection.set(projection);
        self.lag.set((self.head.get() - projection).max(0));
    }
}

/// Why a watch starts with a whole snapshot (the `reason` label of
/// `transport="grpc"`; `GET /v1/snapshot` is `reason="requested"`, the poller
/// does not say why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    /// From event 0: the proxy has no config yet.
    Initial,
    /// From beyond the end of the log (the proxy followed another database).
    CursorAhead,
    /// Further behind than `--feed-max-replay` events.
    TooFarBehind,
    /// The log does not hold the proxy's last edge event (restored from a backup).
    LogDiverged,
}

/// The feed to proxies: open watches, polls, snapshots and how far behind proxies
/// are when they are sent events.
pub struct FeedMetrics {
    grpc_watchers: IntGauge,
    polls: IntCounter,
    grpc_lag: Histogram,
    http_lag: Histogram,
    /// By [`SnapshotReason`], in declaration order.
    grpc_snapshots: [IntCounter; 4],
    http_snapshots: IntCounter,
    reads: IntCounterVec,
}

impl FeedMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let watchers = IntGaugeVec::new(
            Opts::new(
                "tollgate_control_feed_watchers",
                "Open feed streams (EdgeFeed.Watch), by transport.",
            ),
            &["transport"],
        )?;
        let polls = IntCounter::new(
            "tollgate_control_feed_polls_total",
            "GET /v1/events polls answered with the events after the proxy's cursor.",
        )?;
        let lag = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_control_feed_cursor_lag_events",
                "Projection cursor minus the proxy's cursor when a watcher is sent events or a poll is answered.",
            )
            .buckets(LAG_BUCKETS.to_vec()),
            &["transport"],
        )?;
        let snapshots = IntCounterVec::new(
            Opts::new(
                "tollgate_control_feed_snapshots_total",
                "Whole snapshots sent to proxies, by transport and reason.",
            ),
            &["transport", "reason"],
        )?;
        registry.register(Box::new(watchers.clone()))?;
        registry.register(Box::new(polls.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        let reads = IntCounterVec::new(
            Opts::new(
                "tollgate_control_feed_reads_total",
                "Ranges of deltas read from the log and snapshots encoded for EdgeFeed.Watch (source=made), or taken from another watcher's at the same place in the log (source=shared).",
            ),
            &["kind", "source"],
        )?;
        registry.register(Box::new(snapshots.clone()))?;
        registry.register(Box::new(reads.clone()))?;
        let grpc_snapshot = |reason| snapshots.with_label_values(&["grpc", reason]);
        Ok(FeedMetrics {
            grpc_watchers: watchers.with_label_values(&["grpc"]),
            polls,
            grpc_lag: lag.with_label_values(&["grpc"]),
            http_lag: lag.with_label_values(&["http"]),
            grpc_snapshots: [
                grpc_snapshot("initial"),
                grpc_snapshot("cursor_ahead"),
                grpc_snapshot("too_far_behind"),
                grpc_snapshot("log_diverged"),
            ],
            http_snapshots: snapshots.with_label_values(&["http", "requested"]),
            reads,
        })
    }

    /// The handles a [`FeedShare`](crate::feed_share::FeedShare) counts in.
    pub fn share_counts(&self) -> crate::feed_share::ShareCounts {
        let r = |kind, source| self.reads.with_label_values(&[kind, source]);
        crate::feed_share::ShareCounts {
            pages_made: r("deltas", "made"),
            pages_shared: r("deltas", "shared"),
            snapshots_made: r("snapshot", "made"),
            snapshots_shared: r("snapshot", "shared"),
        }
    }

    /// Counts a `GET /v1/snapshot` answered.
    pub fn snapshot_requested(&self) {
        self.http_snapshots.inc();
    }

    /// Counts a poll answered `lag` events behind the projection (0 when the
    /// proxy is current).
    pub fn polled(&self, lag: i64) {
        self.polls.inc();
        self.http_lag.observe(lag.max(0) as f64);
    }
}

/// One open watch stream: counted in `tollgate_control_feed_watchers` until dropped.
/// Without metrics (a feed built without them) it counts nothing.
pub struct Watcher(Option<(IntGauge, Histogram)>);

impl Watcher {
    /// Opens a watcher, counting the snapshot it will be sent first, if any.
    pub fn open(metrics: Option<&ControlMetrics>, snapshot: Option<SnapshotReason>) -> Self {
        let Some(m) = metrics else {
            return Watcher(None);
        };
        if let Some(reason) = snapshot {
            m.feed.grpc_snapshots[reason as usize].inc();
        }
        m.feed.grpc_watchers.inc();
        Watcher(Some((
            m.feed.grpc_watchers.clone(),
            m.feed.grpc_lag.clone(),
        )))
    }

    /// Observes the lag of a watcher about to be sent the events up to the
    /// projection's cursor; nothing when it is current (`lag <= 0`).
    pub fn lag(&self, lag: i64) {
        if let Some((_, histogram)) = &self.0
            && lag > 0
        {
            histogram.observe(lag as f64);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some((gauge, _)) = &self.0 {
            gauge.dec();
        }
    }
}

/// API latency by route template.
pub struct HttpMetrics {
    duration: HistogramVec,
}

impl HttpMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_control_http_request_duration_seconds",
                "HTTP API requests, from request head to response head, by route template (_unmatched for no route), method and status class.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "method", "status_class"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        Ok(HttpMetrics { duration })
    }

    /// Observes one request. `route` must be a route template or `_unmatched`,
    /// never a concrete path; `method` and `status_class` bounded labels.
    pub fn observe(&self, route: &str, method: &str, status_class: &str, took: Duration) {
        self.duration
            .with_label_values(&[route, method, status_class])
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    fn text(m: &ControlMetrics) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn refusals_have_fixed_series_from_the_start() {
        let m = ControlMetrics::new().unwrap();
        m.appends.refused(&CommandError::invalid("no"));
        let t = text(&m);
        assert!(t.contains("tollgate_control_append_failures_total{reason=\"validation\"} 1"));
        assert!(t.contains("tollgate_control_append_failures_total{reason=\"conflict\"} 0"));
        assert!(t.contains(
            "tollgate_control_feed_snapshots_total{reason=\"too_far_behind\",transport=\"grpc\"} 0"
        ));
    }

    #[test]
    fn a_watcher_counts_while_open() {
        let m = ControlMetrics::new().unwrap();
        let w = Watcher::open(Some(&m), Some(SnapshotReason::Initial));
        w.lag(0);
        w.lag(3);
        assert_eq!(m.feed.grpc_watchers.get(), 1);
        assert_eq!(m.feed.grpc_lag.get_sample_count(), 1);
        assert_eq!(m.feed.grpc_snapshots[0].get(), 1);
        drop(w);
        assert_eq!(m.feed.grpc_watchers.get(), 0);
        // Without metrics nothing is counted, and nothing fails.
        Watcher::open(None, Some(SnapshotReason::Initial)).lag(5);
    }

    #[test]
    fn lag_is_head_minus_projection_and_keeps_the_head_when_unknown() {
        let m = ControlMetrics::new().unwrap();
        m.log.observe(Some(12), 9);
        assert_eq!((m.log.head.get(), m.log.lag.get()), (12, 3));
        m.log.observe(None, 12);
        assert_eq!((m.log.head.get(), m.log.lag.get()), (12, 0));
    }
}
