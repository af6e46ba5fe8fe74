//! When a connection has nothing to do: requests in flight are counted per connection,
//! from the moment hyper hands a request head to the service until its response body
//! is dropped (sent in full, reset, or abandoned). A connection with an open exchange
//! (a long stream included) is never idle; one without any for too long is closed.

use crate::clock::now_ms;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::task::{Context, Poll};
use std::time::Duration;

/// Why the proxy closed a connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CloseReason {
    /// No request within `header_read_timeout` of accept (TLS: of the handshake).
    FirstRequest,
    /// No request in flight for `idle_timeout`.
    Idle,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::FirstRequest => "first_request_timeout",
            CloseReason::Idle => "idle",
        }
    }
}

/// What the connection's timer should do when it fires.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// An exchange is open: look again later.
    Busy,
    /// Idle, but not for long enough yet: fire again after this.
    Wait(Duration),
    Close(CloseReason),
}

/// Exchanges in flight on one connection.
#[derive(Debug)]
pub(super) struct Activity {
    /// [`now_ms`] when the connection was ready for its first request.
    ready_ms: u64,
    open: AtomicU32,
    served: AtomicBool,
    /// [`now_ms`] when the last exchange ended.
    idle_since_ms: AtomicU64,
}

impl Activity {
    /// For a connection ready for its first request at `ready_ms` ([`now_ms`]).
    pub fn new(ready_ms: u64) -> Self {
        Activity {
            ready_ms,
            open: AtomicU32::new(0),
            served: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(ready_ms),
        }
    }

    /// Counts an exchange until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Open {
        self.served.store(true, Release);
        self.open.fetch_add(1, AcqRel);
        Open(self.clone())
    }

    /// What to do at `now_ms`: before any request the `first_request` bound applies
    /// (from ready), after one the `idle` bound (from the end of the last exchange).
    pub fn verdict(&self, first_request: Duration, idle: Duration, now_ms: u64) -> Verdict {
        if self.open.load(Acquire) > 0 {
            return Verdict::Busy;
        }
        let (since, bound, reason) = if self.served.load(Acquire) {
            (self.idle_since_ms.load(Acquire), idle, CloseReason::Idle)
        } else {
            (self.ready_ms, first_request, CloseReason::FirstRequest)
        };
        let waited = Duration::from_millis(now_ms.saturating_sub(since));
        match bound.checked_sub(waited) {
            Some(rest) if !rest.is_zero() => Verdict::Wait(rest),
            _ => Verdict::Close(reason),
        }
    }
}

/// One exchange in flight; dropping it ends the exchange.
#[derive(Debug)]
pub(super) struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        // Stored before the count drops, so a timer that sees zero sees this time.
        self.0.idle_since_ms.store(now_ms(), Release);
        self.0.open.fetch_sub(1, AcqRel);
    }
}

/// A response body that ends its exchange when hyper drops it.
pub(super) struct Tracked<B> {
    inner: B,
    _open: Open,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, open: Open) -> Self {
        Tracked { inner, _open: open }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(30);
    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn never_served_closes_at_the_first_request_bound() {
        let a = Activity::new(1_000);
        assert_eq!(
            a.verdict(FIRST, IDLE, 11_000),
            Verdict::Wait(Duration::from_secs(20))
        );
        assert_eq!(
            a.verdict(FIRST, IDLE, 31_000),
            Verdict::Close(CloseReason::FirstRequest)
        );
    }

    #[test]
    fn open_exchange_is_busy_and_idle_counts_from_its_end() {
        let a = Arc::new(Activity::new(now_ms()));
        let open = a.begin();
        assert_eq!(a.verdict(FIRST, IDLE, now_ms() + 3_600_000), Verdict::Busy);
        drop(open);
        let ended = now_ms();
        match a.verdict(FIRST, IDLE, ended + 1_000) {
            Verdict::Wait(rest) => assert!(rest <= IDLE - Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            a.verdict(FIRST, IDLE, ended + 61_000),
            Verdict::Close(CloseReason::Idle)
        );
    }

    #[test]
    fn busy_while_any_of_several_is_open() {
        let a = Arc::new(Activity::new(now_ms()));
        let first = a.begin();
        let second = a.begin();
        drop(first);
        assert_eq!(a.verdict(FIRST, IDLE, now_ms() + 3_600_000), Verdict::Busy);
        drop(second);
        assert!(matches!(a.verdict(FIRST, IDLE, now_ms()), Verdict::Wait(_)));
    }
}
