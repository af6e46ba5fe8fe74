//! Client-facing listeners: accept loops with a connection cap, TLS termination with
//! SNI certificates and ALPN, HTTP/1.1 and HTTP/2 (h2c by prior knowledge on plain
//! listeners), first-request and idle timeouts, and graceful draining on shutdown.

mod conn;
mod idle;
mod io;
mod protocol;

use crate::config::{ListenerConfig, ListenerMode};
use crate::state::Shared;
use prometheus::{IntCounter, IntGauge};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use protocol::HttpBuilders;

/// A bound listener, ready to serve: one socket per worker (sharing the port with
/// `SO_REUSEPORT` when there are several), or one for L4 listeners.
pub struct Bound {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub mode: ListenerMode,
    sockets: Vec<std::net::TcpListener>,
    tls: Option<TlsAcceptor>,
    /// Open connections beyond which new ones are closed on accept.
    max_connections: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("listener `{name}`: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener `{name}`: {source}")]
    Tls {
        name: String,
        source: tollgate_certs::CertError,
    },
}

/// The accept queue of each socket, as tokio's own `bind` sets it.
const BACKLOG: i32 = 1024;

/// Binds every configured listener, with one socket per worker for HTTP listeners;
/// fails without serving if any cannot bind.
pub async fn bind(
    configs: &[ListenerConfig],
    shared: &Shared,
    workers: usize,
) -> Result<Vec<Bound>, ListenError> {
    let mut out = Vec::with_capacity(configs.len());
    for c in configs {
        let tls = match &c.tls {
            Some(t) => {
                let opts = t.options().map_err(|source| ListenError::Tls {
                    name: c.name.clone(),
                    source,
                })?;
                let cfg = tollgate_certs::server_config(shared.certs.clone(), &opts).map_err(
                    |source| ListenError::Tls {
                        name: c.name.clone(),
                        source,
                    },
                )?;
                Some(TlsAcceptor::from(cfg))
            }
            None => None,
        };
        let count = match c.mode {
            ListenerMode::Http => workers.max(1),
            ListenerMode::TlsPassthrough | ListenerMode::Tcp => 1,
        };
        let bind_err = |source| ListenError::Bind {
            name: c.name.clone(),
            addr: c.listen,
            source,
        };
        let first = listen_socket(c.listen, count > 1).map_err(bind_err)?;
        // Port 0 picks a port once; the other workers' sockets join it.
        let addr = first.local_addr().unwrap_or(c.listen);
        let mut sockets = Vec::with_capacity(count);
        sockets.push(first);
        for _ in 1..count {
            sockets.push(listen_socket(addr, true).map_err(bind_err)?);
        }
        out.push(Bound {
            name: c.name.as_str().into(),
            addr,
            mode: c.mode,
            sockets,
            tls,
            max_connections: c.max_connections.unwrap_or(shared.limits.max_connections),
        });
    }
    Ok(out)
}

/// A non-blocking listening socket on `addr`; `reuse_port` lets other sockets of this
/// process share the port, the kernel spreading connections between them.
fn listen_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

impl Bound {
    /// The listening socket, for serving outside the HTTP path (L4 modes). Needs a
    /// runtime.
    pub fn into_tcp(self) -> std::io::Result<TcpListener> {
        match self.sockets.into_iter().next() {
            Some(s) => TcpListener::from_std(s),
            None => Err(std::io::Error::other("listener has no socket")),
        }
    }

    /// One [`Accepting`] per worker, sharing the listener's connection cap and metrics.
    pub fn per_worker(self, shared: &Shared) -> Vec<Accepting> {
        let metrics = &shared.metrics;
        let closed = |reason: &str| {
            metrics
                .connections_closed
                .with_label_values(&[&*self.name, reason])
        };
        let common = Arc::new(Listener {
            accepted: metrics.connections.with_label_values(&[&self.name]),
            refused: metrics
                .connections_refused
                .with_label_values(&[&self.name, "limit"]),
            active: metrics.connections_active.with_label_values(&[&self.name]),
            stats: Arc::new(conn::ListenerStats {
                name: self.name.clone(),
                closed_first_request: closed("first_request_timeout"),
                closed_idle: closed("idle"),
            }),
            open: Arc::new(AtomicUsize::new(0)),
            name: self.name,
            addr: self.addr,
            tls: self.tls,
            max_connections: self.max_connections,
        });
        self.sockets
            .into_iter()
            .map(|socket| Accepting {
                listener: common.clone(),
                socket,
            })
            .collect()
    }
}

/// What a listener's workers share.
struct Listener {
    name: Arc<str>,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
    /// Open connections, across workers.
    open: Arc<AtomicUsize>,
    accepted: IntCounter,
    refused: IntCounter,
    active: IntGauge,
    stats: Arc<conn::ListenerStats>,
}

/// One worker's socket of a listener.
pub struct Accepting {
    listener: Arc<Listener>,
    socket: std::net::TcpListener,
}

/// Serves `listeners` on this worker's runtime until `stop` flips, then drains.
pub async fn serve_worker(
    listeners: Vec<Accepting>,
    shared: Arc<Shared>,
    builders: Arc<HttpBuilders>,
    stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let accepted = shared
        .metrics
        .worker_connections
        .with_label_values(&[&crate::workers::index().to_string()]);
    let mut serving = JoinSet::new();
    for l in listeners {
        serving.spawn(l.serve(
            shared.clone(),
            builders.clone(),
            stop.clone(),
            drain,
            accepted.clone(),
        ));
    }
    while serving.join_next().await.is_some() {}
}

impl Accepting {
    /// Accepts until `stop` flips, then waits up to `drain` for open connections and
    /// closes what is left.
    async fn serve(
        self,
        shared: Arc<Shared>,
        builders: Arc<HttpBuilders>,
        mut stop: watch::Receiver<bool>,
        drain: Duration,
        worker_accepted: IntCounter,
    ) {
        let l = &*self.listener;
        let tcp = match TcpListener::from_std(self.socket) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(listener = %l.name, error = %e, "cannot register the listening socket");
                return;
            }
        };
        let mut tasks = JoinSet::new();
        let local_port = l.addr.port();
        tracing::info!(listener = %l.name, addr = %l.addr, worker = crate::workers::index(), tls = l.tls.is_some(), max_connections = l.max_connections, "listening");
        loop {
            let accepted = tokio::select! {
                a = tcp.accept() => a,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                _ = stop.changed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and such: back off briefly instead of spinning.
                    tracing::warn!(listener = %l.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            l.accepted.inc();
            worker_accepted.inc();
            // At the cap, closing at once keeps the file descriptors for the ones served.
            let Some(slot) = io::Slot::take(&l.open, l.max_connections, &l.active) else {
                l.refused.inc();
                tracing::debug!(listener = %l.name, %peer, "connection refused: listener at max_connections");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let c = conn::Conn {
                shared: shared.clone(),
                builders: builders.clone(),
                listener: l.stats.clone(),
                peer,
                local_port,
                tls: l.tls.clone(),
                stop: stop.clone(),
            };
            tasks.spawn(c.run(stream, slot));
        }
        drop(tcp);
        tracing::info!(listener = %l.name, open = tasks.len(), "stopped accepting; draining connections");
        let drained = async { while tasks.join_next().await.is_some() {} };
        tokio::select! {
            _ = drained => tracing::info!(listener = %l.name, "all connections drained"),
            _ = tokio::time::sleep(drain) => tracing::warn!(listener = %l.name, "drain deadline reached; closing remaining connections"),
        }
    }
}
