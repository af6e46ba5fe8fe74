//! TLS test material and clients: self-signed certificates, client configs that
//! trust them, and handshakes with a chosen SNI.

use crate::BoxError;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A self-signed certificate and key in PEM.
#[derive(Clone)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCert {
    pub fn new(names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let src = tollgate_certs::self_signed(&names).expect("self-signed certificate");
        TestCert {
            cert_pem: src.cert_pem,
            key_pem: src.key_pem,
        }
    }

    /// A self-signed certificate valid from `not_before` to `not_after` (Unix seconds):
    /// one that expired, or one that will while a test runs.
    pub fn valid_between(names: &[&str], not_before: u64, not_after: u64) -> Self {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("certificate names");
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + std::time::Duration::from_secs(not_before);
        params.not_after = epoch + std::time::Duration::from_secs(not_after);
        let key = rcgen::KeyPair::generate().expect("key pair");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// DER of the certificate, to compare with what a server presented.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .expect("certificate PEM")
            .to_vec()
    }
}

/// Now, in Unix seconds.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A client config trusting `trusted`, offering `alpn`, TLS 1.2 and 1.3.
pub fn client_config(trusted: &[&TestCert], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client_config_versions(trusted, alpn, rustls::DEFAULT_VERSIONS)
}

/// As [`client_config`], limited to `versions`.
pub fn client_config_versions(
    trusted: &[&TestCert],
    alpn: &[&[u8]],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots
            .add(CertificateDer::from(c.der()))
            .expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// Connects to `addr` and completes a TLS handshake for `sni`.
pub async fn connect(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string())?;
    Ok(TlsConnector::from(cfg).connect(name, tcp).await?)
}

/// The leaf certificate the server presented.
pub fn peer_cert(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream
        .get_ref()
        .1
        .peer_certificates()?
        .first()
        .map(|c| c.to_vec())
}

/// Whether ALPN settled on HTTP/2.
pub fn is_h2(stream: &TlsStream<TcpStream>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}

/// Connects and handshakes with no SNI (rustls sends none for an IP address).
pub async fn connect_ip(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    Ok(TlsConnector::from(cfg).connect(name, tcp).await?)
}
