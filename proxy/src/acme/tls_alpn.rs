//! TLS-ALPN-01 (RFC 8737): the self-signed challenge certificate carrying the
//! critical `acmeIdentifier` extension, and the handshake for clients offering
//! `acme-tls/1`: completed with the challenge certificate, then closed (no HTTP is
//! served on `acme-tls/1`), or refused when the name has no such challenge.

use super::AcmeTable;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::StartHandshake;
use tollgate_routing::host;

/// The ALPN protocol of TLS-ALPN-01 validation.
pub const ACME_TLS_1: &[u8] = b"acme-tls/1";

/// Why a challenge certificate could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("challenge certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("challenge TLS config: {0}")]
    Tls(#[from] rustls::Error),
}

/// Whether the ClientHello offers `acme-tls/1`: a scan of the ALPN list, no allocation.
pub fn offers_acme_tls(hello: &ClientHello<'_>) -> bool {
    hello
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_1))
}

/// A handshake config presenting a self-signed certificate for exactly `hostname`
/// with the critical `acmeIdentifier` extension holding SHA-256 of
/// `key_authorization`, negotiating only `acme-tls/1`.
pub fn challenge_config(
    hostname: &str,
    key_authorization: &str,
) -> Result<Arc<ServerConfig>, BuildError> {
    let (cert, key) = challenge_cert(hostname, key_authorization)?;
    // Not `with_single_cert`: its check of the leaf refuses the critical
    // `acmeIdentifier` extension it does not know.
    let key = rustls::crypto::ring::sign::any_supported_type(&key)?;
    let certified = Arc::new(CertifiedKey::new(vec![cert], key));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ChallengeCert(certified)));
    config.alpn_protocols = vec![ACME_TLS_1.to_vec()];
    Ok(Arc::new(config))
}

/// The self-signed challenge certificate (a fresh P-256 key) and its key.
fn challenge_cert(
    hostname: &str,
    key_authorization: &str,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), rcgen::Error> {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    let mut params = CertificateParams::new(vec![hostname.to_string()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key_der))
}

/// The config to finish an `acme-tls/1` handshake with, and whether it is a
/// challenge: the challenge of the client's server name, or one that refuses (no
/// certificate: the client gets an alert). `None` when not even the refusal could
/// be built; drop the connection.
pub fn choose(table: &AcmeTable, server_name: Option<&str>) -> Option<(Arc<ServerConfig>, bool)> {
    let challenge = server_name
        .map(host::normalize)
        .and_then(|name| table.get(&name).and_then(|c| c.tls_config().cloned()));
    match challenge {
        Some(config) => Some((config, true)),
        None => refusal().map(|c| (c, false)),
    }
}

/// Completes the challenge handshake and closes the connection cleanly
/// (`close_notify`, then FIN).
pub async fn answer<IO>(start: StartHandshake<IO>, config: Arc<ServerConfig>) -> std::io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut tls = start.into_stream(config).await?;
    tls.shutdown().await
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A config whose resolver has no certificate: rustls refuses the handshake with
/// an alert. Built once.
fn refusal() -> Option<Arc<ServerConfig>> {
    static REFUSAL: OnceLock<Option<Arc<ServerConfig>>> = OnceLock::new();
    REFUSAL
        .get_or_init(|| {
            let config = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .ok()?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(NoCertificate));
            Some(Arc::new(config))
        })
        .clone()
}

/// Presents the challenge certificate whatever the client asks for (the config is
/// only chosen for the name it was built for).
#[derive(Debug)]
struct ChallengeCert(Arc<CertifiedKey>);

impl ResolvesServerCert for ChallengeCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn certificate_holds_the_critical_acme_identifier() {
        let config = challenge_config("alpn.example", "tok.thumb").expect("config");
        assert_eq!(config.alpn_protocols, vec![ACME_TLS_1.to_vec()]);
        let (der, _) = challenge_cert("alpn.example", "tok.thumb").expect("cert");
        let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("x509");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        let digest = ring::digest::digest(&ring::digest::SHA256, b"tok.thumb");
        let mut want = vec![0x04, 0x20];
        want.extend_from_slice(digest.as_ref());
        assert_eq!(ext.value, &want[..]);
        let san = cert
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        assert_eq!(san.value.general_names.len(), 1);
        assert_eq!(
            format!("{}", san.value.general_names[0]),
            "DNSName(alpn.example)"
        );
    }

    #[test]
    fn names_without_a_tls_challenge_are_refused() {
        let table = AcmeTable::default();
        let (_, answered) = choose(&table, Some("x.example")).expect("refusal");
        assert!(!answered);
        let (_, answered) = choose(&table, None).expect("refusal");
        assert!(!answered);
    }
}
