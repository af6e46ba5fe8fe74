//! The client of a cluster: TCP or TLS, HTTP/1.1 or HTTP/2.
//!
//! Both keep their connections per endpoint: HTTP/1.1 in an [`H1Pool`] of keep-alive
//! connections, each driven by the request using it; HTTP/2 in an [`H2Pool`], several
//! connections when one connection's `SETTINGS_MAX_CONCURRENT_STREAMS` is not enough.
//! Both open connections with the same connector, so TLS settings, timeouts and socket
//! options are the same.

use super::endpoint::{Endpoint, InFlight};
use super::h1_pool;
use super::h2_conn::{self, Signal, Signalled};
use super::h2_pool::StreamSlot;
use crate::coalesce::Coalesced;
use crate::http::body::RequestBody;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::{
    FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tollgate_routing::ClusterSpec;
use tower_service::Service;

#[cfg(doc)]
use super::{h1_pool::H1Pool, h2_pool::H2Pool};

/// Why a cluster's client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS client setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a connection to an endpoint could not be opened; shared by the requests that
/// waited for it.
pub type ConnectError = Arc<dyn std::error::Error + Send + Sync>;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection: TCP, TLS or the HTTP/2 handshake failed, or a new HTTP/1.1
    /// connection closed before the request was written (nothing was sent).
    #[error("connecting to the upstream failed")]
    Connect(#[source] ConnectError),
    /// The HTTP/1.1 exchange failed after the request was handed to a connection.
    #[error("HTTP/1.1 request failed")]
    Http1(#[source] hyper::Error),
    /// The HTTP/2 exchange failed after the request was handed to a connection.
    #[error("HTTP/2 request failed")]
    Http2(#[source] hyper::Error),
}

impl Error {
    /// The request never reached the upstream: no connection could be opened.
    pub fn is_connect(&self) -> bool {
        match self {
            Error::Connect(_) => true,
            Error::Http1(_) | Error::Http2(_) => false,
        }
    }
}

/// The connection type of every cluster, plain or TLS.
pub(super) type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// The smallest HTTP/1.1 read buffer hyper accepts.
const MIN_H1_BUFFER: usize = 8192;
/// A connection with no request for this long is closed, HTTP/1.1 or HTTP/2.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A cluster's client, whatever its protocol.
#[derive(Debug)]
pub struct UpstreamClient {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Http1(H1Dialer),
    Http2(Dialer),
}

/// Opens the HTTP/1.1 connections of a cluster's endpoints.
#[derive(Debug)]
pub(super) struct H1Dialer {
    connector: HttpsConnector<HttpConnector>,
    h1: http1::Builder,
    scheme: Scheme,
    /// TCP connect (itself within the cluster's `connect_timeout_ms`) and TLS together.
    handshake_timeout: Duration,
}

/// Opens the HTTP/2 connections of a cluster's endpoints.
#[derive(Debug, Clone)]
pub(super) struct Dialer {
    connector: HttpsConnector<HttpConnector>,
    h2: http2::Builder<TokioExecutor>,
    scheme: Scheme,
    /// TCP connect (itself within the cluster's `connect_timeout_ms`), TLS and the HTTP/2
    /// handshake together, so a stuck handshake cannot hold the endpoint's one connect;
    /// and again for the peer's first SETTINGS.
    pub(super) handshake_timeout: Duration,
    pub(super) max_connections: usize,
}

impl UpstreamClient {
    /// Sends `req` to the endpoint of `in_flight`, which keeps the stream's place on
    /// its HTTP/2 connection until the response ends.
    pub async fn request(
        &self,
        in_flight: &mut InFlight,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, Error> {
        let (resp, slot) = self.send(in_flight.endpoint(), req).await?;
        if let Some(slot) = slot {
            in_flight.hold(slot);
        }
        Ok(resp)
    }

    /// Sends `req` to `ep`; on HTTP/2, the stream's place on its connection comes back
    /// with the response, to hold until the response has been read.
    pub async fn send(
        &self,
        ep: &Endpoint,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<StreamSlot>), Error> {
        match &self.kind {
            Kind::Http1(dialer) => Ok((ep.h1.send(dialer, &ep.authority, req).await?, None)),
            Kind::Http2(dialer) => {
                let (resp, slot) = ep.h2.send(dialer, &ep.authority, req).await?;
                Ok((resp, Some(slot)))
            }
        }
    }
}

#[cfg(test)]
impl UpstreamClient {
    /// The HTTP/1.1 dialer, for the pool's tests.
    pub(super) fn h1_dialer(&self) -> Option<&H1Dialer> {
        match &self.kind {
            Kind::Http1(dialer) => Some(dialer),
            Kind::Http2(_) => None,
        }
    }
}

impl H1Dialer {
    pub(super) fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// A new HTTP/1.1 connection to `authority`, not yet driven.
    pub(super) async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<h1_pool::Conn, ConnectError> {
        let handshake = async {
            let io = dial(&self.connector, &self.scheme, authority).await?;
            // Unbatched: only a head and a short body are joined into one write.
            let (send, conn) = self
                .h1
                .handshake(Coalesced::through(io))
                .await
                .map_err(|e| Arc::new(e) as ConnectError)?;
            Ok(h1_pool::Conn::new(send, Box::pin(conn.with_upgrades())))
        };
        within(self.handshake_timeout, handshake).await
    }
}

/// `connect`'s result, or a timeout error once `limit` has passed.
async fn within<T>(
    limit: Duration,
    connect: impl Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    match tokio::time::timeout(limit, connect).await {
        Ok(result) => result,
        Err(elapsed) => Err(Arc::new(elapsed)),
    }
}

/// A new TCP or TLS connection to `authority`.
async fn dial(
    connector: &HttpsConnector<HttpConnector>,
    scheme: &Scheme,
    authority: &Authority,
) -> Result<Io, ConnectError> {
    let uri = Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| Arc::new(e) as ConnectError)?;
    let mut connector = connector.clone();
    std::future::poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(ConnectError::from)?;
    connector.call(uri).await.map_err(ConnectError::from)
}

impl Dialer {
    /// A new HTTP/2 connection to `authority`, not yet driven.
    pub(super) async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<
        (
            http2::SendRequest<RequestBody>,
            h2_conn::Connection,
            Arc<Signal>,
        ),
        ConnectError,
    > {
        let handshake = async {
            let io = dial(&self.connector, &self.scheme, authority).await?;
            let (io, signal) = Signalled::new(io);
            let (send, conn) = self
                .h2
                .handshake(io)
                .await
                .map_err(|e| Arc::new(e) as ConnectError)?;
            Ok((send, conn, signal))
        };
        within(self.handshake_timeout, handshake).await
    }
}

/// The client for `spec`. A response head larger than `max_head_bytes` fails the request.
pub fn build(spec: &ClusterSpec, max_head_bytes: usize) -> Result<UpstreamClient, ClientError> {
    let connect_timeout = Duration::from_millis(spec.connect_timeout_ms);
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_keepalive(Some(Duration::from_secs(60)));

    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(spec)?)
        .https_or_http();
    let builder = match &spec.tls_server_name {
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|_| ClientError::ServerName(name.clone()))?;
            builder.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let max_header_list = u32::try_from(max_head_bytes).unwrap_or(u32::MAX);

    let scheme = if spec.protocol.is_tls() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    if spec.protocol.is_http2() {
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .max_header_list_size(max_header_list)
            // No stream before the peer's SETTINGS: its limit is what the pool counts on.
            .initial_max_send_streams(0);
        let dialer = Dialer {
            connector: builder.enable_http2().wrap_connector(tcp),
            h2,
            scheme,
            handshake_timeout: connect_timeout * 2,
            max_connections: spec.max_connections_per_endpoint.max(1) as usize,
        };
        return Ok(UpstreamClient {
            kind: Kind::Http2(dialer),
        });
    }

    let mut h1 = http1::Builder::new();
    // hyper refuses a head that does not fit its read buffer ("message head is too large").
    h1.max_buf_size(max_head_bytes.max(MIN_H1_BUFFER));
    let dialer = H1Dialer {
        connector: builder.enable_http1().wrap_connector(tcp),
        h1,
        scheme,
        handshake_timeout: connect_timeout * 2,
    };
    Ok(UpstreamClient {
        kind: Kind::Http1(dialer),
    })
}

fn tls_config(spec: &ClusterSpec) -> Result<rustls::ClientConfig, ClientError> {
    tollgate_certs::client_config(spec.tls_ca_file.as_deref()).map_err(|reason| {
        ClientError::CaFile {
            path: spec.tls_ca_file.clone().unwrap_or_default(),
            reason,
        }
    })
}
