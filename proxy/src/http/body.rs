//! Body wrappers: request bodies with a size limit, response bodies with an idle
//! timeout and completion accounting. Frames pass through as they come, so nothing
//! waits and backpressure reaches the sender; response data frames that are already
//! waiting when one is read go out joined as one (fewer frames and writes for streams
//! of small messages).

use super::client_body::{ClientBody, ClientFault};
use super::completion::{Completion, Outcome};
use super::join::{FrameSource, Polled, poll_joined};
use super::stream_stats::RpcEnd;
use crate::clock::now_ms;
use crate::resume::consumer::Feed;
use crate::rpc::request::Transform;
use crate::rpc::response::RpcStream;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tollgate_filters::filter::{StreamFilter, Verdict};
use tollgate_filters::rpc::{Code, RpcStatus};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    #[error("stream idle for longer than {0:?}")]
    Idle(Duration),
    /// A filter ended the response (the app's budget ran out mid-stream).
    #[error("response cut: {0}")]
    Cut(String),
    /// The client's body could not be translated for the upstream.
    #[error("invalid request body: {0}")]
    Invalid(String),
    /// The client's body broke: bad framing, an abort or a reset.
    #[error("request body from the client failed: {1}")]
    Client(ClientFault, #[source] hyper::Error),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

/// State shared by the request and response bodies of one streaming exchange.
#[derive(Debug, Default)]
pub struct Exchange {
    last_activity_ms: AtomicU64,
    request_too_large: AtomicBool,
    request_bytes: AtomicU64,
    /// The request body's last poll is waiting for the client to send more.
    waiting_on_client: AtomicBool,
    /// The first failure of the client's body, with a message for the client.
    client_fault: OnceLock<(ClientFault, String)>,
}

impl Exchange {
    pub fn new() -> Self {
        Exchange {
            last_activity_ms: AtomicU64::new(now_ms()),
            ..Exchange::default()
        }
    }
    fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Relaxed);
    }
    fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_activity_ms.load(Relaxed)))
    }
    /// Request body bytes received from the client so far.
    pub fn request_bytes(&self) -> u64 {
        self.request_bytes.load(Relaxed)
    }

    /// Whether the request body was cut for exceeding its limit.
    pub fn request_too_large(&self) -> bool {
        self.request_too_large.load(Relaxed)
    }

    /// Whether the upstream is waiting for request body bytes the client has not sent
    /// (rather than the body being done, or the upstream not reading it).
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Relaxed)
    }

    /// How the client's body failed, if it did: the upstream may then see only a
    /// reset stream, with our body error lost on the way.
    pub fn client_fault(&self) -> Option<&(ClientFault, String)> {
        self.client_fault.get()
    }

    fn fail(&self, fault: ClientFault, message: String) {
        let _ = self.client_fault.set((fault, message));
    }
}

/// The body sent upstream: the client's body, counted against the route's limit and
/// optionally rewritten on the way (gRPC-Web text, Connect JSON), or one buffered frame.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<ClientBody>,
    /// Sent before anything from `inner`: a buffered Connect unary message.
    pending: Option<Bytes>,
    transform: Option<Box<Transform>>,
    limit: u64,
    seen: u64,
    exchange: Option<Arc<Exchange>>,
}

impl RequestBody {
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            pending: None,
            transform: None,
            limit: u64::MAX,
            seen: 0,
            exchange: None,
        }
    }

    pub fn new(inner: ClientBody, limit: Option<u64>, exchange: Option<Arc<Exchange>>) -> Self {
        RequestBody {
            inner: Some(inner),
            pending: None,
            transform: None,
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
            exchange,
        }
    }

    /// A body of exactly these bytes.
    pub fn once(bytes: Bytes) -> Self {
        RequestBody {
            pending: Some(bytes),
            ..Self::empty()
        }
    }

    /// A copy for another try, when the body is known in full (empty or buffered).
    pub fn replay(&self) -> Option<RequestBody> {
        match (&self.inner, &self.pending) {
            (None, Some(b)) => Some(Self::once(b.clone())),
            (None, None) => Some(Self::empty()),
            (Some(inner), _) if inner.is_end_stream() => Some(Self::empty()),
            _ => None,
        }
    }

    /// Rewrites the data frames with `t` after they are counted.
    pub fn with_transform(mut self, t: Transform) -> Self {
        if !t.is_noop() {
            self.transform = Some(Box::new(t));
        }
        self
    }

    fn invalid(&mut self, why: String) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.inner = None;
        self.transform = None;
        if let Some(x) = &self.exchange {
            x.fail(ClientFault::Invalid, format!("invalid request body: {why}"));
        }
        Poll::Ready(Some(Err(BodyError::Invalid(why))))
    }

    fn client_error(&mut self, e: hyper::Error) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.inner = None;
        let fault = ClientFault::of(&e);
        if let Some(x) = &self.exchange {
            x.fail(fault, fault.describe().to_string());
        }
        Poll::Ready(Some(Err(BodyError::Client(fault, e))))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(bytes) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let polled = Pin::new(inner).poll_frame(cx);
            if let Some(x) = &this.exchange {
                x.waiting_on_client.store(polled.is_pending(), Relaxed);
            }
            let frame = match ready!(polled) {
                Some(Ok(f)) => f,
                Some(Err(e)) => return this.client_error(e),
                None => {
                    this.inner = None;
                    if let Some(Err(why)) = this.transform.as_ref().map(|t| t.finish()) {
                        return this.invalid(why);
                    }
                    return Poll::Ready(None);
                }
            };
            if let Some(data) = frame.data_ref() {
                this.seen += data.len() as u64;
                if this.seen > this.limit {
                    if let Some(x) = &this.exchange {
                        x.request_too_large.store(true, Relaxed);
                    }
                    this.inner = None;
                    return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
                }
            }
            if let Some(x) = &this.exchange {
                x.touch();
                x.request_bytes.store(this.seen, Relaxed);
            }
            let Some(t) = this.transform.as_mut() else {
                return Poll::Ready(Some(Ok(frame)));
            };
            match frame.into_data() {
                Ok(data) => match t.data(data) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                    Err(why) => return this.invalid(why),
                },
                // Trailers from a browser protocol have no gRPC meaning.
                Err(_) => continue,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(b) = &self.pending {
            return SizeHint::with_exact(b.len() as u64);
        }
        match (&self.inner, &self.transform) {
            (None, _) => SizeHint::with_exact(0),
            (Some(inner), None) => inner.size_hint(),
            (Some(_), Some(_)) => SizeHint::default(),
        }
    }
}

enum Source {
    Full(Option<Bytes>),
    Upstream(Incoming),
    /// An upstream gRPC stream translated for a gRPC-Web or Connect client.
    Rpc(Box<RpcStream>),
    /// An upstream HTTP stream whose data frames a filter pays for.
    Metered(Box<Metered>),
    /// A resumable stream, read from its buffer (`crate::resume`).
    Resumable(Box<Feed>),
}

/// Plain HTTP body frames paid for one by one; a refused frame ends the body with an
/// error, which resets the stream (HTTP/2) or closes the connection (HTTP/1.1):
/// plain HTTP has no other way to say a response was cut.
pub struct Metered {
    inner: Incoming,
    filter: Box<dyn StreamFilter>,
    held: Option<Frame<Bytes>>,
}

impl Metered {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let frame = match self.held.take() {
            Some(f) => f,
            None => match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(f)) => f,
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => return Poll::Ready(None),
            },
        };
        if let Some(data) = frame.data_ref() {
            match self.filter.poll_response_message(cx, data) {
                Poll::Pending => {
                    self.held = Some(frame);
                    return Poll::Pending;
                }
                Poll::Ready(Verdict::Stop(status)) => {
                    return Poll::Ready(Some(Err(BodyError::Cut(status.message))));
                }
                Poll::Ready(Verdict::Continue) => {}
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

/// The body sent to the client: an upstream stream or a local answer.
///
/// Dropping it (end of stream, client gone, idle timeout) finishes its [`Completion`]:
/// metrics, the access-log line, and the endpoint's in-flight count.
pub struct ResponseBody {
    source: Source,
    /// What the source gave after the data joined last (trailers, an error, the end or
    /// data that did not fit), returned by the next poll.
    held: Option<Polled>,
    idle_after: Duration,
    idle: Option<Pin<Box<Sleep>>>,
    active_since_arm: bool,
    exchange: Option<Arc<Exchange>>,
    bytes: u64,
    completion: Option<Completion>,
    outcome: Outcome,
}

impl ResponseBody {
    pub fn full(bytes: Bytes) -> Self {
        Self::with_source(Source::Full(Some(bytes)), Duration::MAX, None)
    }

    pub fn empty() -> Self {
        Self::with_source(Source::Full(None), Duration::MAX, None)
    }

    pub fn upstream(
        inner: Incoming,
        idle_after: Duration,
        exchange: Option<Arc<Exchange>>,
    ) -> Self {
        Self::with_source(Source::Upstream(inner), idle_after, exchange)
    }

    /// An upstream body whose data frames `filter` pays for.
    pub fn metered(
        inner: Incoming,
        filter: Box<dyn StreamFilter>,
        idle_after: Duration,
        exchange: Option<Arc<Exchange>>,
    ) -> Self {
        let m = Metered {
            inner,
            filter,
            held: None,
        };
        Self::with_source(Source::Metered(Box::new(m)), idle_after, exchange)
    }

    pub fn rpc(stream: RpcStream, idle_after: Duration, exchange: Option<Arc<Exchange>>) -> Self {
        Self::with_source(Source::Rpc(Box::new(stream)), idle_after, exchange)
    }

    /// A resumable stream's client side; idleness is bounded by its producer.
    pub fn resumable(feed: Feed) -> Self {
        Self::with_source(Source::Resumable(Box::new(feed)), Duration::MAX, None)
    }

    fn with_source(source: Source, idle_after: Duration, exchange: Option<Arc<Exchange>>) -> Self {
        ResponseBody {
            source,
            held: None,
            idle_after,
            idle: None,
            active_since_arm: false,
            exchange,
            bytes: 0,
            completion: None,
            outcome: Outcome::Aborted,
        }
    }

    /// Attaches the accounting finished when this body ends or is dropped; a new
    /// resumable stream's goes to its producer, which finishes it when the call ends.
    pub fn set_completion(&mut self, completion: Completion) {
        if let Source::Resumable(feed) = &mut self.source
            && let Some(accounting) = feed.accounting.take()
        {
            accounting.attach(completion);
            return;
        }
        self.completion = Some(completion);
    }

    fn finish(&mut self, outcome: Outcome) {
        self.outcome = outcome;
        if let Some(c) = self.completion.take() {
            c.finish(self.bytes, outcome);
        }
    }

    /// Counts a frame for the client into the stream's tally, when it is a stream.
    fn tally(&mut self, frame: &Frame<Bytes>) {
        let Some(s) = self.completion.as_mut().and_then(|c| c.stream.as_mut()) else {
            return;
        };
        match &self.source {
            Source::Rpc(stream) => {
                s.add_messages(stream.messages().saturating_sub(s.messages));
                s.end = stream.end_kind();
            }
            _ => match frame.data_ref() {
                Some(d) => s.on_data(d),
                None => {
                    if let Some(t) = frame.trailers_ref() {
                        s.end = RpcEnd::of_grpc_status(t.get("grpc-status"));
                    }
                }
            },
        }
    }

    /// Polls the idle timer; `Some(error)` when the stream has been idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Option<BodyError> {
        if self.idle_after == Duration::MAX {
            return None;
        }
        let idle_after = self.idle_after;
        let sleep = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle_after)));
        if std::mem::take(&mut self.active_since_arm) {
            sleep.as_mut().reset(Instant::now() + idle_after);
        }
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return None;
            }
            // The request side may have been busy even if the response was quiet.
            let quiet = self.exchange.as_ref().map_or(idle_after, |x| x.idle_for());
            if quiet >= idle_after {
                return Some(BodyError::Idle(idle_after));
            }
            sleep.as_mut().reset(Instant::now() + (idle_after - quiet));
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = match this.held.take() {
            Some(held) => Poll::Ready(held),
            None => poll_joined(&mut this.source, cx, &mut this.held),
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                this.tally(&frame);
                this.active_since_arm = true;
                if let Some(x) = &this.exchange {
                    x.touch();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.source = Source::Full(None);
                this.finish(if matches!(e, BodyError::Cut(_)) {
                    Outcome::Cut
                } else {
                    Outcome::UpstreamReset
                });
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(Outcome::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => match this.poll_idle(cx) {
                Some(err) => {
                    this.finish(Outcome::IdleTimeout);
                    let last = match &mut this.source {
                        // Browser protocols end with a status the client can read.
                        Source::Rpc(stream) => Some(stream.end(
                            &RpcStatus::new(Code::Unavailable, err.to_string()),
                            &http::HeaderMap::new(),
                        )),
                        _ => None,
                    };
                    this.source = Source::Full(None);
                    match last {
                        Some(frame) => Poll::Ready(Some(Ok(frame))),
                        None => Poll::Ready(Some(Err(err))),
                    }
                }
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        if let Some(held) = &self.held {
            return held.is_none();
        }
        self.source.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            _ if self.held.is_some() => SizeHint::default(),
            Source::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Source::Upstream(inner) => inner.size_hint(),
            Source::Rpc(_) | Source::Resumable(_) => SizeHint::default(),
            Source::Metered(m) => m.inner.size_hint(),
        }
    }
}

impl FrameSource for Source {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Polled> {
        match self {
            Source::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Source::Upstream(inner) => Pin::new(inner).poll_frame(cx).map_err(BodyError::from),
            Source::Rpc(stream) => stream.poll_frame(cx),
            Source::Metered(m) => m.poll_frame(cx),
            Source::Resumable(feed) => feed.poll_frame(cx),
        }
    }

    /// A local answer is one frame, and a resumable stream's feed joins its own.
    fn joins(&self) -> bool {
        matches!(
            self,
            Source::Upstream(_) | Source::Rpc(_) | Source::Metered(_)
        )
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Source::Full(b) => b.is_none(),
            Source::Upstream(inner) => inner.is_end_stream(),
            Source::Rpc(stream) => stream.is_end_stream(),
            Source::Metered(m) => m.held.is_none() && m.inner.is_end_stream(),
            Source::Resumable(feed) => feed.is_end_stream(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper may stop polling once `is_end_stream` is true, without a final `None`.
        let outcome = match (self.outcome, &self.held) {
            // The source failed behind joined data, and the client left before it
            // read that far: the failure is still what ended the stream.
            (Outcome::Aborted, Some(Some(Err(BodyError::Cut(_))))) => Outcome::Cut,
            (Outcome::Aborted, Some(Some(Err(_)))) => Outcome::UpstreamReset,
            (Outcome::Aborted, _) if self.is_end_stream() => Outcome::Complete,
            (other, _) => other,
        };
        self.finish(outcome);
    }
}
