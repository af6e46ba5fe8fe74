//! Building a rustls `ServerConfig` (ring provider) around a [`CertResolver`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::default_provider;
use rustls::{ProtocolVersion, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use crate::error::CertError;
use crate::resolver::CertResolver;

static TLS13_AND_TLS12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsVersion {
    fn protocol(self) -> ProtocolVersion {
        match self {
            TlsVersion::Tls12 => ProtocolVersion::TLSv1_2,
            TlsVersion::Tls13 => ProtocolVersion::TLSv1_3,
        }
    }

    /// The versions enabled when this is the minimum, newest first.
    fn enabled(self) -> &'static [&'static SupportedProtocolVersion] {
        match self {
            TlsVersion::Tls12 => TLS13_AND_TLS12,
            TlsVersion::Tls13 => TLS13_ONLY,
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

impl FromStr for TlsVersion {
    type Err = CertError;

    /// Accepts `1.2` / `1.3`, optionally prefixed by `tls`, `tlsv` or `TLSv`.
    fn from_str(s: &str) -> Result<Self, CertError> {
        let lower = s.trim().to_ascii_lowercase();
        let bare = lower
            .strip_prefix("tlsv")
            .or_else(|| lower.strip_prefix("tls"))
            .unwrap_or(&lower);
        match bare {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            _ => Err(CertError::UnknownTlsVersion(s.to_owned())),
        }
    }
}

/// Listener TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Lowest accepted version.
    pub min_version: TlsVersion,
    /// Allowed cipher suites by rustls name (e.g. `TLS13_AES_128_GCM_SHA256`);
    /// `None` keeps the ring provider's defaults.
    pub cipher_suites: Option<Vec<String>>,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<Vec<u8>>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            min_version: TlsVersion::Tls12,
            cipher_suites: None,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// A server config that picks certificates through `resolver`, with no client auth.
///
/// Errors on an unknown cipher suite name, or when the chosen suites leave an
/// enabled TLS version without any suite.
pub fn server_config(
    resolver: Arc<CertResolver>,
    opts: &TlsOptions,
) -> Result<Arc<ServerConfig>, CertError> {
    let mut provider = default_provider();
    if let Some(wanted) = &opts.cipher_suites {
        provider.cipher_suites = select_suites(&provider.cipher_suites, wanted)?;
    }
    check_versions(&provider, opts.min_version)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(opts.min_version.enabled())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols.clone_from(&opts.alpn);
    Ok(Arc::new(config))
}

/// Names of the ring provider's cipher suites, as accepted in [`TlsOptions::cipher_suites`].
pub fn known_cipher_suites() -> Vec<String> {
    default_provider()
        .cipher_suites
        .iter()
        .map(suite_name)
        .collect()
}

fn suite_name(suite: &SupportedCipherSuite) -> String {
    format!("{:?}", suite.suite())
}

/// The suites from `all` named in `wanted`, in `wanted`'s order (case-insensitive).
fn select_suites(
    all: &[SupportedCipherSuite],
    wanted: &[String],
) -> Result<Vec<SupportedCipherSuite>, CertError> {
    let mut chosen: Vec<SupportedCipherSuite> = Vec::with_capacity(wanted.len());
    for name in wanted {
        let suite = all
            .iter()
            .find(|s| suite_name(s).eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| CertError::UnknownCipherSuite {
                name: name.clone(),
                known: all.iter().map(suite_name).collect::<Vec<_>>().join(", "),
            })?;
        if !chosen.contains(suite) {
            chosen.push(*suite);
        }
    }
    Ok(chosen)
}

fn check_versions(provider: &CryptoProvider, min: TlsVersion) -> Result<(), CertError> {
    for version in [TlsVersion::Tls13, TlsVersion::Tls12] {
        let enabled = min
            .enabled()
            .iter()
            .any(|v| v.version == version.protocol());
        let has_suite = provider
            .cipher_suites
            .iter()
            .any(|s| s.version().version == version.protocol());
        if enabled && !has_suite {
            return Err(CertError::NoSuiteForVersion(version));
        }
        if !enabled && has_suite {
            tracing::warn!(
                min_version = %min,
                "TLS {version} cipher suites configured but TLS {version} is disabled"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!("1.2".parse::<TlsVersion>().ok(), Some(TlsVersion::Tls12));
        assert_eq!(
            "TLSv1.3".parse::<TlsVersion>().ok(),
            Some(TlsVersion::Tls13)
        );
        assert!(matches!(
            "1.1".parse::<TlsVersion>(),
            Err(CertError::UnknownTlsVersion(v)) if v == "1.1"
        ));
    }

    #[test]
    fn known_suites_use_rustls_names() {
        let known = known_cipher_suites();
        assert!(known.iter().any(|s| s == "TLS13_AES_128_GCM_SHA256"));
        assert!(
            known
                .iter()
                .any(|s| s == "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
        );
    }
}
