//! Resumable streams: server streams (Connect, gRPC-Web, SSE) that outlive the
//! client's connection and the proxy process.
//!
//! On a route with `resume`, a new stream gets an opaque token (response header
//! `tollgate-resume-token`; SSE event ids `<token>.<index>`), bound to the app, the
//! verified caller and the call. Its upstream call runs in a [`producer`] task, which
//! numbers each message after budget metering into a [`journal`] on this proxy and,
//! with Redis configured, into a Redis stream ([`store`]). Clients read through a
//! [`consumer::Feed`]. A client that comes back with the token and the number of
//! messages it received gets exactly the ones after, then the live tail, then the
//! stored final status, from this proxy's journal or, on any other proxy, from Redis.
//!
//! When the client goes away the call runs on for `linger_secs`. A draining proxy
//! tells its clients to resume elsewhere and keeps its calls running until they end
//! or the drain deadline passes.

pub mod consumer;
pub mod journal;
pub mod metrics;
pub mod producer;
pub mod sse;
pub mod store;
pub mod token;

use crate::http::body::ResponseBody;
use crate::http::errors::ProxyError;
use bytes::Bytes;
use consumer::Feed;
use http::{HeaderValue, Response, StatusCode, header};
use journal::{Journal, Refusal};
use metrics::{ResumeMetrics, ResumeOutcome};
use producer::{Accounting, Producer, Source};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Op, Store, WriterMetrics};
use token::{Owner, ResumeRequest, TOKEN_HEADER, Wire};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tollgate_filters::rpc::{Code, RpcStatus};
use tollgate_routing::ResumeSpec;

/// `[resume]`: where resumable streams are buffered.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeConfig {
    /// Redis shared by the fleet; `rate_limiting.redis_url` when absent. Without
    /// either, streams resume only on the proxy that carried them.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// `memory` keeps buffers in this process even when Redis is configured.
    #[serde(default)]
    pub store: Option<StoreKind>,
    /// Bound on each Redis call (default 1000 ms).
    #[serde(default)]
    pub redis_timeout_ms: Option<u64>,
    /// First segment of every key (default `tollgate`).
    #[serde(default)]
    pub key_prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Memory,
    Redis,
}

/// This proxy's resumable streams.
pub struct Resumer {
    streams: Mutex<HashMap<Arc<str>, Arc<Journal>>>,
    store: Option<Store>,
    pub metrics: ResumeMetrics,
    drain: watch::Sender<Option<Instant>>,
    producers: AtomicUsize,
    producers_done: Notify,
}

impl std::fmt::Debug for Resumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resumer")
            .field("store", &self.store)
            .field("producers", &self.producers)
            .finish()
    }
}

impl Resumer {
    /// Registers the metrics and, with Redis, starts its writer. Must run on the runtime.
    pub fn start(
        cfg: &ResumeConfig,
        fallback_redis: Option<&str>,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Self>, String> {
        let metrics = ResumeMetrics::register(registry).map_err(|e| e.to_string())?;
        let url = cfg.redis_url.as_deref().or(fallback_redis);
        let store = match (cfg.store, url) {
            (Some(StoreKind::Memory), _) | (None, None) => None,
            (Some(StoreKind::Redis), None) => {
                return Err("resume.store = \"redis\" needs resume.redis_url".into());
            }
            (_, Some(url)) => {
                let instance = token::generate().ok_or("no random source for the instance id")?;
                let writer = WriterMetrics {
                    errors: metrics.redis_errors.clone(),
                    commands: metrics.redis_commands.clone(),
                };
                let store = Store::start(
                    url,
                    cfg.key_prefix.as_deref().unwrap_or("tollgate"),
                    Duration::from_millis(cfg.redis_timeout_ms.unwrap_or(1000)),
                    instance,
                    writer,
                )
                .map_err(|e| format!("resume.redis_url: {e}"))?;
                Some(store)
            }
        };
        let resumer = Arc::new(Resumer {
            streams: Mutex::new(HashMap::new()),
            store,
            metrics,
            drain: watch::Sender::new(None),
            producers: AtomicUsize::new(0),
            producers_done: Notify::new(),
        });
        tokio::spawn(sweep(Arc::downgrade(&resumer)));
        Ok(resumer)
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Journal>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn drain_deadline(&self) -> watch::Receiver<Option<Instant>> {
        self.drain.subscribe()
    }

    /// Runs a new resumable stream's upstream call in its own task; the first client's
    /// response, whose head is `head` plus the token.
    pub fn start_stream(
        self: &Arc<Self>,
        spec: &ResumeSpec,
        owner: Owner,
        wire: Wire,
        mut head: Response<ResponseBody>,
        source: Source,
        idle: Duration,
    ) -> Response<ResponseBody> {
        let Some(token) = token::generate() else {
            let status = RpcStatus::new(Code::Internal, "no random source for a resume token");
            *head.body_mut() = ResponseBody::full(status_frame(wire, &status));
            return head;
        };
        head.headers_mut().remove(header::CONTENT_LENGTH);
        let journal = Arc::new(Journal::new(
            token.clone(),
            owner,
            wire,
            head.headers().clone(),
            local_ttl(spec, self.store.is_some()),
            spec.buffer_events as usize,
            spec.buffer_bytes,
        ));
        // Attached before the task starts, so linger counts from the client leaving.
        let _ = journal.attach(0);
        if self.drain.borrow().is_some() {
            journal.hand_over();
        }
        self.streams().insert(token.clone(), journal.clone());
        self.metrics.open.inc();
        self.producers.fetch_add(1, Relaxed);
        let accounting = Arc::new(Accounting::default());
        let producer = Producer {
            journal: journal.clone(),
            source,
            idle,
            linger: Duration::from_secs(spec.linger_secs),
            high_water: u64::from(spec.buffer_events / 2).max(1),
            store: self.store.clone(),
            resumer: self.clone(),
            accounting: accounting.clone(),
        };
        let open = self.store.as_ref().map(|_| Op::Open {
            token: token.clone(),
            owner: journal.owner.clone(),
            wire,
            head: journal.head.clone(),
            cap: spec.buffer_events,
            ttl_ms: spec.ttl_secs * 1000,
        });
        tokio::spawn(async move {
            if let (Some(store), Some(open)) = (&producer.store, open) {
                store.queue(open).await;
            }
            producer.run().await;
        });
        let heartbeat = Duration::from_secs(spec.heartbeat_secs);
        let mut feed = Feed::local(journal, 0, heartbeat, self.metrics.clone());
        feed.accounting = Some(accounting);
        if let Ok(v) = HeaderValue::from_str(&token) {
            head.headers_mut().insert(TOKEN_HEADER, v);
        }
        *head.body_mut() = ResponseBody::resumable(feed);
        head
    }

    /// Answers a resume: the messages after the client's index, then the live tail and
    /// the final frame; or why not.
    pub async fn resume(
        self: &Arc<Self>,
        req: &ResumeRequest,
        owner: &Owner,
        wire: Wire,
        spec: &ResumeSpec,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let refused = |outcome: ResumeOutcome, code: Code, message: String| {
            self.metrics.resumed(outcome);
            ProxyError::Rpc(code, message)
        };
        let not_found = || {
            refused(
                ResumeOutcome::NotFound,
                Code::NotFound,
                "unknown or expired resume token: start the stream again".into(),
            )
        };
        if !token::well_formed(&req.token) {
            return Err(not_found());
        }
        let heartbeat = Duration::from_secs(spec.heartbeat_secs);
        let local = self.streams().get(req.token.as_str()).cloned();
        if let Some(j) = local {
            check_binding(&j.owner, j.wire, owner, wire).map_err(|(o, c, m)| refused(o, c, m))?;
            if wire == Wire::Sse && j.is_finished() && req.after == j.last() {
                self.metrics.resumed(ResumeOutcome::Local);
                return Ok(no_more_events());
            }
            match j.attach(req.after) {
                Ok(()) => {}
                Err(Refusal::Beyond { last }) => {
                    return Err(refused(
                        ResumeOutcome::OutOfRange,
                        Code::OutOfRange,
                        format!("the stream has sent {last} messages, not {}", req.after),
                    ));
                }
                Err(Refusal::Gap { first }) => {
                    let status = consumer::gap(req.after, first);
                    return Err(refused(ResumeOutcome::Gap, status.code, status.message));
                }
            }
            self.metrics.resumed(ResumeOutcome::Local);
            let mut resp = Response::new(ResponseBody::empty());
            *resp.headers_mut() = j.head.clone();
            let token = j.token.clone();
            *resp.body_mut() =
                ResponseBody::resumable(Feed::local(j, req.after, heartbeat, self.metrics.clone()));
            return Ok(with_token(resp, &token));
        }
        let Some(store) = &self.store else {
            return Err(not_found());
        };
        let unavailable = |e: store::StoreError| {
            refused(
                ResumeOutcome::Unavailable,
                Code::Unavailable,
                format!("the resume buffer is unavailable: {e}"),
            )
        };
        let meta = store.meta(&req.token).await.map_err(unavailable)?;
        let Some(meta) = meta else {
            return Err(not_found());
        };
        check_binding(&meta.owner, meta.wire, owner, wire).map_err(|(o, c, m)| refused(o, c, m))?;
        let (first, end) = store.bounds(&req.token).await.map_err(unavailable)?;
        let last = match shared_position(req.after, first, end) {
            Ok(last) => last,
            Err(Refusal::Gap { first }) => {
                let status = consumer::gap(req.after, first);
                return Err(refused(ResumeOutcome::Gap, status.code, status.message));
            }
            Err(Refusal::Beyond { last }) => {
                return Err(refused(
                    ResumeOutcome::OutOfRange,
                    Code::OutOfRange,
                    format!("the stream has sent {last} messages, not {}", req.after),
                ));
            }
        };
        if wire == Wire::Sse && last == Some(req.after) {
            self.metrics.resumed(ResumeOutcome::Shared);
            return Ok(no_more_events());
        }
        self.metrics.resumed(ResumeOutcome::Shared);
        let token: Arc<str> = Arc::from(req.token.as_str());
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(consumer::tail(
            store.clone(),
            token.clone(),
            meta.instance,
            req.after,
            tx,
        ));
        let mut resp = Response::new(ResponseBody::resumable(Feed::remote(
            rx,
            meta.wire,
            token.clone(),
            req.after,
            heartbeat,
            self.metrics.clone(),
        )));
        *resp.headers_mut() = meta.head;
        Ok(with_token(resp, &token))
    }

    pub(crate) fn producer_done(&self, journal: &Journal) {
        self.metrics.open.dec();
        self.metrics.buffer_bytes.sub(journal.bytes() as i64);
        if self.producers.fetch_sub(1, Relaxed) == 1 {
            self.producers_done.notify_waiters();
        }
    }

    /// The proxy drains: clients are told to resume elsewhere, and calls run on until
    /// they end or `deadline` passes.
    pub fn start_draining(&self, deadline: Instant) {
        self.drain.send_replace(Some(deadline));
        let streams: Vec<Arc<Journal>> = self.streams().values().cloned().collect();
        for j in streams {
            j.hand_over();
        }
    }

    /// Waits for the streams' calls to end (they end by `deadline` at the latest) and
    /// for their last writes to reach Redis.
    pub async fn finish(&self, deadline: Instant) {
        let grace = deadline + Duration::from_secs(2);
        loop {
            let done = self.producers_done.notified();
            if self.producers.load(Relaxed) == 0 {
                break;
            }
            if tokio::time::timeout_at(grace, done).await.is_err() {
                tracing::warn!(
                    open = self.producers.load(Relaxed),
                    "resumable streams still open at the drain deadline"
                );
                break;
            }
        }
        if let Some(store) = &self.store {
            store.flush(Instant::now() + Duration::from_secs(2)).await;
        }
    }
}

/// Where a resume after message `after` stands against the fleet's copy of a stream,
/// whose oldest entry kept is `first` and whose final entry is `end` once it ended:
/// `Ok(Some(last))` when the stream ended after `last` messages, `Ok(None)` while it
/// runs. `after` comes from the client, so it may be any `u64`.
#[doc(hidden)]
pub fn shared_position(
    after: u64,
    first: Option<u64>,
    end: Option<u64>,
) -> Result<Option<u64>, Refusal> {
    if let Some(first) = first.filter(|&f| f > after.saturating_add(1)) {
        return Err(Refusal::Gap { first });
    }
    let Some(end) = end else {
        return Ok(None);
    };
    // The final entry follows the last message, so it is never 0 when Redis holds
    // what this proxy wrote.
    let last = end.saturating_sub(1);
    if after > last {
        return Err(Refusal::Beyond { last });
    }
    Ok(Some(last))
}

type BindingError = (ResumeOutcome, Code, String);

/// Whether the caller may resume a stream of `owner`, in `wire`.
fn check_binding(
    owner: &Owner,
    wire: Wire,
    caller: &Owner,
    asked: Wire,
) -> Result<(), BindingError> {
    if owner != caller {
        return Err((
            ResumeOutcome::Forbidden,
            Code::PermissionDenied,
            "this resume token belongs to another caller or call".into(),
        ));
    }
    if wire != asked {
        return Err((
            ResumeOutcome::Forbidden,
            Code::InvalidArgument,
            format!(
                "this stream is resumed with {}, not {}",
                wire.name(),
                asked.name()
            ),
        ));
    }
    Ok(())
}

fn with_token(mut resp: Response<ResponseBody>, token: &str) -> Response<ResponseBody> {
    if let Ok(v) = HeaderValue::from_str(token) {
        resp.headers_mut().insert(TOKEN_HEADER, v);
    }
    resp
}

/// SSE: the stream ended and the client has it all; 204 stops `EventSource` from
/// reconnecting.
fn no_more_events() -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// `status` as the final frame of a stream in `wire`.
pub fn status_frame(wire: Wire, status: &RpcStatus) -> Bytes {
    match wire {
        Wire::Rpc(p) => crate::rpc::reply::final_frame(p, status, &http::HeaderMap::new()),
        Wire::Sse => sse::error_event(status.code.connect_name(), &status.message),
    }
}

/// How long this proxy keeps an ended stream's buffer. With Redis the fleet's copy
/// serves later resumes, so memory here is given back soon after the end; without it
/// this is the only copy, kept for the whole TTL.
fn local_ttl(spec: &ResumeSpec, shared: bool) -> Duration {
    let ttl = Duration::from_secs(spec.ttl_secs);
    if shared {
        ttl.min(LOCAL_TTL_WITH_REDIS)
    } else {
        ttl
    }
}

/// An ended stream's buffer stays in memory this long when Redis holds it too.
const LOCAL_TTL_WITH_REDIS: Duration = Duration::from_secs(10);

/// Forgets streams that ended more than their TTL ago.
async fn sweep(resumer: std::sync::Weak<Resumer>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Some(r) = resumer.upgrade() else {
            return;
        };
        r.streams().retain(|_, j| !j.expired(j.ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_positions_of_any_client_index_neither_overflow_nor_misreport() {
        // A client may send `tollgate-resume-after: 18446744073709551615`; this used to
        // compute `after + 1` (a panic with overflow checks, a wrong `DataLoss` without).
        assert_eq!(shared_position(u64::MAX, Some(1), None), Ok(None));
        assert_eq!(
            shared_position(u64::MAX, Some(1), Some(6)),
            Err(Refusal::Beyond { last: 5 })
        );
        assert_eq!(shared_position(u64::MAX, Some(u64::MAX), None), Ok(None));
        // A final entry 0 is not one this proxy writes; it reads as an empty stream.
        assert_eq!(shared_position(0, None, Some(0)), Ok(Some(0)));
        assert_eq!(
            shared_position(1, None, Some(0)),
            Err(Refusal::Beyond { last: 0 })
        );
        // The ordinary cases.
        assert_eq!(shared_position(3, Some(2), Some(9)), Ok(Some(8)));
        assert_eq!(shared_position(3, Some(4), None), Ok(None));
        assert_eq!(
            shared_position(3, Some(5), None),
            Err(Refusal::Gap { first: 5 })
        );
        assert_eq!(shared_position(8, Some(5), Some(9)), Ok(Some(8)));
        assert_eq!(
            shared_position(9, None, Some(9)),
            Err(Refusal::Beyond { last: 8 })
        );
    }
}
