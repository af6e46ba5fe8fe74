//! The accept loop of an L4 listener, with draining on shutdown.

use super::conn::{self, L4Mode};
use super::limits::ConnLimits;
use crate::state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// Accepts until `stop` flips, then waits up to `drain` for open connections.
pub async fn serve(
    name: Arc<str>,
    tcp: TcpListener,
    mode: L4Mode,
    shared: Arc<Shared>,
    limits: Arc<ConnLimits>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let local = tcp.local_addr().ok();
    tracing::info!(listener = %name, addr = ?local, ?mode, "listening (L4)");
    let open = Arc::new((AtomicUsize::new(0), Notify::new()));
    let accepted_total = shared.metrics.connections.with_label_values(&[&name]);
    loop {
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        accepted_total.inc();
        let _ = stream.set_nodelay(true);
        let local: SocketAddr = stream.local_addr().unwrap_or(peer);
        let (shared, limits, open) = (shared.clone(), limits.clone(), open.clone());
        open.0.fetch_add(1, SeqCst);
        tokio::spawn(async move {
            conn::handle(shared, limits, mode, stream, peer, local).await;
            if open.0.fetch_sub(1, SeqCst) == 1 {
                open.1.notify_waiters();
            }
        });
    }
    drop(tcp);
    let wait_empty = async {
        while open.0.load(SeqCst) > 0 {
            let notified = open.1.notified();
            if open.0.load(SeqCst) == 0 {
                break;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(drain, wait_empty).await.is_err() {
        tracing::warn!(listener = %name, "drain deadline reached; closing remaining L4 connections");
    }
}
