//! One resumable stream's in-process buffer: the newest messages, numbered from 1 as
//! the client received them, then the stream's final frame. The producer task appends;
//! any number of consumers (the first client, clients that resumed on this proxy) read
//! at their own index. A consumer's mutex hold is a queue lookup, never an await.

use super::token::{Owner, Wire};
use bytes::Bytes;
use http::HeaderMap;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a consumer reads next.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Message `index` (1-based).
    Message(u64, Bytes),
    /// The final frame: the stream is over.
    End(Bytes),
    /// The messages after the consumer's index fell out of the buffer; the oldest kept
    /// is `first`.
    Gap { first: u64 },
    /// This proxy is draining: the consumer tells its client to resume elsewhere.
    Handover,
    /// The stream can be read no further (its producer died, its buffer is gone).
    Lost(String),
}

/// Why a resume cannot start here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client claims more messages than the stream has sent.
    Beyond { last: u64 },
    /// The messages after the client's index fell out of the buffer.
    Gap { first: u64 },
}

#[derive(Debug)]
struct Inner {
    /// Messages `first ..= last`.
    entries: VecDeque<Bytes>,
    first: u64,
    last: u64,
    bytes: u64,
    end: Option<Bytes>,
    finished_at: Option<Instant>,
    /// The highest index handed to any consumer.
    delivered: u64,
    consumers: usize,
    detached_at: Option<Instant>,
    handover: bool,
    /// The producer waits for a consumer to advance.
    producer_waiting: bool,
    wakers: Vec<Waker>,
}

/// A resumable stream as this proxy holds it.
#[derive(Debug)]
pub struct Journal {
    pub token: std::sync::Arc<str>,
    pub owner: Owner,
    pub wire: Wire,
    /// The response head a resumed client gets (content type, encodings, metadata).
    pub head: HeaderMap,
    /// How long this proxy keeps the stream after its end.
    pub ttl: std::time::Duration,
    max_events: usize,
    max_bytes: u64,
    inner: Mutex<Inner>,
    /// Consumers advanced, attached, left or were handed over: the producer rechecks.
    pub changed: Notify,
}

impl Journal {
    pub fn new(
        token: std::sync::Arc<str>,
        owner: Owner,
        wire: Wire,
        head: HeaderMap,
        ttl: std::time::Duration,
        max_events: usize,
        max_bytes: u64,
    ) -> Self {
        Journal {
            token,
            owner,
            wire,
            head,
            ttl,
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                first: 1,
                last: 0,
                bytes: 0,
                end: None,
                finished_at: None,
                delivered: 0,
                consumers: 0,
                detached_at: Some(Instant::now()),
                handover: false,
                producer_waiting: false,
                wakers: Vec::new(),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half-updated in a way
        // readers could misread: every update is a push or pop of whole entries.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the next message; its index, and by how much the bytes held changed.
    pub fn push(&self, message: Bytes) -> (u64, i64) {
        let (index, delta, wakers) = {
            let mut g = self.lock();
            let before = g.bytes;
            g.last += 1;
            g.bytes += message.len() as u64;
            g.entries.push_back(message);
            while g.entries.len() > self.max_events
                || (g.bytes > self.max_bytes && g.entries.len() > 1)
            {
                if let Some(old) = g.entries.pop_front() {
                    g.bytes -= old.len() as u64;
                    g.first += 1;
                }
            }
            let delta = g.bytes as i64 - before as i64;
            (g.last, delta, std::mem::take(&mut g.wakers))
        };
        wakers.into_iter().for_each(Waker::wake);
        (index, delta)
    }

    /// Sets the final frame; later pushes are ignored by readers.
    pub fn finish(&self, end: Bytes) {
        let wakers = {
            let mut g = self.lock();
            if g.end.is_none() {
                g.end = Some(end);
                g.finished_at = Some(Instant::now());
            }
            std::mem::take(&mut g.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    pub fn is_finished(&self) -> bool {
        self.lock().end.is_some()
    }

    /// Whether the stream ended more than `ttl` ago.
    pub fn expired(&self, ttl: std::time::Duration) -> bool {
        self.lock().finished_at.is_some_and(|t| t.elapsed() >= ttl)
    }

    /// Index of the newest message.
    pub fn last(&self) -> u64 {
        self.lock().last
    }

    /// Bytes of the messages held.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Registers a consumer that has seen `after` messages.
    pub fn attach(&self, after: u64) -> Result<(), Refusal> {
        let mut g = self.lock();
        if after > g.last {
            return Err(Refusal::Beyond { last: g.last });
        }
        if after < g.last && after + 1 < g.first {
            return Err(Refusal::Gap { first: g.first });
        }
        g.consumers += 1;
        g.detached_at = None;
        drop(g);
        self.changed.notify_one();
        Ok(())
    }

    /// A consumer left (its client went away, or it handed over).
    pub fn detach(&self) {
        let mut g = self.lock();
        g.consumers = g.consumers.saturating_sub(1);
        if g.consumers == 0 {
            g.detached_at = Some(Instant::now());
        }
        drop(g);
        self.changed.notify_one();
    }

    /// Since when no client has been reading, if none is.
    pub fn detached_since(&self) -> Option<Instant> {
        self.lock().detached_at
    }

    /// Tells this proxy's consumers to hand their clients over.
    pub fn hand_over(&self) {
        let wakers = {
            let mut g = self.lock();
            g.handover = true;
            std::mem::take(&mut g.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Whether the producer should wait for consumers before reading more upstream:
    /// only while someone here is reading and has fallen `high_water` behind.
    pub fn should_wait(&self, high_water: u64) -> bool {
        let mut g = self.lock();
        let wait = g.consumers > 0
            && !g.handover
            && (g.last.saturating_sub(g.delivered) >= high_water
                || g.bytes >= self.max_bytes / 2 && g.delivered < g.last);
        g.producer_waiting = wait;
        wait
    }

    /// The consumer at `after` reads on, or registers to be woken.
    pub fn poll_next(&self, after: u64, cx: &mut Context<'_>) -> Poll<Next> {
        self.next(after, Some(cx))
    }

    /// What the consumer at `after` can read now, without waiting.
    pub fn try_next(&self, after: u64) -> Option<Next> {
        match self.next(after, None) {
            Poll::Ready(next) => Some(next),
            Poll::Pending => None,
        }
    }

    fn next(&self, after: u64, cx: Option<&mut Context<'_>>) -> Poll<Next> {
        let mut g = self.lock();
        if g.handover {
            return Poll::Ready(Next::Handover);
        }
        if after < g.last {
            let want = after + 1;
            if want < g.first {
                return Poll::Ready(Next::Gap { first: g.first });
            }
            let Some(msg) = g.entries.get((want - g.first) as usize).cloned() else {
                return Poll::Ready(Next::Gap { first: g.first });
            };
            let wake = want > g.delivered && g.producer_waiting;
            if want > g.delivered {
                g.delivered = want;
            }
            if wake {
                g.producer_waiting = false;
                drop(g);
                self.changed.notify_one();
            }
            return Poll::Ready(Next::Message(want, msg));
        }
        if let Some(end) = &g.end {
            return Poll::Ready(Next::End(end.clone()));
        }
        if let Some(cx) = cx
            && !g.wakers.iter().any(|w| w.will_wake(cx.waker()))
        {
            g.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;

    fn journal(events: usize, bytes: u64) -> Journal {
        Journal::new(
            Arc::from("t"),
            Owner::new("app", "anon", "/svc/M"),
            Wire::Sse,
            HeaderMap::new(),
            std::time::Duration::from_secs(60),
            events,
            bytes,
        )
    }

    async fn next(j: &Journal, after: u64) -> Next {
        poll_fn(|cx| j.poll_next(after, cx)).await
    }

    #[tokio::test]
    async fn readers_get_every_message_in_order_then_the_end() {
        let j = journal(10, 1 << 20);
        for i in 1..=3u8 {
            assert_eq!(j.push(Bytes::from(vec![i])).0, u64::from(i));
        }
        j.finish(Bytes::from_static(b"end"));
        let mut after = 0;
        loop {
            match next(&j, after).await {
                Next::Message(i, b) => {
                    assert_eq!(i, after + 1);
                    assert_eq!(b[0] as u64, i);
                    after = i;
                }
                Next::End(b) => {
                    assert_eq!(&b[..], b"end");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(after, 3);
        // A second reader from the middle sees the tail and the same end.
        assert_eq!(next(&j, 2).await, Next::Message(3, Bytes::from(vec![3])));
    }

    #[tokio::test]
    async fn what_fell_out_of_the_buffer_is_a_gap_never_skipped() {
        let j = journal(3, 1 << 20);
        for i in 1..=5u8 {
            j.push(Bytes::from(vec![i]));
        }
        assert_eq!(next(&j, 0).await, Next::Gap { first: 3 });
        assert_eq!(next(&j, 1).await, Next::Gap { first: 3 });
        assert_eq!(next(&j, 2).await, Next::Message(3, Bytes::from(vec![3])));
        assert_eq!(j.attach(6), Err(Refusal::Beyond { last: 5 }));
        assert_eq!(j.attach(1), Err(Refusal::Gap { first: 3 }));
        assert_eq!(j.attach(5), Ok(()));
    }

    #[tokio::test]
    async fn the_byte_cap_evicts_too_but_keeps_the_newest() {
        let j = journal(100, 10);
        j.push(Bytes::from(vec![0; 6]));
        j.push(Bytes::from(vec![0; 6]));
        assert_eq!(next(&j, 0).await, Next::Gap { first: 2 });
        j.push(Bytes::from(vec![0; 60]));
        assert_eq!(j.bytes(), 60);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_push_and_on_handover() {
        let j = Arc::new(journal(10, 1 << 20));
        let reader = {
            let j = j.clone();
            tokio::spawn(async move { next(&j, 0).await })
        };
        tokio::task::yield_now().await;
        j.push(Bytes::from_static(b"a"));
        assert_eq!(
            reader.await.unwrap(),
            Next::Message(1, Bytes::from_static(b"a"))
        );
        let reader = {
            let j = j.clone();
            tokio::spawn(async move { next(&j, 1).await })
        };
        tokio::task::yield_now().await;
        j.hand_over();
        assert_eq!(reader.await.unwrap(), Next::Handover);
    }

    #[tokio::test]
    async fn the_producer_waits_only_for_a_reader_that_is_here_and_behind() {
        let j = journal(10, 1 << 20);
        for _ in 0..5 {
            j.push(Bytes::from_static(b"x"));
        }
        assert!(!j.should_wait(5), "nobody reading: run on (linger)");
        j.attach(0).unwrap();
        assert!(j.should_wait(5));
        assert_eq!(
            next(&j, 0).await,
            Next::Message(1, Bytes::from_static(b"x"))
        );
        assert!(!j.should_wait(5));
        j.detach();
        assert!(j.detached_since().is_some());
    }
}
