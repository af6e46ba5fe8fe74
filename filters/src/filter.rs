//! The phased interface of per-stream filters.
//!
//! Request-head checks (credentials, rate limits, quotas) run in the proxy before the
//! upstream is chosen and answer with a refusal; a filter that must follow the
//! exchange afterwards implements [`StreamFilter`] and is called at each later phase,
//! in order: response head, each response message, trailers, end (the log phase).
//! Budgets metered per streamed message are the first such filter.

use crate::rpc::RpcStatus;
use std::task::{Context, Poll};

/// What a filter decides about a response message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Forward it.
    Continue,
    /// Do not forward it: end the stream with this status, in the client's protocol.
    Stop(RpcStatus),
}

/// A filter that follows one exchange after it was admitted.
pub trait StreamFilter: Send {
    /// The upstream's response head, before the client sees it.
    fn on_response_head(&mut self, _head: &http::response::Parts) {}

    /// One whole response message (decompressed protobuf) before it is forwarded.
    /// `Pending` holds the stream (and so the upstream, by backpressure) until the
    /// filter can decide, for example while more budget is leased.
    fn poll_response_message(&mut self, _cx: &mut Context<'_>, _message: &[u8]) -> Poll<Verdict> {
        Poll::Ready(Verdict::Continue)
    }

    /// The upstream's trailers, before they are forwarded.
    fn on_trailers(&mut self, _trailers: &http::HeaderMap) {}

    /// The exchange is over, however it ended. Called once.
    fn on_end(&mut self) {}
}
