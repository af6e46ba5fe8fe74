//! Builds the pooled hyper client of a cluster: TCP or TLS, HTTP/1.1 or HTTP/2.

use crate::http::body::RequestBody;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::ServerName;
use std::time::Duration;
use tollgate_routing::ClusterSpec;

/// The client type every cluster uses, whatever its protocol.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS client setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The smallest HTTP/1.1 read buffer hyper accepts.
const MIN_H1_BUFFER: usize = 8192;

/// A pooled client for `spec`; keep-alive for HTTP/1.1, multiplexed for HTTP/2.
/// A response head larger than `max_head_bytes` fails the request.
pub fn build(spec: &ClusterSpec, max_head_bytes: usize) -> Result<UpstreamClient, ClientError> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(Duration::from_millis(spec.connect_timeout_ms)));
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
    let connector = if spec.protocol.is_http2() {
        builder.enable_http2().wrap_connector(tcp)
    } else {
        builder.enable_http1().wrap_connector(tcp)
    };

    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .set_host(true)
        // hyper refuses a head that does not fit its read buffer ("message head is too large").
        .http1_max_buf_size(max_head_bytes.max(MIN_H1_BUFFER))
        .http2_max_header_list_size(u32::try_from(max_head_bytes).unwrap_or(u32::MAX));
    if spec.protocol.is_http2() {
        b.http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(20))
            .http2_initial_stream_window_size(1 << 20)
            .http2_initial_connection_window_size(4 << 20);
    }
    Ok(b.build(connector))
}

fn tls_config(spec: &ClusterSpec) -> Result<rustls::ClientConfig, ClientError> {
    tollgate_certs::client_config(spec.tls_ca_file.as_deref()).map_err(|reason| {
        ClientError::CaFile {
            path: spec.tls_ca_file.clone().unwrap_or_default(),
            reason,
        }
    })
}
