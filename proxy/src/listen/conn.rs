//! One client connection: optional TLS handshake (bounded by a timeout), protocol
//! choice, and serving requests until it closes or the listener drains.

use super::protocol::HttpBuilders;
use crate::http::handler::{ConnInfo, handle};
use crate::state::Shared;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use prometheus::IntGauge;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

pub(super) struct Conn {
    pub shared: Arc<Shared>,
    pub builders: Arc<HttpBuilders>,
    pub listener: Arc<str>,
    pub active: IntGauge,
    pub peer: SocketAddr,
    pub local_port: u16,
    pub tls: Option<TlsAcceptor>,
    pub watcher: Watcher,
}

struct ActiveGuard(IntGauge);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Conn {
    pub async fn run(self, stream: TcpStream) {
        self.active.inc();
        let _active = ActiveGuard(self.active.clone());
        let info = Arc::new(ConnInfo::new(
            self.peer,
            self.local_port,
            self.tls.is_some(),
        ));
        let shared = self.shared.clone();
        let service = service_fn(move |req| {
            let shared = shared.clone();
            let info = info.clone();
            async move { Ok::<_, Infallible>(handle(shared, info, req).await) }
        });
        let Some(acceptor) = &self.tls else {
            let conn = self
                .builders
                .auto
                .serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = self.watcher.watch(conn.into_owned()).await {
                tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
            }
            return;
        };
        let handshakes = &self.shared.metrics.tls_handshakes;
        let timeout = Duration::from_millis(self.shared.limits.tls_handshake_timeout_ms);
        let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                handshakes.with_label_values(&[&self.listener, "ok"]).inc();
                tls
            }
            Ok(Err(e)) => {
                let result = if e.to_string().contains("no server certificate") {
                    "no_certificate"
                } else {
                    "error"
                };
                handshakes
                    .with_label_values(&[&self.listener, result])
                    .inc();
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                handshakes
                    .with_label_values(&[&self.listener, "timeout"])
                    .inc();
                return;
            }
        };
        let builder = match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => &self.builders.h2,
            _ => &self.builders.h1,
        };
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
        if let Err(e) = self.watcher.watch(conn.into_owned()).await {
            tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
    }
}
