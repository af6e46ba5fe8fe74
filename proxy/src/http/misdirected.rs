//! 421 Misdirected Request (RFC 9110 §15.5.20): on a TLS connection, a request whose
//! host is not served by the certificate the connection presented is refused, so the
//! SNI of one tenant cannot front a request for another.
//!
//! HTTP/2 connection coalescing (RFC 9113 §9.1.1) keeps working: a host is in scope
//! when it is the SNI itself, or when the certificate store serves that host with the
//! very certificate this connection presented (`a.test` and `b.test` on one
//! certificate, or any name under one `*.t.test`). Clients that sent no SNI (they
//! connected by IP address and got the default certificate) are not checked.

use super::errors::ProxyError;
use super::handler::ConnInfo;
use rustls::sign::CertifiedKey;
use std::fmt;
use std::sync::Arc;
use tollgate_certs::CertResolver;
use tollgate_routing::host;

/// The SNI a TLS client sent and the certificate it was given, captured once per
/// connection right after the handshake.
#[derive(Clone)]
pub struct PresentedCert {
    /// Normalised like request hosts: lowercase, no trailing dot.
    sni: Box<str>,
    /// `None` only if the certificate left the store during the handshake.
    key: Option<Arc<CertifiedKey>>,
}

impl PresentedCert {
    /// What a connection with `sni` was served from `certs`; `None` without SNI.
    pub fn capture(certs: &CertResolver, sni: Option<&str>) -> Option<Self> {
        let sni = host::normalize(sni?);
        let key = certs.current().resolve(Some(&sni));
        Some(PresentedCert {
            sni: sni.into(),
            key,
        })
    }

    /// Whether a request for `host` (normalised) belongs on this connection.
    ///
    /// Certificates are compared by leaf DER after a pointer check: a store swapped in
    /// since the handshake holds new copies of unchanged certificates, and a host whose
    /// certificate was replaced since is sent to a new connection.
    fn serves(&self, certs: &CertResolver, host: &str) -> bool {
        if host == &*self.sni {
            return true;
        }
        let (Some(presented), Some(for_host)) = (&self.key, certs.current().resolve(Some(host)))
        else {
            return false;
        };
        Arc::ptr_eq(presented, &for_host) || presented.cert.first() == for_host.cert.first()
    }
}

impl fmt::Debug for PresentedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedCert")
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

/// Refuses with 421 a request whose `host` (normalised) is not served by the
/// certificate of the TLS connection it came on.
pub fn check(conn: &ConnInfo, certs: &CertResolver, host: &str) -> Result<(), ProxyError> {
    match &conn.presented {
        Some(p) if !p.serves(certs, host) => Err(ProxyError::Misdirected),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_certs::{CertSource, CertStore};

    fn source(names: &[&str]) -> CertSource {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        tollgate_certs::self_signed(&names).expect("self-signed")
    }

    fn resolver(sources: &[CertSource]) -> CertResolver {
        CertResolver::new(CertStore::build(sources).expect("store"))
    }

    fn conn(presented: Option<PresentedCert>) -> ConnInfo {
        let mut c = ConnInfo::new("127.0.0.1:1".parse().expect("addr"), 443, true);
        c.presented = presented;
        c
    }

    #[test]
    fn other_tenants_host_is_misdirected() {
        let certs = resolver(&[source(&["a.test"]), source(&["b.test"])]);
        let c = conn(PresentedCert::capture(&certs, Some("A.test.")));
        assert!(check(&c, &certs, "a.test").is_ok());
        assert!(matches!(
            check(&c, &certs, "b.test"),
            Err(ProxyError::Misdirected)
        ));
        assert!(check(&c, &certs, "unknown.test").is_err());
    }

    #[test]
    fn names_of_one_certificate_coalesce() {
        let certs = resolver(&[source(&["a.test", "b.test"]), source(&["*.t.test"])]);
        let c = conn(PresentedCert::capture(&certs, Some("a.test")));
        assert!(check(&c, &certs, "b.test").is_ok());
        let w = conn(PresentedCert::capture(&certs, Some("x.t.test")));
        assert!(check(&w, &certs, "y.t.test").is_ok());
        assert!(check(&w, &certs, "a.test").is_err());
    }

    #[test]
    fn survives_a_store_swap_with_the_same_certificates() {
        let sources = [source(&["a.test", "b.test"])];
        let certs = resolver(&sources);
        let c = conn(PresentedCert::capture(&certs, Some("a.test")));
        certs.swap(CertStore::build(&sources).expect("store"));
        assert!(check(&c, &certs, "b.test").is_ok());
        // A new certificate for a.test: its own SNI still works on the old connection.
        certs.swap(CertStore::build(&[source(&["a.test", "b.test"])]).expect("store"));
        assert!(check(&c, &certs, "a.test").is_ok());
        assert!(check(&c, &certs, "b.test").is_err());
    }

    #[test]
    fn plain_and_sni_less_connections_are_not_checked() {
        let certs = resolver(&[source(&["a.test"])]);
        assert!(check(&conn(None), &certs, "b.test").is_ok());
        assert!(PresentedCert::capture(&certs, None).is_none());
    }
}
