//! HTTP/2 connections to the target: h2c with prior knowledge for `http://`, TLS with
//! ALPN `h2` for `https://` (trusting only the `--ca` file).

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body_util::Full;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where and how to connect, from `--url`, `--connect` and `--ca`.
#[derive(Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    /// Parses the URL and resolves its address unless `connect` gives one.
    pub async fn new(
        url: &str,
        connect: Option<SocketAddr>,
        ca: Option<&Path>,
    ) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("--url {url}: {e}"))?;
        let scheme = uri.scheme().cloned().ok_or("--url needs a scheme")?;
        let authority = uri.authority().cloned().ok_or("--url needs a host")?;
        let tls_wanted = match scheme.as_str() {
            "http" => false,
            "https" => true,
            other => return Err(format!("--url scheme {other}: use http or https")),
        };
        let port = authority
            .port_u16()
            .unwrap_or(if tls_wanted { 443 } else { 80 });
        let addr = match connect {
            Some(a) => a,
            None => tokio::net::lookup_host((authority.host(), port))
                .await
                .map_err(|e| format!("resolve {authority}: {e}"))?
                .next()
                .ok_or_else(|| format!("{authority} resolves to nothing"))?,
        };
        let tls = if tls_wanted {
            let ca = ca.ok_or("https:// needs --ca")?;
            let name = ServerName::try_from(authority.host().to_owned())
                .map_err(|e| format!("server name {}: {e}", authority.host()))?;
            Some((connector(ca)?, name))
        } else {
            None
        };
        Ok(Target {
            scheme,
            authority,
            addr,
            tls,
        })
    }

    /// Opens one HTTP/2 connection; its driver runs as a spawned task.
    pub async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let builder = http2::Builder::new(TokioExecutor::new());
        match &self.tls {
            None => {
                let (send, conn) = builder
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("HTTP/2 handshake with {}: {e}", self.addr))?;
                tokio::spawn(conn);
                Ok(send)
            }
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.addr))?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(format!("{} did not choose h2 in ALPN", self.addr));
                }
                let (send, conn) = builder
                    .handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| format!("HTTP/2 handshake with {}: {e}", self.addr))?;
                tokio::spawn(conn);
                Ok(send)
            }
        }
    }
}

/// A TLS client trusting the certificates in `ca` only, offering `h2`.
fn connector(ca: &Path) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS config: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
