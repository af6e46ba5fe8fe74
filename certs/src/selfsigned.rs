//! Self-signed certificates for bootstrapping and tests.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use x509_parser::time::ASN1Time;

use crate::clock;
use crate::error::{CertError, label};
use crate::source::CertSource;

const DAY_SECS: i64 = 86_400;

/// A fresh ECDSA P-256 self-signed certificate for `names` (as DNS SANs),
/// valid from one day ago to one year from now. `names` of the source is `None`.
pub fn self_signed(names: &[String]) -> Result<CertSource, CertError> {
    let fail = |reason: String| CertError::SelfSigned {
        names: label(names),
        reason,
    };
    let first = names
        .first()
        .ok_or_else(|| fail("at least one name is required".to_owned()))?;
    let now = clock::now_unix();
    let at = |secs: i64| {
        ASN1Time::from_timestamp(secs)
            .map(|t| t.to_datetime())
            .map_err(|e| fail(e.to_string()))
    };

    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| fail(e.to_string()))?;
    params.not_before = at(now - DAY_SECS)?;
    params.not_after = at(now + 365 * DAY_SECS)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, first.as_str());
    params.distinguished_name = dn;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| fail(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    Ok(CertSource {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        names: None,
    })
}
