//! TLS client settings for the proxy's own outbound connections (upstreams, identity
//! providers): the CAs to trust, on the ring provider.

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;

/// A client config trusting the PEM CAs in `ca_file`, or the web PKI roots when `None`.
///
/// The error says what is wrong with the file, for the caller to wrap with context.
pub fn client_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| e.to_string())?
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            if certs.is_empty() {
                return Err("no certificate in file".into());
            }
            for c in certs {
                roots.add(c).map_err(|e| e.to_string())?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
