//! TLS client settings for the proxy's own outbound connections (upstreams, identity
//! providers): the CAs to trust, on the ring provider.
//!
//! Every upstream cluster has a config of its own, and a proxy may run ten thousand:
//! what a config may share is shared. The web PKI roots and the crypto provider are
//! built once; configs trusting the web PKI share one session cache (configs with a
//! CA file of their own get a small cache each, so that a session verified under one
//! trust never resumes under another).

use rustls::RootCertStore;
use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::sync::{Arc, LazyLock};

/// Sessions the shared web PKI cache holds (rustls' default for one config).
const WEB_PKI_SESSIONS: usize = 256;
/// Sessions each config with its own CA file holds.
const OWN_CA_SESSIONS: usize = 32;

static WEB_PKI_ROOTS: LazyLock<Arc<RootCertStore>> = LazyLock::new(|| {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Arc::new(roots)
});

static WEB_PKI_RESUMPTION: LazyLock<Arc<ClientSessionMemoryCache>> =
    LazyLock::new(|| Arc::new(ClientSessionMemoryCache::new(WEB_PKI_SESSIONS)));

static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// A client config trusting the PEM CAs in `ca_file`, or the web PKI roots when `None`.
///
/// The error says what is wrong with the file, for the caller to wrap with context.
pub fn client_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let (roots, resumption) = match ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
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
            (
                Arc::new(roots),
                Resumption::in_memory_sessions(OWN_CA_SESSIONS),
            )
        }
        None => (
            WEB_PKI_ROOTS.clone(),
            Resumption::store(WEB_PKI_RESUMPTION.clone()),
        ),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(PROVIDER.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = resumption;
    Ok(config)
}
