//! The HTTP/1.1 client the proxy uses to reach the control service's HTTP API
//! (snapshot and event polling, usage batches): plain or TLS, pooled.

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// A client for `http://` and `https://` control URLs, trusting `ca_file` (web PKI
/// roots otherwise), with `connect_timeout` on each new connection.
pub fn client<B>(
    ca_file: Option<&str>,
    connect_timeout: Duration,
) -> Result<Client<HttpsConnector<HttpConnector>, B>, String>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let tls = tollgate_certs::client_config(ca_file).map_err(|e| format!("ca_file: {e}"))?;
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}
