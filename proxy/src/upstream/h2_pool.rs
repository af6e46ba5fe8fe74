//! The HTTP/2 connections of one endpoint: a stream goes on the first open connection
//! that can take one more, else on a new connection, up to the cluster's
//! `max_connections_per_endpoint`; past that, on the least busy one (where h2 queues it
//! until a stream ends, as every stream did when an endpoint had one connection).
//!
//! Why streams are counted here: hyper's HTTP/2 `SendRequest` is always "ready", and h2
//! queues streams beyond the peer's `SETTINGS_MAX_CONCURRENT_STREAMS` inside the
//! connection, so neither says that a connection is full. So:
//! - the peer's limit is read from `http2::Connection::current_max_send_streams` by the
//!   task that drives the connection ([`super::h2_conn`]);
//! - a stream holds a [`StreamSlot`] of its connection from sending until its response
//!   ends (the proxy keeps it in the endpoint's `InFlight`).
//!
//! Connections are opened with `initial_max_send_streams(0)`: h2 sends no stream before
//! the peer's first SETTINGS, and until then the limit reads 0 (a SETTINGS without the
//! field reads as no limit). Requests wait for a new connection's SETTINGS rather than
//! guess its capacity. One connect runs at a time per endpoint, in a task of its own
//! (a request that gives up does not abandon it): a burst waits for it instead of
//! opening one connection each, and a failed connect fails the requests that waited.
//! A connection with no stream for [`IDLE_TIMEOUT`] closes, as HTTP/1.1 pooled ones do;
//! one whose peer sends no SETTINGS within the connect's own time limit is dropped.
//!
//! Each serving worker has its own connections (and its own
//! `max_connections_per_endpoint`), driven on its own runtime, as Envoy's workers do.
//!
//! The lock is never held across an await; a request costs one lock, a scan of the few
//! connections and reference-count increments (its slot, the connection's sender), no
//! allocation of its own.

use super::client::{ConnectError, Dialer, Error, IDLE_TIMEOUT};
use super::h2_conn::{Connection, Signal, Watched};
use crate::clock::now_ms;
use crate::http::body::RequestBody;
use crate::workers::PerWorker;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Sends of a request that a closing connection handed back unsent.
const SEND_TRIES: usize = 3;

/// The HTTP/2 connections of one endpoint.
#[derive(Debug, Default)]
pub struct H2Pool {
    /// Per serving worker: a connection's driver runs on the runtime of the worker that
    /// opened it, and only that worker's streams use it.
    shared: PerWorker<Arc<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// A connect ended, a connection learnt its limit, or one closed.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    conns: Vec<Conn>,
    connecting: bool,
    /// Connects ended so far, so a waiter knows whether the one it waited for ended.
    connects: u64,
    /// Why the last connect to end failed; `None` when it succeeded.
    failed: Option<ConnectError>,
}

#[derive(Debug)]
struct Conn {
    send: http2::SendRequest<RequestBody>,
    load: Arc<Load>,
}

/// What the pool, the connection's driver and its streams share.
#[derive(Debug)]
struct Load {
    streams: AtomicU32,
    /// The peer's `SETTINGS_MAX_CONCURRENT_STREAMS`; 0 until its first SETTINGS.
    limit: AtomicU32,
    idle_since_ms: AtomicU64,
}

/// One stream's place on its connection, given back on drop.
#[derive(Debug)]
pub struct StreamSlot(Arc<Load>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Relaxed) == 1 {
            self.0.idle_since_ms.store(now_ms(), Relaxed);
        }
    }
}

enum Choice {
    Send(usize),
    Wait,
    Open,
}

impl H2Pool {
    /// Open connections (admin view).
    pub fn connections(&self) -> usize {
        self.shared.iter().map(|s| lock(s).conns.len()).sum()
    }

    /// Sends `req` on a connection to `authority` with room for it.
    pub(super) async fn send(
        &self,
        dialer: &Dialer,
        authority: &Authority,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, StreamSlot), Error> {
        let mut tries = 0;
        loop {
            let (mut send, slot) = self.start(dialer, authority).await?;
            match send.try_send_request(req).await {
                Ok(resp) => return Ok((resp, slot)),
                Err(mut e) => {
                    tries += 1;
                    match e.take_message() {
                        // Never sent: the connection was closing. Another one may take it.
                        Some(back) if tries < SEND_TRIES => req = back,
                        _ => return Err(Error::Http2(e.into_error())),
                    }
                }
            }
        }
    }

    /// A connection with room and a place on it, opening or waiting for one as needed.
    async fn start(
        &self,
        dialer: &Dialer,
        authority: &Authority,
    ) -> Result<(http2::SendRequest<RequestBody>, StreamSlot), Error> {
        loop {
            let (notified, connects) = {
                let mut st = self.lock();
                match choose(&mut st, dialer.max_connections) {
                    Choice::Send(i) => {
                        let conn = &st.conns[i];
                        conn.load.streams.fetch_add(1, Relaxed);
                        return Ok((conn.send.clone(), StreamSlot(conn.load.clone())));
                    }
                    Choice::Open => {
                        st.connecting = true;
                        let shared = self.slot().clone();
                        let dialer = dialer.clone();
                        let authority = authority.clone();
                        tokio::spawn(async move { open(shared, dialer, authority).await });
                    }
                    Choice::Wait => {}
                }
                // Created under the lock: every change is made under it, then notified.
                (self.slot().changed.notified(), st.connects)
            };
            notified.await;
            let st = self.lock();
            if st.connects != connects
                && let Some(e) = &st.failed
            {
                return Err(Error::Connect(e.clone()));
            }
        }
    }

    /// This worker's connections.
    fn slot(&self) -> &Arc<Shared> {
        self.shared.mine()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(self.slot())
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // Nothing panics while holding it; a poisoned lock still holds consistent state.
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first open connection with room; else wait for one being opened or learning
/// its limit; else open one; else the least busy.
fn choose(st: &mut State, max_connections: usize) -> Choice {
    st.conns.retain(|c| !c.send.is_closed());
    let mut pending = st.connecting;
    let mut least: Option<(usize, u32)> = None;
    for (i, c) in st.conns.iter().enumerate() {
        let limit = c.load.limit.load(Relaxed);
        if limit == 0 {
            pending = true;
            continue;
        }
        let streams = c.load.streams.load(Relaxed);
        if streams < limit {
            return Choice::Send(i);
        }
        if least.is_none_or(|(_, n)| streams < n) {
            least = Some((i, streams));
        }
    }
    if pending {
        Choice::Wait
    } else if st.conns.len() < max_connections {
        Choice::Open
    } else {
        least.map_or(Choice::Open, |(i, _)| Choice::Send(i))
    }
}

/// Opens a connection, adds it to the pool and drives it until it closes.
async fn open(shared: Arc<Shared>, dialer: Dialer, authority: Authority) {
    let result = dialer.connect(&authority).await;
    let settle_timeout = dialer.handshake_timeout;
    drop(dialer);
    let conn = {
        let mut st = lock(&shared);
        st.connecting = false;
        st.connects += 1;
        match result {
            Ok((send, conn, signal)) => {
                let load = Arc::new(Load {
                    streams: AtomicU32::new(0),
                    limit: AtomicU32::new(0),
                    idle_since_ms: AtomicU64::new(now_ms()),
                });
                st.conns.push(Conn {
                    send,
                    load: load.clone(),
                });
                st.failed = None;
                Some((conn, signal, load))
            }
            Err(e) => {
                tracing::debug!(endpoint = %authority, error = %e, "HTTP/2 connect failed");
                st.failed = Some(e);
                None
            }
        }
    };
    shared.changed.notify_waiters();
    let Some((conn, signal, load)) = conn else {
        return;
    };
    let pool = Arc::downgrade(&shared);
    drop(shared);
    drive(conn, signal, load, pool, settle_timeout).await;
}

/// Runs the connection, publishing the peer's stream limit, and takes it out of the
/// pool once idle for [`IDLE_TIMEOUT`] (it then closes when its last stream ends), or
/// when the peer's SETTINGS do not come within `settle_timeout`.
async fn drive(
    conn: Connection,
    signal: Arc<Signal>,
    load: Arc<Load>,
    pool: Weak<Shared>,
    settle_timeout: Duration,
) {
    let publish = {
        let (load, pool) = (load.clone(), pool.clone());
        move |limit: u32| {
            let Some(shared) = pool.upgrade() else { return };
            // Stored under the lock, so a request deciding to wait sees it or is woken.
            let guard = lock(&shared);
            load.limit.store(limit, Relaxed);
            drop(guard);
            shared.changed.notify_waiters();
        }
    };
    let mut conn = Watched::new(conn, signal, publish);
    let period = IDLE_TIMEOUT / 3;
    let mut reap = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let settle = tokio::time::sleep(settle_timeout);
    tokio::pin!(settle);
    let mut pooled = true;
    loop {
        tokio::select! {
            () = &mut conn => break,
            _ = reap.tick(), if pooled => pooled = !take_out(&pool, &load, Some(IDLE_TIMEOUT)),
            // Re-checked when it fires: the condition is read when the loop goes round.
            () = &mut settle, if pooled && load.limit.load(Relaxed) == 0 => {
                if load.limit.load(Relaxed) == 0 {
                    tracing::debug!("upstream HTTP/2 connection sent no SETTINGS in time");
                    take_out(&pool, &load, None);
                    pooled = false;
                }
            }
        }
    }
    drop(conn);
    if let Some(shared) = pool.upgrade() {
        drop(lock(&shared));
        shared.changed.notify_waiters();
    }
}

/// Takes the connection of `load` out of the pool, when idle for `idle` if given; true
/// when it is no longer pooled. Requests waiting for it are woken.
fn take_out(pool: &Weak<Shared>, load: &Arc<Load>, idle: Option<Duration>) -> bool {
    let Some(shared) = pool.upgrade() else {
        return true;
    };
    let mut st = lock(&shared);
    if let Some(idle) = idle {
        let idle_ms = now_ms().saturating_sub(load.idle_since_ms.load(Relaxed));
        // Streams are only added under the lock: none can start while this decides.
        if load.streams.load(Relaxed) != 0 || idle_ms < idle.as_millis() as u64 {
            return false;
        }
    }
    st.conns.retain(|c| !Arc::ptr_eq(&c.load, load));
    drop(st);
    shared.changed.notify_waiters();
    true
}

#[cfg(test)]
mod tests {
    use super::super::client;
    use super::super::endpoint::{Endpoint, Member};
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use futures_util::future::join_all;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use prometheus::IntGauge;
    use std::convert::Infallible;
    use tokio::net::TcpListener;
    use tollgate_routing::{ClusterSpec, EndpointSpec, UpstreamProtocol};

    /// An h2c server allowing `limit` streams per connection; every response sends its
    /// head and one chunk, then stays open until the client goes away.
    async fn server(limit: u32) -> (std::net::SocketAddr, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU32::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Relaxed);
                let svc = hyper::service::service_fn(|_req| async {
                    let body = futures_util::stream::once(async {
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x")))
                    })
                    .chain(futures_util::stream::pending());
                    Ok::<_, Infallible>(Response::new(StreamBody::new(body)))
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(limit)
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::spawn(conn);
            }
        });
        (addr, accepted)
    }

    fn endpoint(addr: std::net::SocketAddr) -> Arc<Endpoint> {
        let member = Member {
            address: "upstream",
            authority: addr.to_string().parse().expect("authority"),
            weight: 1,
            gauge: IntGauge::new("g", "g").expect("gauge"),
        };
        Endpoint::group(vec![member]).remove(0)
    }

    fn cluster(max_connections: u32) -> client::UpstreamClient {
        let mut spec = ClusterSpec::empty();
        spec.protocol = UpstreamProtocol::H2c;
        spec.endpoints = vec![EndpointSpec {
            address: "127.0.0.1:1".into(),
            weight: 1,
        }];
        spec.max_connections_per_endpoint = max_connections;
        client::build(&spec, 65536).expect("client")
    }

    fn request(ep: &Endpoint) -> Request<RequestBody> {
        let uri = format!("http://{}/", ep.authority);
        let mut req = Request::new(RequestBody::empty());
        *req.uri_mut() = uri.parse().expect("uri");
        *req.version_mut() = http::Version::HTTP_2;
        req
    }

    /// Opens `n` streams at once and reads each one's first chunk.
    async fn open_streams(
        client: &client::UpstreamClient,
        ep: &Endpoint,
        n: usize,
    ) -> Vec<(Response<Incoming>, Option<StreamSlot>)> {
        let sends = (0..n).map(|_| async {
            let (mut resp, slot) = client.send(ep, request(ep)).await.expect("response");
            let first = resp
                .body_mut()
                .frame()
                .await
                .expect("a frame")
                .expect("data");
            assert_eq!(first.into_data().expect("data"), "x");
            (resp, slot)
        });
        join_all(sends).await
    }

    #[tokio::test]
    async fn streams_beyond_the_peers_limit_go_on_new_connections() {
        let (addr, accepted) = server(3).await;
        let ep = endpoint(addr);
        let client = cluster(16);
        let open = tokio::time::timeout(Duration::from_secs(20), open_streams(&client, &ep, 10))
            .await
            .expect("all ten streams run at once");
        assert_eq!(ep.h2_connections(), 4, "3 + 3 + 3 + 1");
        assert_eq!(accepted.load(Relaxed), 4);
        drop(open);
        // Free places are used again before any new connection.
        let again = tokio::time::timeout(Duration::from_secs(20), open_streams(&client, &ep, 12))
            .await
            .expect("twelve fit in four connections");
        assert_eq!(accepted.load(Relaxed), 4);
        drop(again);
    }

    #[tokio::test]
    async fn a_failed_connect_fails_every_request_waiting_for_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let ep = endpoint(addr);
        let client = cluster(16);
        let sends = (0..5).map(|_| client.send(&ep, request(&ep)));
        let results = tokio::time::timeout(Duration::from_secs(20), join_all(sends))
            .await
            .expect("every request answered");
        for r in results {
            let err = r.expect_err("nothing listens");
            assert!(err.is_connect(), "{err}");
        }
        assert_eq!(ep.h2_connections(), 0);
    }

    #[tokio::test]
    async fn past_the_connection_cap_streams_queue_on_the_open_connections() {
        let (addr, accepted) = server(2).await;
        let ep = endpoint(addr);
        let client = Arc::new(cluster(2));
        let mut open = tokio::time::timeout(Duration::from_secs(20), open_streams(&client, &ep, 4))
            .await
            .expect("four streams fit in two connections");
        assert_eq!(ep.h2_connections(), 2);
        // A fifth is queued in h2 on one of the two, and goes once a stream there ends.
        let fifth = tokio::spawn({
            let (client, ep) = (client.clone(), ep.clone());
            async move { open_streams(&client, &ep, 1).await }
        });
        open.truncate(1);
        let fifth = tokio::time::timeout(Duration::from_secs(20), fifth)
            .await
            .expect("the fifth stream runs once others end")
            .expect("task");
        assert_eq!(accepted.load(Relaxed), 2, "no third connection");
        drop((open, fifth));
    }
}
