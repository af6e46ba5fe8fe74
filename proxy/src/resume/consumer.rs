//! A client's side of a resumable stream: the response body that reads messages after
//! the client's index, from this proxy's journal or from Redis, then the final frame;
//! or, when the messages are gone or the stream was lost, a status saying so.

use super::journal::{Journal, Next};
use super::metrics::ResumeMetrics;
use super::producer::Accounting;
use super::store::{Entry, Store, StoreError};
use super::token::{AFTER_HEADER, TOKEN_HEADER, Wire};
use super::{sse, status_frame};
use crate::http::body::BodyError;
use crate::rpc::reply::final_frame;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tollgate_filters::rpc::{Code, RpcStatus};

enum Kind {
    Local(Arc<Journal>),
    /// Entries read from Redis by a tail task.
    Remote(mpsc::Receiver<Next>),
}

/// The body a resumable stream's client reads.
pub struct Feed {
    kind: Kind,
    wire: Wire,
    token: Arc<str>,
    /// Messages the client has been sent.
    after: u64,
    /// Messages up to here come from the buffer (replayed, not billed again).
    replay_until: u64,
    done: bool,
    heartbeat: Option<(Duration, Pin<Box<Sleep>>)>,
    metrics: ResumeMetrics,
    /// The first client's body hands its request accounting to the producer.
    pub(crate) accounting: Option<Arc<Accounting>>,
    /// An end or status read while gathering messages, sent next.
    pending: Option<Next>,
}

/// Messages ready at once go out together, up to this many bytes per frame.
const COALESCE_BYTES: usize = 16 * 1024;

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("token", &self.token)
            .field("after", &self.after)
            .field("done", &self.done)
            .finish()
    }
}

impl Feed {
    /// Reads `journal` after message `after` (already attached by the caller).
    pub fn local(
        journal: Arc<Journal>,
        after: u64,
        heartbeat: Duration,
        metrics: ResumeMetrics,
    ) -> Self {
        let replay_until = journal.last();
        let (wire, token) = (journal.wire, journal.token.clone());
        Feed::new(
            Kind::Local(journal),
            wire,
            token,
            after,
            replay_until,
            heartbeat,
            metrics,
        )
    }

    /// Reads entries a tail task sends.
    pub fn remote(
        rx: mpsc::Receiver<Next>,
        wire: Wire,
        token: Arc<str>,
        after: u64,
        heartbeat: Duration,
        metrics: ResumeMetrics,
    ) -> Self {
        Feed::new(
            Kind::Remote(rx),
            wire,
            token,
            after,
            u64::MAX,
            heartbeat,
            metrics,
        )
    }

    fn new(
        kind: Kind,
        wire: Wire,
        token: Arc<str>,
        after: u64,
        replay_until: u64,
        heartbeat: Duration,
        metrics: ResumeMetrics,
    ) -> Self {
        let heartbeat =
            (wire == Wire::Sse).then(|| (heartbeat, Box::pin(tokio::time::sleep(heartbeat))));
        Feed {
            kind,
            wire,
            token,
            after,
            replay_until,
            done: false,
            heartbeat,
            metrics,
            accounting: None,
            pending: None,
        }
    }

    /// What can be read now without waiting.
    fn try_next(&mut self) -> Option<Next> {
        match &mut self.kind {
            Kind::Local(j) => j.try_next(self.after),
            Kind::Remote(rx) => rx.try_recv().ok(),
        }
    }

    /// Counts message `index` as sent.
    fn sent(&mut self, index: u64) {
        self.after = index;
        if index <= self.replay_until {
            self.metrics.replayed.inc();
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.done
    }

    /// The next frame for the client.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = match (self.pending.take(), &mut self.kind) {
            (Some(next), _) => Poll::Ready(next),
            (None, Kind::Local(j)) => j.poll_next(self.after, cx),
            (None, Kind::Remote(rx)) => match rx.poll_recv(cx) {
                Poll::Ready(Some(next)) => Poll::Ready(next),
                Poll::Ready(None) => Poll::Ready(Next::Lost(
                    "the stream's shared buffer could not be read".into(),
                )),
                Poll::Pending => Poll::Pending,
            },
        };
        let next = match next {
            Poll::Ready(next) => next,
            Poll::Pending => return self.poll_heartbeat(cx),
        };
        if let Some((every, sleep)) = &mut self.heartbeat {
            sleep.as_mut().reset(Instant::now() + *every);
        }
        let data = match next {
            Next::Message(index, message) => {
                self.sent(index);
                // Whatever else is ready goes in the same frame: one DATA frame per
                // message would cost the client and this proxy far more than the copy.
                let mut batch: Option<bytes::BytesMut> = None;
                while batch.as_ref().map_or(message.len(), |b| b.len()) < COALESCE_BYTES {
                    match self.try_next() {
                        Some(Next::Message(i, m)) => {
                            self.sent(i);
                            batch
                                .get_or_insert_with(|| bytes::BytesMut::from(&message[..]))
                                .extend_from_slice(&m);
                        }
                        Some(other) => {
                            self.pending = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                let data = batch.map_or(message, bytes::BytesMut::freeze);
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            Next::End(last) => {
                self.done = true;
                last
            }
            Next::Gap { first } => {
                self.done = true;
                let status = gap(self.after, first);
                status_frame(self.wire, &status)
            }
            Next::Lost(why) => {
                self.done = true;
                status_frame(self.wire, &RpcStatus::new(Code::DataLoss, why))
            }
            Next::Handover => {
                self.done = true;
                self.metrics.handovers.inc();
                self.handover_frame()
            }
        };
        if data.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    /// SSE: a comment line when nothing was sent for a while.
    fn poll_heartbeat(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some((every, sleep)) = &mut self.heartbeat else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        sleep.as_mut().reset(Instant::now() + *every);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(sse::HEARTBEAT)))))
    }

    /// Tells the client to resume elsewhere: a retryable status carrying the token and
    /// its index (RPC), or the end of the event stream (SSE: `EventSource` reconnects
    /// with its `Last-Event-ID` by itself).
    fn handover_frame(&self) -> Bytes {
        let Wire::Rpc(protocol) = self.wire else {
            return Bytes::new();
        };
        let mut meta = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&self.token) {
            meta.insert(TOKEN_HEADER, v);
        }
        meta.insert(AFTER_HEADER, HeaderValue::from(self.after));
        let status = RpcStatus::new(
            Code::Unavailable,
            "this proxy is restarting: resume the stream with tollgate-resume-token and tollgate-resume-after",
        );
        final_frame(protocol, &status, &meta)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Kind::Local(j) = &self.kind {
            j.detach();
        }
    }
}

/// The status for messages that fell out of the buffer.
pub fn gap(after: u64, first: u64) -> RpcStatus {
    RpcStatus::new(
        Code::DataLoss,
        format!(
            "messages {}..{} of this stream are no longer buffered (the oldest kept is {first}); it cannot be resumed without a gap",
            after + 1,
            first.saturating_sub(1).max(after + 1),
        ),
    )
}

/// Reads a stream from Redis after message `after` into `tx`, until its end, a gap, or
/// its producer is gone without an end.
pub async fn tail(
    store: Store,
    token: Arc<str>,
    instance: String,
    after: u64,
    tx: mpsc::Sender<Next>,
) {
    if let Err(last) = follow(&store, &token, &instance, after, &tx).await {
        let _ = tx.send(last).await;
    }
}

/// [`tail`]'s loop; `Err` is the last thing the client is told.
async fn follow(
    store: &Store,
    token: &str,
    instance: &str,
    mut after: u64,
    tx: &mpsc::Sender<Next>,
) -> Result<(), Next> {
    let unreadable =
        |e: StoreError| Next::Lost(format!("the stream's buffer could not be read: {e}"));
    let mut conn = store.reader().await.map_err(unreadable)?;
    while !tx.is_closed() {
        let entries = store
            .read_after(&mut conn, token, after)
            .await
            .map_err(unreadable)?;
        if entries.is_empty() {
            if store
                .producer_alive(token, instance)
                .await
                .map_err(unreadable)?
            {
                continue;
            }
            return Err(Next::Lost(format!(
                "stream lost: the proxy carrying it stopped before it ended; all {after} messages it buffered were delivered"
            )));
        }
        for entry in entries {
            let (index, next, end) = match entry {
                Entry::Message(i, m) => (i, Next::Message(i, m), false),
                Entry::End(i, e) => (i, Next::End(e), true),
            };
            if index != after + 1 {
                return Err(Next::Gap { first: index });
            }
            if tx.send(next).await.is_err() || end {
                return Ok(());
            }
            after = index;
        }
    }
    Ok(())
}
