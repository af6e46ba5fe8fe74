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
use crate::http::stream_stats::RpcEnd;
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
    /// How the call ended, once it has.
    ended: Option<Ended>,
}

/// What the producer tells the request's accounting at the end of the call.
#[derive(Debug, Clone, Copy)]
struct Ended {
    bytes: u64,
    outcome: Outcome,
    messages: u64,
    first_message: Option<std::time::Instant>,
    end: RpcEnd,
}

impl Ended {
    fn finish(self, mut completion: Completion) {
        if let Some(s) = completion.stream.as_mut() {
            s.messages = self.messages;
            s.first_message = self.first_message;
            s.end = self.end;
        }
        completion.finish(self.bytes, self.outcome);
    }
}

impl Accounting {
    /// The first client's body hands the request's accounting over.
    pub fn attach(&self, completion: Completion) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match g.ended {
            Some(ended) => ended.finish(completion),
            None => g.completion = Some(completion),
        }
    }

    /// The upstream call ended.
    fn end(&self, ended: Ended) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match g.completion.take() {
            Some(c) => ended.finish(c),
            None => g.ended = Some(ended),
        }
    }
}

/// What [`Pump::pump`] stopped at.
enum Pumped {
    /// A client here fell behind: wait for it.
    Wait,
    /// The Redis queue is full: send this write, waiting.
    Queue(Box<Op>),
    End(Bytes, Outcome),
}

/// Messages per wake-up before the producer yields to other tasks.
const PUMP_BUDGET: usize = 64;

/// The per-message work, done for every message ready at one wake-up.
struct Pump<'a> {
    source: &'a mut Source,
    journal: &'a Journal,
    store: Option<&'a Store>,
    buffer_bytes: &'a prometheus::IntGauge,
    high_water: u64,
    last_upstream: Instant,
    /// When the first message was buffered.
    first_message: Option<Instant>,
    bytes: u64,
}

impl Pump<'_> {
    fn pump(&mut self, cx: &mut Context<'_>) -> Poll<Pumped> {
        for _ in 0..PUMP_BUDGET {
            if self.journal.should_wait(self.high_water) {
                return Poll::Ready(Pumped::Wait);
            }
            let raw = match ready!(self.source.poll_next(cx)) {
                Item::Message(raw) => raw,
                Item::End(end, outcome) => return Poll::Ready(Pumped::End(end, outcome)),
            };
            self.last_upstream = Instant::now();
            self.first_message.get_or_insert(self.last_upstream);
            let index = self.journal.last() + 1;
            let message = if self.source.is_sse() {
                sse::with_id(&raw, &self.journal.token, index)
            } else {
                raw
            };
            self.bytes += message.len() as u64;
            let (_, held) = self.journal.push(message.clone());
            self.buffer_bytes.add(held);
            if let Some(store) = self.store {
                let token = self.journal.token.clone();
                let op = Op::Append {
                    token,
                    index,
                    data: message,
                };
                if let Err(op) = store.try_queue(op) {
                    return Poll::Ready(Pumped::Queue(op));
                }
            }
        }
        // More may be ready: yield, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Producer {
    /// Runs the stream to its end.
    pub async fn run(mut self) {
        let mut drain = self.resumer.drain_deadline();
        let mut pump = Pump {
            source: &mut self.source,
            journal: &self.journal,
            store: self.store.as_ref(),
            buffer_bytes: &self.resumer.metrics.buffer_bytes,
            high_water: self.high_water,
            last_upstream: Instant::now(),
            first_message: None,
            bytes: 0,
        };
        let idle = tokio::time::sleep(self.idle);
        tokio::pin!(idle);
        let stop = tokio::time::sleep(self.linger);
        tokio::pin!(stop);
        let (end, outcome) = loop {
            let draining = *drain.borrow_and_update();
            // Draining: run on to the drain deadline whoever reads. Otherwise, with
            // nobody reading, until the linger time is up.
            let stop_at =
                draining.or_else(|| self.journal.detached_since().map(|t| t + self.linger));
            if let Some(at) = stop_at {
                stop.as_mut().reset(at);
            }
            tokio::select! {
                biased;
                pumped = poll_fn(|cx| pump.pump(cx)) => match pumped {
                    Pumped::End(end, outcome) => break (end, outcome),
                    Pumped::Queue(op) => {
                        if let Some(store) = pump.store {
                            store.queue(*op).await;
                        }
                    }
                    Pumped::Wait => {
                        tokio::select! {
                            _ = self.journal.changed.notified() => {}
                            _ = drain.changed() => {}
                        }
                    }
                },
                _ = &mut idle => {
                    let quiet = pump.last_upstream.elapsed();
                    if quiet < self.idle {
                        idle.as_mut().reset(pump.last_upstream + self.idle);
                        continue;
                    }
                    let status = RpcStatus::new(
                        Code::Unavailable,
                        format!("stream idle for longer than {:?}", self.idle),
                    );
                    break (status_frame(self.journal.wire, &status), Outcome::IdleTimeout);
                }
                _ = &mut stop, if stop_at.is_some() => {
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
                    break (status_frame(self.journal.wire, &status), Outcome::Aborted);
                }
                // Clients came or went, or the drain began: the stop time changes.
                _ = self.journal.changed.notified() => {}
                _ = drain.changed() => {}
            }
        };
        let bytes = pump.bytes;
        let first_message = pump.first_message.map(Instant::into_std);
        let rpc_end = match &self.source {
            Source::Rpc(stream) => stream.end_kind(),
            Source::Sse { .. } => RpcEnd::Unknown,
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
        self.accounting.end(Ended {
            bytes,
            outcome,
            messages: index - 1,
            first_message,
            end: rpc_end,
        });
        self.resumer.producer_done(&self.journal);
    }
}
