//! PEM certificate sources and their validation into servable keys.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls::{Error as TlsError, InconsistentKeys};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::error::{CertError, CertProblem, label};
use crate::store::{CertSummary, Expiry};
use crate::{clock, fingerprint, names};

/// Allowed clock skew for a leaf whose `notBefore` lies slightly in the future.
const NOT_BEFORE_SKEW_SECS: i64 = 5 * 60;

/// A certificate chain and private key in PEM form, as handed to
/// [`CertStore::build`](crate::CertStore::build).
#[derive(Clone)]
pub struct CertSource {
    /// Leaf certificate first, then any intermediates.
    pub cert_pem: String,
    /// The leaf's private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key_pem: String,
    /// Hostnames to serve this certificate for. `None` uses the certificate's
    /// DNS subject alternative names; each given name must be covered by the
    /// certificate (exactly, or by a SAN wildcard one label up).
    pub names: Option<Vec<String>>,
}

impl fmt::Debug for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertSource")
            .field("names", &self.names)
            .field("cert_pem_len", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A validated source, ready to be indexed by name.
pub(crate) struct Loaded {
    /// Normalised, de-duplicated names the key is served for.
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
    pub summary: CertSummary,
}

/// What the store needs from the leaf certificate.
struct LeafInfo {
    not_before: i64,
    not_after: i64,
    /// Normalised DNS SANs, or the subject CNs when there are no DNS SANs.
    covered: Vec<String>,
    has_dns_san: bool,
}

impl CertSource {
    /// Validates this source at time `now` (Unix seconds). `index` is its
    /// position, used to name it in errors before its names are known; `expiry`
    /// says whether a leaf outside its validity window is refused.
    pub(crate) fn load(
        &self,
        index: usize,
        now: i64,
        expiry: Expiry<'_>,
    ) -> Result<Loaded, CertError> {
        let unnamed = match &self.names {
            Some(given) => label(given),
            None => format!("source #{}", index + 1),
        };
        let fail = |cert: &str, problem| CertError::Source {
            cert: cert.to_owned(),
            problem,
        };

        let explicit = match &self.names {
            Some(given) => Some(normalize_all(given).map_err(|p| fail(&unnamed, p))?),
            None => None,
        };
        let chain = parse_chain(&self.cert_pem).map_err(|p| fail(&unnamed, p))?;
        let leaf = chain
            .first()
            .ok_or(CertProblem::NoCertificate)
            .and_then(|der| leaf_info(der))
            .map_err(|p| fail(&unnamed, p))?;
        for der in chain.iter().skip(1) {
            X509Certificate::from_der(der)
                .map_err(|e| fail(&unnamed, CertProblem::InvalidCertificate(e.to_string())))?;
        }

        let names = bound_names(explicit, &leaf).map_err(|p| fail(&unnamed, p))?;
        let cert = label(&names);
        let sha256_fingerprint = chain
            .first()
            .map(|der| fingerprint::sha256_hex(der))
            .unwrap_or_default();
        if let Err(p) = check_validity(&leaf, now)
            && !expiry.tolerates(&sha256_fingerprint)
        {
            return Err(fail(&cert, p));
        }
        let key = certified_key(chain, &self.key_pem).map_err(|p| fail(&cert, p))?;

        let summary = CertSummary {
            names: names.clone(),
            not_before_unix: leaf.not_before,
            not_after_unix: leaf.not_after,
            sha256_fingerprint,
        };
        Ok(Loaded {
            names,
            key: Arc::new(key),
            summary,
        })
    }
}

fn normalize_all(given: &[String]) -> Result<Vec<String>, CertProblem> {
    let mut out: Vec<String> = Vec::with_capacity(given.len());
    for raw in given {
        let name = names::normalize(raw).ok_or_else(|| CertProblem::InvalidName(raw.clone()))?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

fn parse_chain(cert_pem: &str) -> Result<Vec<CertificateDer<'static>>, CertProblem> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertProblem::InvalidPem(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertProblem::NoCertificate);
    }
    Ok(chain)
}

fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, CertProblem> {
    let invalid = |e: &dyn fmt::Display| CertProblem::InvalidCertificate(e.to_string());
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| invalid(&e))?;
    let mut covered = Vec::new();
    if let Some(san) = cert.subject_alternative_name().map_err(|e| invalid(&e))? {
        for general in &san.value.general_names {
            if let GeneralName::DNSName(dns) = general {
                match names::normalize(dns) {
                    Some(n) if !covered.contains(&n) => covered.push(n),
                    Some(_) => {}
                    None => {
                        tracing::warn!(san = %dns, "ignoring unsupported DNS name in certificate")
                    }
                }
            }
        }
    }
    let has_dns_san = !covered.is_empty();
    if !has_dns_san {
        covered.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .filter_map(names::normalize),
        );
    }
    Ok(LeafInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        covered,
        has_dns_san,
    })
}

/// The names to bind: explicit ones if given (each must be covered), else the DNS SANs.
fn bound_names(explicit: Option<Vec<String>>, leaf: &LeafInfo) -> Result<Vec<String>, CertProblem> {
    let Some(explicit) = explicit else {
        return if leaf.has_dns_san {
            Ok(leaf.covered.clone())
        } else {
            Err(CertProblem::NoNames)
        };
    };
    if explicit.is_empty() {
        return Err(CertProblem::NoNames);
    }
    for name in &explicit {
        if !leaf
            .covered
            .iter()
            .any(|pattern| names::covers(pattern, name))
        {
            return Err(CertProblem::NameNotCovered {
                name: name.clone(),
                covered: if leaf.covered.is_empty() {
                    "nothing".to_owned()
                } else {
                    leaf.covered.join(", ")
                },
            });
        }
    }
    Ok(explicit)
}

fn check_validity(leaf: &LeafInfo, now: i64) -> Result<(), CertProblem> {
    if leaf.not_after < now {
        return Err(CertProblem::Expired(clock::rfc3339(leaf.not_after)));
    }
    if leaf.not_before > now.saturating_add(NOT_BEFORE_SKEW_SECS) {
        return Err(CertProblem::NotYetValid(clock::rfc3339(leaf.not_before)));
    }
    Ok(())
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key_pem: &str,
) -> Result<CertifiedKey, CertProblem> {
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| match e {
        pem::Error::NoItemsFound => CertProblem::NoPrivateKey,
        other => CertProblem::InvalidPem(other.to_string()),
    })?;
    let signer =
        any_supported_type(&key).map_err(|e| CertProblem::UnsupportedKey(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(CertProblem::KeyMismatch)
        }
        Err(TlsError::InconsistentKeys(_)) => Err(CertProblem::KeyUnverifiable),
        Err(other) => Err(CertProblem::InvalidCertificate(other.to_string())),
    }
}
