//! The HTTP/1.1 connections of one endpoint, and one exchange on one of them.
//!
//! A request takes the most recently used idle connection, or opens one, and drives
//! that connection from its own task until the response head is in. No task runs per
//! connection while a request is in flight, so nothing is handed between a connection's
//! task and the request's (hyper-util's pooled client did both: a task per connection,
//! a channel to it and a oneshot back, and a locked checkout). When the whole response
//! was read in that same poll, as it is for small responses, the connection goes back
//! to the pool at once; the body waits in hyper's channel. Otherwise a task drives the
//! connection while the body streams (or the request body is still being sent) and
//! pools it once idle, as hyper-util did.
//!
//! Idle connections are not polled. One the peer closed is found at its next use: hyper
//! reads the end of the stream before writing, hands the unsent request back, and the
//! request goes on the next connection (a failure on a new connection before anything
//! was written counts as a failed connect: the request never reached the app). A task
//! per pool closes connections idle for longer than [`IDLE_TIMEOUT`].
//!
//! Each serving worker has its own idle list: a connection is registered with the
//! runtime of the worker that opened it, and is reused there.

use super::client::{Error, H1Dialer, IDLE_TIMEOUT};
use crate::http::body::RequestBody;
use crate::workers::PerWorker;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;

/// Idle connections kept per endpoint and worker; one more is closed when it becomes idle.
const MAX_IDLE: usize = 256;

/// The future that runs one HTTP/1.1 connection (with upgrades), boxed once per
/// connection: hyper does not name its type.
pub(super) type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// The HTTP/1.1 connections of one endpoint.
#[derive(Debug)]
pub struct H1Pool {
    shared: Arc<Shared>,
}

struct Shared {
    /// Per serving worker (a connection stays with the runtime that opened it), least
    /// recently used first.
    idle: PerWorker<Mutex<VecDeque<Idle>>>,
    /// [`IDLE_TIMEOUT`] but in tests.
    idle_timeout: Duration,
    reaper: AtomicBool,
}

impl Default for H1Pool {
    fn default() -> Self {
        H1Pool::new(IDLE_TIMEOUT)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("idle", &total_idle(self))
            .finish()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// A connection: the sender of its requests and, while it runs, its driver.
pub(super) struct Conn {
    send: http1::SendRequest<RequestBody>,
    driver: Option<Driver>,
}

impl Conn {
    pub(super) fn new(send: http1::SendRequest<RequestBody>, driver: Driver) -> Self {
        Conn {
            send,
            driver: Some(driver),
        }
    }
}

impl H1Pool {
    /// A pool closing connections idle for `idle_timeout`.
    fn new(idle_timeout: Duration) -> Self {
        H1Pool {
            shared: Arc::new(Shared {
                idle: PerWorker::new(),
                idle_timeout,
                reaper: AtomicBool::new(false),
            }),
        }
    }

    /// Idle connections (admin view).
    pub fn idle(&self) -> usize {
        total_idle(&self.shared)
    }

    /// Sends `req` to `authority` on an idle connection or a new one.
    pub(super) async fn send(
        &self,
        dialer: &H1Dialer,
        authority: &Authority,
        mut req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, Error> {
        origin_form(&mut req, dialer.scheme(), authority);
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                // Boxed: the connect (TCP, TLS) is most of this future's size, and
                // every request's future would carry it while few requests connect.
                None => (
                    Box::pin(dialer.connect(authority))
                        .await
                        .map_err(Error::Connect)?,
                    false,
                ),
            };
            match exchange(&mut conn, req).await {
                Ok(resp) => {
                    self.after_response(conn);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the idle connection had been closed. The next one.
                    Some(back) if reused => req = back,
                    Some(_) => return Err(Error::Connect(Arc::new(e.into_error()))),
                    None => return Err(Error::Http1(e.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection that can still be used.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = lock(&self.shared);
        while let Some(entry) = idle.pop_back() {
            if entry.since.elapsed() >= self.shared.idle_timeout {
                // Every older one has expired too.
                idle.clear();
                return None;
            }
            if entry.conn.send.is_ready() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Pools the connection once it is idle: now if the response was read whole,
    /// else from a task that drives it meanwhile.
    fn after_response(&self, mut conn: Conn) {
        if conn.driver.is_none() || conn.send.is_closed() {
            return;
        }
        if conn.send.is_ready() {
            checkin(&self.shared, conn);
            return;
        }
        let pool = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            if until_idle(&mut conn).await
                && let Some(shared) = pool.upgrade()
            {
                checkin(&shared, conn);
            }
        });
    }
}

/// Sends `req` on `conn`, driving the connection from this task, until the response
/// head is in. Only the connection's progress moves the response, so the response is
/// polled after it with a waker that does nothing: the connection's own wake-ups (its
/// socket, the request body) are the task's.
async fn exchange(
    conn: &mut Conn,
    req: Request<RequestBody>,
) -> Result<Response<Incoming>, TrySendError<Request<RequestBody>>> {
    let mut response = pin!(conn.send.try_send_request(req));
    poll_fn(|cx| {
        let driven = poll_driver(&mut conn.driver, cx);
        match response
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(result) => Poll::Ready(result),
            // hyper answers every request it took before its connection ends; should
            // it not, the task still wakes when it does.
            Poll::Pending if driven => response.as_mut().poll(cx),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Polls the connection if it still runs; true once it has ended.
fn poll_driver(driver: &mut Option<Driver>, cx: &mut Context<'_>) -> bool {
    let Some(d) = driver.as_mut() else {
        return true;
    };
    match d.as_mut().poll(cx) {
        Poll::Ready(result) => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
            }
            // Never polled again: an upgraded connection's future must not be.
            *driver = None;
            true
        }
        Poll::Pending => false,
    }
}

/// Drives `conn` until it can take another request (true) or has ended (false).
async fn until_idle(conn: &mut Conn) -> bool {
    poll_fn(|cx| {
        if poll_driver(&mut conn.driver, cx) {
            Poll::Ready(false)
        } else if conn.send.is_ready() {
            Poll::Ready(true)
        } else {
            Poll::Pending
        }
    })
    .await
}

fn checkin(shared: &Arc<Shared>, conn: Conn) {
    let now = Instant::now();
    let mut idle = lock(shared);
    let expired = expire(&mut idle, now, shared.idle_timeout);
    let full = idle.len() >= MAX_IDLE;
    if !full {
        idle.push_back(Idle { conn, since: now });
    }
    drop(idle);
    // Closed outside the lock, like `conn` when the pool is full.
    drop(expired);
    if full {
        return;
    }
    if !shared.reaper.swap(true, Relaxed) {
        tokio::spawn(reap(Arc::downgrade(shared)));
    }
}

/// Closes the pool's connections idle for longer than its idle timeout (checked every
/// quarter of it), until the pool is gone.
async fn reap(pool: Weak<Shared>) {
    let Some(period) = pool.upgrade().map(|s| s.idle_timeout / 4) else {
        return;
    };
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    loop {
        tick.tick().await;
        let Some(shared) = pool.upgrade() else { return };
        for slot in shared.idle.iter() {
            let expired = {
                let mut idle = slot.lock().unwrap_or_else(|p| p.into_inner());
                expire(&mut idle, Instant::now(), shared.idle_timeout)
            };
            // Closed outside the lock.
            drop(expired);
        }
    }
}

/// Takes the connections idle for `timeout` or longer out of `idle` (the oldest first:
/// the common case looks at one entry and allocates nothing).
fn expire(idle: &mut VecDeque<Idle>, now: Instant, timeout: Duration) -> Vec<Idle> {
    let mut expired = Vec::new();
    while idle
        .front()
        .is_some_and(|e| now.duration_since(e.since) >= timeout)
    {
        expired.extend(idle.pop_front());
    }
    expired
}

/// This worker's idle connections.
fn lock(shared: &Shared) -> MutexGuard<'_, VecDeque<Idle>> {
    let slot = shared.idle.mine();
    // Nothing panics while holding it; a poisoned lock still holds consistent state.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

fn total_idle(shared: &Shared) -> usize {
    shared
        .idle
        .iter()
        .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
        .sum()
}

/// Rewrites the request for the wire as an HTTP/1.1 origin server expects it: the
/// target in origin form (authority form for CONNECT) and a `Host` when none is set.
fn origin_form(req: &mut Request<RequestBody>, scheme: &Scheme, authority: &Authority) {
    if !req.headers().contains_key(HOST)
        && let Some(host) = host_value(scheme, authority)
    {
        req.headers_mut().insert(HOST, host);
    }
    let target = if req.method() == Method::CONNECT {
        Uri::from(authority.clone())
    } else {
        match req.uri().path_and_query() {
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        }
    };
    *req.uri_mut() = target;
}

/// `authority` as a `Host` value, without the scheme's default port.
fn host_value(scheme: &Scheme, authority: &Authority) -> Option<HeaderValue> {
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let host = match authority.port_u16() {
        Some(port) if port == default_port => authority.host(),
        _ => authority.as_str(),
    };
    HeaderValue::from_str(host).ok()
}

#[cfg(test)]
#[path = "h1_pool_tests.rs"]
mod tests;
