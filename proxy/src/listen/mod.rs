//! Client-facing listeners: accept loops with a connection cap, TLS termination with
//! SNI certificates and ALPN, HTTP/1.1 and HTTP/2 (h2c by prior knowledge on plain
//! listeners), first-request and idle timeouts, and graceful draining on shutdown.

mod conn;
mod idle;
mod io;
mod protocol;

use crate::config::{ListenerConfig, ListenerMode};
use crate::state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use protocol::HttpBuilders;

/// A bound listener, ready to serve.
pub struct Bound {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub mode: ListenerMode,
    tcp: TcpListener,
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

/// Binds every configured listener; fails without serving if any cannot bind.
pub async fn bind(configs: &[ListenerConfig], shared: &Shared) -> Result<Vec<Bound>, ListenError> {
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
        let tcp = TcpListener::bind(c.listen)
            .await
            .map_err(|source| ListenError::Bind {
                name: c.name.clone(),
                addr: c.listen,
                source,
            })?;
        let addr = tcp.local_addr().unwrap_or(c.listen);
        out.push(Bound {
            name: c.name.as_str().into(),
            addr,
            mode: c.mode,
            tcp,
            tls,
            max_connections: c.max_connections.unwrap_or(shared.limits.max_connections),
        });
    }
    Ok(out)
}

impl Bound {
    /// The listening socket, for serving outside the HTTP path (L4 modes).
    pub fn into_tcp(self) -> TcpListener {
        self.tcp
    }

    /// Accepts until `stop` flips, then waits up to `drain` for open connections and
    /// closes what is left.
    pub async fn serve(
        self,
        shared: Arc<Shared>,
        builders: Arc<HttpBuilders>,
        mut stop: watch::Receiver<bool>,
        drain: Duration,
    ) {
        let metrics = &shared.metrics;
        let accepted_total = metrics.connections.with_label_values(&[&self.name]);
        let refused = metrics
            .connections_refused
            .with_label_values(&[&self.name, "limit"]);
        let active = metrics.connections_active.with_label_values(&[&self.name]);
        let closed = |reason: &str| {
            metrics
                .connections_closed
                .with_label_values(&[&*self.name, reason])
        };
        let stats = Arc::new(conn::ListenerStats {
            name: self.name.clone(),
            closed_first_request: closed("first_request_timeout"),
            closed_idle: closed("idle"),
        });
        let open = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let local_port = self.addr.port();
        tracing::info!(listener = %self.name, addr = %self.addr, tls = self.tls.is_some(), max_connections = self.max_connections, "listening");
        loop {
            let accepted = tokio::select! {
                a = self.tcp.accept() => a,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                _ = stop.changed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and such: back off briefly instead of spinning.
                    tracing::warn!(listener = %self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            accepted_total.inc();
            // At the cap, closing at once keeps the file descriptors for the ones served.
            let Some(slot) = io::Slot::take(&open, self.max_connections, &active) else {
                refused.inc();
                tracing::debug!(listener = %self.name, %peer, "connection refused: listener at max_connections");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let c = conn::Conn {
                shared: shared.clone(),
                builders: builders.clone(),
                listener: stats.clone(),
                peer,
                local_port,
                tls: self.tls.clone(),
                stop: stop.clone(),
            };
            tasks.spawn(c.run(stream, slot));
        }
        drop(self.tcp);
        tracing::info!(listener = %self.name, open = tasks.len(), "stopped accepting; draining connections");
        let drained = async { while tasks.join_next().await.is_some() {} };
        tokio::select! {
            _ = drained => tracing::info!(listener = %self.name, "all connections drained"),
            _ = tokio::time::sleep(drain) => tracing::warn!(listener = %self.name, "drain deadline reached; closing remaining connections"),
        }
    }
}
