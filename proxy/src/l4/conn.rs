//! One L4 connection: learn the route (SNI from the ClientHello, or the port), check
//! the route's limits, connect to an endpoint, send the optional PROXY v2 header and
//! the bytes already read, then splice.

use super::client_hello::{self, HelloError, MAX_HELLO};
use super::limits::ConnLimits;
use super::{proxy_v2, splice};
use crate::clock::now_ms;
use crate::state::{ProxyState, Shared};
use crate::upstream::cluster::Cluster;
use http::HeaderMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tollgate_routing::{AppStatus, L4Route};

/// How a listener routes its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Mode {
    /// Peek the ClientHello's SNI, never terminate TLS.
    TlsPassthrough,
    /// One route per port, bytes as they come.
    Tcp,
}

/// Why a connection was closed before it reached a backend (a metrics label).
#[derive(Debug, Clone, Copy)]
enum Refused {
    NoRoute,
    BadHello,
    HelloTimeout,
    Suspended,
    Limit,
    ConnectFailed,
}

impl Refused {
    fn as_str(self) -> &'static str {
        match self {
            Refused::NoRoute => "no_route",
            Refused::BadHello => "bad_hello",
            Refused::HelloTimeout => "hello_timeout",
            Refused::Suspended => "app_suspended",
            Refused::Limit => "limit_reached",
            Refused::ConnectFailed => "connect_failed",
        }
    }
}

/// Serves one accepted connection to its end.
pub async fn handle(
    shared: Arc<Shared>,
    limits: Arc<ConnLimits>,
    mode: L4Mode,
    mut client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let state = shared.state.load_full();
    let metrics = &shared.metrics;
    let hello_timeout = Duration::from_millis(shared.limits.tls_handshake_timeout_ms);
    let (route, prefix) =
        match find_route(&state, mode, &mut client, local.port(), hello_timeout).await {
            Ok(found) => found,
            Err(why) => {
                metrics
                    .l4_connections
                    .with_label_values(&["-", why.as_str()])
                    .inc();
                return;
            }
        };
    let refuse = |why: Refused| {
        metrics
            .l4_connections
            .with_label_values(&[&route.id, why.as_str()])
            .inc()
    };
    if route.app.status == AppStatus::Suspended {
        return refuse(Refused::Suspended);
    }
    let Some(_slot) = limits.acquire(&route.id, route.max_connections) else {
        return refuse(Refused::Limit);
    };
    let Some(cluster) = state
        .upstreams
        .app(&route.app.id)
        .and_then(|a| a.cluster(&route.upstream))
    else {
        return refuse(Refused::NoRoute);
    };
    let Some((mut backend, in_flight)) = connect(cluster, &route).await else {
        return refuse(Refused::ConnectFailed);
    };
    metrics
        .l4_connections
        .with_label_values(&[&route.id, "ok"])
        .inc();
    let mut head = Vec::with_capacity(prefix.len() + 52);
    if route.proxy_protocol {
        head.extend_from_slice(&proxy_v2::encode(peer, local));
    }
    head.extend_from_slice(&prefix);
    let up = metrics
        .l4_bytes
        .with_label_values(&[&route.id, "client_to_upstream"]);
    let down = metrics
        .l4_bytes
        .with_label_values(&[&route.id, "upstream_to_client"]);
    if !head.is_empty() && backend.write_all(&head).await.is_err() {
        return;
    }
    up.inc_by(prefix.len() as u64);
    let active = metrics
        .l4_connections_active
        .with_label_values(&[&route.id]);
    active.inc();
    let result = splice::splice(client, backend, cluster.idle_timeout, up, down).await;
    active.dec();
    drop(in_flight);
    match result {
        Ok(m) => {
            tracing::debug!(route = %route.id, %peer, to_backend = m.to_backend, to_client = m.to_client, "l4 connection closed")
        }
        Err(e) => tracing::debug!(route = %route.id, %peer, error = %e, "l4 connection ended"),
    }
}

/// The route and the bytes read to find it (which the backend must still receive).
async fn find_route(
    state: &ProxyState,
    mode: L4Mode,
    client: &mut TcpStream,
    port: u16,
    hello_timeout: Duration,
) -> Result<(Arc<L4Route>, Vec<u8>), Refused> {
    if mode == L4Mode::Tcp {
        let route = state.snapshot.l4.raw(port).ok_or(Refused::NoRoute)?;
        return Ok((route.clone(), Vec::new()));
    }
    let deadline = Instant::now() + hello_timeout;
    let mut buf = Vec::with_capacity(2048);
    loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Err(_) => return Err(Refused::HelloTimeout),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(Refused::BadHello),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        match client_hello::parse(&buf) {
            Ok(info) => {
                let route = state
                    .snapshot
                    .l4
                    .passthrough(port, info.sni.as_deref())
                    .ok_or(Refused::NoRoute)?;
                return Ok((route.clone(), buf));
            }
            Err(HelloError::Incomplete) if buf.len() <= MAX_HELLO + 5 * 8 => continue,
            Err(_) => return Err(Refused::BadHello),
        }
    }
}

/// Connects to an available endpoint, trying others when a connect fails.
async fn connect(
    cluster: &Arc<Cluster>,
    route: &L4Route,
) -> Option<(TcpStream, crate::upstream::endpoint::InFlight)> {
    let timeout = Duration::from_millis(cluster.spec.connect_timeout_ms);
    let headers = HeaderMap::new();
    let mut exclude = None;
    for _ in 0..=cluster.spec.retry.max_retries {
        let idx = cluster.balancer.pick(
            &cluster.endpoints,
            &headers,
            &route.app.id,
            exclude,
            now_ms(),
        )?;
        let ep = &cluster.endpoints[idx];
        let host = ep
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = route.backend_port.or(ep.authority.port_u16()).unwrap_or(80);
        let in_flight = ep.begin();
        match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                ep.record_success();
                return Some((stream, in_flight));
            }
            Ok(Err(e)) => {
                tracing::warn!(route = %route.id, endpoint = %ep.address, error = %e, "l4 connect failed")
            }
            Err(_) => {
                tracing::warn!(route = %route.id, endpoint = %ep.address, "l4 connect timed out")
            }
        }
        ep.record_failure(&cluster.spec.outlier);
        exclude = Some(idx);
    }
    None
}
