//! Client-facing listeners: accept loops, TLS termination with SNI certificates and
//! ALPN, HTTP/1.1 and HTTP/2 (h2c by prior knowledge on plain listeners), and
//! graceful draining on shutdown.

mod conn;
mod protocol;

use crate::config::{ListenerConfig, ListenerMode};
use crate::state::Shared;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use protocol::HttpBuilders;

/// A bound listener, ready to serve.
pub struct Bound {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub mode: ListenerMode,
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
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
    #[error("listener `{name}`: {reason}")]
    Config { name: String, reason: String },
}

/// Binds every configured listener; fails without serving if any cannot bind.
pub async fn bind(configs: &[ListenerConfig], shared: &Shared) -> Result<Vec<Bound>, ListenError> {
    let mut out = Vec::with_capacity(configs.len());
    for c in configs {
        let tls = match &c.tls {
            Some(t) => {
                let opts = t.options().map_err(|e| ListenError::Config {
                    name: c.name.clone(),
                    reason: e.to_string(),
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
        });
    }
    Ok(out)
}

impl Bound {
    /// The listening socket, for serving outside the HTTP path (L4 modes).
    pub fn into_tcp(self) -> TcpListener {
        self.tcp
    }

    /// Accepts until `stop` flips, then waits up to `drain` for open connections.
    pub async fn serve(
        self,
        shared: Arc<Shared>,
        builders: Arc<HttpBuilders>,
        mut stop: watch::Receiver<bool>,
        drain: Duration,
    ) {
        let graceful = GracefulShutdown::new();
        let metrics = &shared.metrics;
        let accepted_total = metrics.connections.with_label_values(&[&self.name]);
        let active = metrics.connections_active.with_label_values(&[&self.name]);
        let local_port = self.addr.port();
        tracing::info!(listener = %self.name, addr = %self.addr, tls = self.tls.is_some(), "listening");
        loop {
            let accepted = tokio::select! {
                a = self.tcp.accept() => a,
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
            let _ = stream.set_nodelay(true);
            let c = conn::Conn {
                shared: shared.clone(),
                builders: builders.clone(),
                listener: self.name.clone(),
                active: active.clone(),
                peer,
                local_port,
                tls: self.tls.clone(),
                watcher: graceful.watcher(),
            };
            tokio::spawn(c.run(stream));
        }
        drop(self.tcp);
        let open = graceful.count();
        tracing::info!(listener = %self.name, open, "stopped accepting; draining connections");
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!(listener = %self.name, "all connections drained"),
            _ = tokio::time::sleep(drain) => tracing::warn!(listener = %self.name, "drain deadline reached; closing remaining connections"),
        }
    }
}
