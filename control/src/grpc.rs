//! `tollgate.control.v1.EdgeFeed/Watch`: the stream proxies follow.
//!
//! - **Start.** `after_event_id = 0`, an id beyond the end of the log (the proxy
//!   followed another database), a `last_edge` marker the log does not hold (the log
//!   was restored from a backup or replaced: [`crate::feed::resume_point`]), or one
//!   more than `max_replay` events behind gets a `Snapshot` of the projection at its
//!   cursor, saying why (`reason`) and carrying the marker the proxy resumes from next
//!   (`last_edge`): a proxy that fell far behind catches up in one message, not by
//!   replaying unbounded history. Otherwise the watch resumes: only deltas after the
//!   marker (after `after_event_id` for proxies that send none).
//! - **Compression.** A snapshot's config is gzip-compressed (fast level) for
//!   proxies that ask (`gzip_snapshot`): at 10,000 tenants it is tens of MiB of
//!   mostly repeated JSON keys. Deltas are not compressed: each is one small event,
//!   and gRPC compression (a fresh compressor per message, per proxy) cost the
//!   service more CPU during a bulk load than deciding the commands.
//! - **Deltas** are read from the store by id range ([`crate::feed::read_range`])
//!   up to the projection's cursor, in event-id order, each id at most once and
//!   none skipped: the store guarantees no event appears below a cursor later.
//!   The stream wakes when the projection applies events (which itself is woken by
//!   the store's notifications) and polls every [`POLL`] regardless.
//! - **Shared work.** Proxies that keep up ask for the same ranges: each range is
//!   read once and shared, and so is the snapshot of proxies starting at the same
//!   event ([`crate::feed_share`]).
//! - **Backpressure.** Messages go through a bounded channel ([`CHANNEL`]); a slow
//!   proxy stalls its own reader task and nothing else. A closed stream ends it.
//! - **Auth.** `authorization: Bearer <token>` metadata with the admin or the proxy
//!   token, else `UNAUTHENTICATED`.
//! - **Shutdown** ends every stream, so a graceful stop does not wait on them.

use crate::feed::{Unresumable, resume_point};
use crate::feed_share::{EncodedSnapshot, FeedShare};
use crate::metrics::{ControlMetrics, SnapshotReason, Watcher};
use crate::projection::Projection;
use crate::store::{AnyStore, EventStore};
use crate::token::{Token, bearer};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::BufWriter;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tollgate_proto::control::v1::edge_feed_server::EdgeFeed;
use tollgate_proto::control::v1::watch_response::Kind;
use tollgate_proto::control::v1::{EdgeMarker, Snapshot, WatchRequest, WatchResponse};
use tonic::{Request, Response, Status};

/// Messages buffered per stream before the reader waits for the proxy.
pub const CHANNEL: usize = 64;
/// Longest wait between looks at the log.
pub const POLL: Duration = Duration::from_secs(1);
/// Events read per store query while catching up.
const PAGE: usize = 256;

/// The `EdgeFeed` service.
#[derive(Clone)]
pub struct Feed {
    store: Arc<AnyStore>,
    projection: Arc<Projection>,
    tokens: Arc<Vec<Token>>,
    stop: watch::Receiver<bool>,
    /// Furthest behind a resume may be (events) before it gets a snapshot.
    max_replay: i64,
    /// Watchers, snapshots and lag are counted here when set.
    metrics: Option<Arc<ControlMetrics>>,
    /// Ranges and snapshots read once for every watcher at the same place.
    share: Arc<FeedShare>,
}

impl Feed {
    /// `tokens`: any of them is accepted.
    pub fn new(
        store: Arc<AnyStore>,
        projection: Arc<Projection>,
        tokens: Vec<Token>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Feed {
            store,
            projection,
            tokens: Arc::new(tokens),
            stop,
            max_replay: i64::MAX,
            metrics: None,
            share: Arc::new(FeedShare::new(None)),
        }
    }

    /// The same feed counting its watchers in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ControlMetrics>) -> Self {
        self.share = Arc::new(FeedShare::new(Some(metrics.feed.share_counts())));
        self.metrics = Some(metrics);
        self
    }

    /// Resuming further behind than `events` gets a snapshot instead.
    pub fn with_max_replay(mut self, events: i64) -> Self {
        self.max_replay = events.max(1);
        self
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        match presented {
            Some(t) if self.tokens.iter().any(|k| k.matches(t)) => Ok(()),
            _ => Err(Status::unauthenticated("a valid bearer token is required")),
        }
    }
}

type WatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EdgeFeed for Feed {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.authorize(&request)?;
        let req = request.into_inner();
        let last = self
            .store
            .last_event_id()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let after = req.after_event_id;
        let marker = req.last_edge.map(|m| tollgate_routing::EdgeMarker {
            event_id: m.event_id,
            fingerprint: m.fingerprint,
        });
        let start = resume_point(&self.store, after, marker.as_ref(), last)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let resume = match start {
            Ok(from) if from > 0 && last - from <= self.max_replay => Some(from),
            _ => None,
        };
        let snapshot = match start {
            _ if resume.is_some() => None,
            Ok(0) => Some((SnapshotReason::Initial, "initial")),
            Ok(_) => Some((SnapshotReason::TooFarBehind, "too_far_behind")),
            Err(Unresumable::CursorAhead) => Some((SnapshotReason::CursorAhead, "cursor_ahead")),
            Err(Unresumable::LogDiverged) => Some((SnapshotReason::LogDiverged, "log_diverged")),
        };
        if start == Err(Unresumable::LogDiverged) {
            tracing::warn!(
                node = %req.node_id,
                after,
                last_edge = marker.as_ref().map_or(0, |m| m.event_id),
                "the proxy's last edge event is not in the log (restored or replaced): sending a snapshot"
            );
        }
        tracing::info!(
            node = %req.node_id,
            after = req.after_event_id,
            resume = resume.is_some(),
            "proxy watching"
        );
        let task = Session {
            store: self.store.clone(),
            projection: self.projection.clone(),
            share: self.share.clone(),
            tx,
            node: req.node_id,
            watcher: Watcher::open(self.metrics.as_deref(), snapshot.map(|(m, _)| m)),
            reason: snapshot.map_or("", |(_, r)| r),
            gzip_snapshot: req.gzip_snapshot,
        };
        let stop = self.stop.clone();
        tokio::spawn(task.run(resume, stop));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct Session {
    store: Arc<AnyStore>,
    projection: Arc<Projection>,
    share: Arc<FeedShare>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    node: String,
    /// Counted as open until the session ends.
    watcher: Watcher,
    /// Why the session starts with a snapshot (the `Snapshot`'s `reason`).
    reason: &'static str,
    /// The proxy takes the snapshot's config gzip-compressed.
    gzip_snapshot: bool,
}

impl Session {
    async fn run(self, resume: Option<i64>, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            end = self.stream(resume) => {
                if let Err(e) = end {
                    tracing::debug!(node = %self.node, reason = %e, "watch ended");
                }
            }
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    async fn send(&self, kind: Kind) -> Result<(), String> {
        self.tx
            .send(Ok(WatchResponse { kind: Some(kind) }))
            .await
            .map_err(|_| "the proxy went away".to_string())
    }

    async fn stream(&self, resume: Option<i64>) -> Result<(), String> {
        let mut applied = self.projection.subscribe();
        let mut cursor = match resume {
            Some(after) => after,
            None => {
                let view = self.projection.view();
                let gzip = self.gzip_snapshot;
                let encode = view.clone();
                // Tens of MiB at tenant scale: encoded off the async workers, once
                // for the proxies that start at the same time.
                let snapshot = self
                    .share
                    .snapshot(view.event_id, gzip, move || {
                        snapshot_bytes(&encode.config, gzip)
                    })
                    .await?;
                let last_edge = view.last_edge.clone().unwrap_or_default();
                self.send(Kind::Snapshot(Snapshot {
                    event_id: view.event_id,
                    config_json: snapshot.config_json.clone(),
                    config_encoding: snapshot.encoding.into(),
                    last_edge: Some(EdgeMarker {
                        event_id: last_edge.event_id,
                        fingerprint: last_edge.fingerprint,
                    }),
                    reason: self.reason.to_string(),
                }))
                .await?;
                view.event_id
            }
        };
        loop {
            let target = *applied.borrow_and_update();
            self.watcher.lag(target - cursor);
            while cursor < target {
                let page = match self
                    .share
                    .page(&self.store, &self.projection, cursor, target, PAGE)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(node = %self.node, error = %e, "watch cannot read the log");
                        let _ = self.tx.send(Err(Status::unavailable(e.clone()))).await;
                        return Err(e);
                    }
                };
                for delta in &page.deltas {
                    self.send(Kind::Delta(delta.clone())).await?;
                }
                cursor = page.covered;
            }
            tokio::select! {
                changed = applied.changed() => {
                    if changed.is_err() {
                        return Err("the projection stopped".into());
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
                _ = self.tx.closed() => return Err("the proxy went away".into()),
            }
        }
    }
}

/// The snapshot's `config_json` and its `config_encoding`.
fn snapshot_bytes(
    config: &tollgate_routing::EdgeConfig,
    gzip: bool,
) -> Result<EncodedSnapshot, String> {
    if !gzip {
        let config_json = serde_json::to_vec(config).map_err(|e| e.to_string())?;
        return Ok(EncodedSnapshot {
            config_json,
            encoding: "",
        });
    }
    // serde_json writes a token at a time: buffer them into large writes.
    let mut out =
        BufWriter::with_capacity(256 << 10, GzEncoder::new(Vec::new(), Compression::fast()));
    serde_json::to_writer(&mut out, config).map_err(|e| e.to_string())?;
    let gz = out.into_inner().map_err(|e| e.to_string())?;
    Ok(EncodedSnapshot {
        config_json: gz.finish().map_err(|e| e.to_string())?,
        encoding: "gzip",
    })
}
