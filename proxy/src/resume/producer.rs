//! The task that runs a resumable stream's upstream call, apart from any client: it
//! reads the translated (and already metered) messages, numbers them into the
//! [`Journal`] and queues them for Redis, until the upstream ends, stays idle too long,
//! no client comes back within `linger_secs`, or the proxy's drain deadline passes.
//! Each of those ends is stored as the stream's final frame.

use super::journal::Journal;
use super::sse;
use super::store::{Op, Store};
use super::{Resumer, status_frame};
use crate::http::body::{BodyError, ResponseBody};
use crate::http::completion::{Completion, Outcome};
use crate::rpc::response::RpcStream;
use bytes::Bytes;
use http_body::Body;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_filters::rpc::{Code, RpcStatus};

/// The largest SSE event buffered while it arrives.
const MAX_SSE_EVENT: usize = 4 << 20;

/// What the producer reads from.
pub enum Source {
    /// A translated RPC stream, one message per frame.
    Rpc(Box<RpcStream>),
    /// An upstream event stream (metered when the app has a budget).
    Sse {
        body: Box<ResponseBody>,
        events: sse::Splitter,
    },
}

/// One item from the source.
enum Item {
    Message(Bytes),
    /// The final frame and how the stream ended.
    End(Bytes, Outcome),
}

impl Source {
    pub fn sse(body: ResponseBody) -> Self {
        Source::Sse {
            body: Box::new(body),
            events: sse::Splitter::new(MAX_SSE_EVENT),
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Item> {
        match self {
            Source::Rpc(stream) => Poll::Ready(match ready!(stream.poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if stream.is_end_stream() => Item::End(data, Outcome::Complete),
                    Ok(data) => Item::Message(data),
                    // Browser protocols end in a data frame, never in trailers.
                    Err(_) => Item::End(Bytes::new(), Outcome::Complete),
                },
                Some(Err(e)) => Item::End(Bytes::from(e.to_string()), Outcome::UpstreamReset),
                None => Item::End(Bytes::new(), Outcome::Complete),
            }),
            Source::Sse { body, events } => loop {
                if let Some(event) = events.next_event() {
                    return Poll::Ready(Item::Message(event));
                }
                let frame = match ready!(Pin::new(&mut **body).poll_frame(cx)) {
                    None => return Poll::Ready(Item::End(Bytes::new(), Outcome::Complete)),
                    Some(Ok(frame)) => frame,
                    Some(Err(BodyError::Cut(why))) => {
                        let end = sse::error_event("resource_exhausted", &why);
                        return Poll::Ready(Item::End(end, Outcome::Cut));
                    }
                    Some(Err(e)) => {
                        let end = sse::error_event("unavailable", &format!("upstream: {e}"));
                        return Poll::Ready(Item::End(end, Outcome::UpstreamReset));
                    }
                };
                if let Ok(data) = frame.into_data()
                    && events.push(&data).is_err()
                {
                    let why = format!("an upstream event exceeds {MAX_SSE_EVENT} bytes");
                    let end = sse::error_event("resource_exhausted", &why);
                    return Poll::Ready(Item::End(end, Outcome::UpstreamReset));
                }
            },
        }
    }

    fn is_sse(&self) -> bool {
        matches!(self, Source::Sse { .. })
    }
}

/// Everything the producer task owns.
pub struct Producer {
    pub journal: Arc<Journal>,
    pub source: Source,
    pub idle: Duration,
    pub linger: Duration,
    pub high_water: u64,
    pub store: Option<Store>,
    pub resumer: Arc<Resumer>,
    /// The request's accounting, finished when the upstream call ends, not when a
    /// client leaves.
    pub accounting: Arc<Accounting>,
}

/// The request's [`Completion`] (metrics, access log, in-flight counts, stream permit,
/// usage), handed over by the first client's body and finished by the producer, in
/// whichever order the two arrive.
#[derive(Debug, Default)]
pub struct Accounting(Mutex<Handover>);

#[derive(Debug, Default)]
struct Handover {
    completion: Option<Completion>,
    /// Bytes sent and how the call ended, once it has.
    ended: Option<(u64, Outcome)>,
}

impl Accounting {
    /// The first client's body hands the request's accounting over.
    pub fn attach(&self, completion: Completion) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match g.ended {
            Some((bytes, outcome)) => completion.finish(bytes, outcome),
            None => g.completion = Some(completion),
        }
    }

    /// The upstream call ended.
    fn end(&self, bytes: u64, outcome: Outcome) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match g.completion.take() {
            Some(c) => c.finish(bytes, outcome),
            None => g.ended = Some((bytes, outcome)),
        }
    }
}

impl Producer {
    /// Runs the stream to its end.
    pub async fn run(mut self) {
        let mut drain = self.resumer.drain_deadline();
        let mut last_upstream = Instant::now();
        let mut bytes = 0u64;
        let (end, outcome) = loop {
            // A client here that fell behind holds the upstream back.
            if self.journal.should_wait(self.high_water) {
                tokio::select! {
                    _ = self.journal.changed.notified() => {}
                    _ = drain.changed() => {}
                }
                continue;
            }
            let draining = *drain.borrow();
            // Draining: run on to the drain deadline whoever reads. Otherwise, with
            // nobody reading, until the linger time is up.
            let stop_at =
                draining.or_else(|| self.journal.detached_since().map(|t| t + self.linger));
            let idle_at = last_upstream + self.idle;
            let item = tokio::select! {
                item = poll_fn(|cx| self.source.poll_next(cx)) => item,
                _ = tokio::time::sleep_until(idle_at) => {
                    let status = RpcStatus::new(
                        Code::Unavailable,
                        format!("stream idle for longer than {:?}", self.idle),
                    );
                    Item::End(status_frame(self.journal.wire, &status), Outcome::IdleTimeout)
                }
                _ = sleep_until_opt(stop_at) => {
                    let status = if draining.is_some() {
                        RpcStatus::new(
                            Code::Unavailable,
                            "the proxy carrying this stream shut down before it ended",
                        )
                    } else {
                        self.resumer.metrics.abandoned.inc();
                        RpcStatus::new(
                            Code::Canceled,
                            format!("no client resumed the stream within {:?}", self.linger),
                        )
                    };
                    Item::End(status_frame(self.journal.wire, &status), Outcome::Aborted)
                }
                _ = self.journal.changed.notified() => continue,
                _ = drain.changed() => continue,
            };
            match item {
                Item::Message(raw) => {
                    last_upstream = Instant::now();
                    let index = self.journal.last() + 1;
                    let message = if self.source.is_sse() {
                        sse::with_id(&raw, &self.journal.token, index)
                    } else {
                        raw
                    };
                    bytes += message.len() as u64;
                    let (_, held) = self.journal.push(message.clone());
                    self.resumer.metrics.buffer_bytes.add(held);
                    if let Some(store) = &self.store {
                        let token = self.journal.token.clone();
                        store
                            .queue(Op::Append {
                                token,
                                index,
                                data: message,
                            })
                            .await;
                    }
                }
                Item::End(end, outcome) => break (end, outcome),
            }
        };
        // Dropping the source cancels the upstream call if it still runs.
        drop(self.source);
        let index = self.journal.last() + 1;
        self.journal.finish(end.clone());
        if let Some(store) = &self.store {
            let token = self.journal.token.clone();
            store
                .queue(Op::End {
                    token,
                    index,
                    data: end,
                })
                .await;
        }
        self.accounting.end(bytes, outcome);
        self.resumer.producer_done(&self.journal);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
