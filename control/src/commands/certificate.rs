//! Certificate commands (aggregate `certificate/<cert_id>`): upload, rotate, remove.
//!
//! A certificate is a PEM chain, its private key and the names it is served for.
//! Without explicit names, its DNS subject alternative names are stored. Every
//! certificate command builds all certificates of the result the way a proxy does
//! (422 with the reason when one does not parse, the key does not match, a name is
//! not covered, it has expired or is not yet valid, or two certificates claim the
//! same name). A certificate for names no app has bound is fine: binding is
//! separate. The key PEM never leaves the service except in the feed to proxies.

use super::check::source;
use super::{CommandError, Commands, Ctx, Plan, Target, Written, check_id};
use crate::ids;
use serde::{Deserialize, Serialize};
use tollgate_certs::{CertSource, CertStore, Expiry};
use tollgate_routing::{EdgeCert, EdgeConfig, EdgeEvent};

const KIND: &str = "certificate";

/// `POST /api/v1/certificates`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadCert {
    /// Generated (`c_…`) when absent.
    #[serde(default)]
    pub id: Option<String>,
    pub cert_pem: String,
    pub key_pem: String,
    /// Names to serve it for; its DNS SANs when absent.
    #[serde(default)]
    pub names: Option<Vec<String>>,
}

/// A certificate as the API shows it: never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertView {
    pub id: String,
    pub names: Vec<String>,
    /// The leaf's `notAfter`, Unix seconds (absent when it does not load).
    pub not_after_unix: Option<i64>,
    /// Lowercase hex SHA-256 of the leaf's DER.
    pub sha256_fingerprint: Option<String>,
    /// Whether the leaf is outside its validity window now (it lapsed since upload);
    /// proxies still serve it for its names until it is rotated.
    pub expired: bool,
    /// Why it would not load at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Loads one certificate for display.
pub fn cert_view(cert: &EdgeCert) -> CertView {
    match CertStore::build_with(&[source(cert)], Expiry::Serve) {
        Ok(store) => {
            let s = store.summaries().into_iter().next();
            let now = super::now_unix();
            CertView {
                id: cert.id.clone(),
                names: s
                    .as_ref()
                    .map_or_else(|| cert.names.clone(), |s| s.names.clone()),
                not_after_unix: s.as_ref().map(|s| s.not_after_unix),
                expired: s.as_ref().is_some_and(|s| s.out_of_window(now)),
                sha256_fingerprint: s.map(|s| s.sha256_fingerprint),
                error: None,
            }
        }
        Err(e) => CertView {
            id: cert.id.clone(),
            names: cert.names.clone(),
            not_after_unix: None,
            sha256_fingerprint: None,
            expired: false,
            error: Some(e.to_string()),
        },
    }
}

/// The names to store: the given ones (normalised), or the certificate's DNS SANs.
fn names_for(req: &UploadCert) -> Result<Vec<String>, CommandError> {
    if let Some(names) = &req.names {
        if names.is_empty() {
            return Err(CommandError::BadRequest(
                "`names` must not be empty; leave it out to use the certificate's names".into(),
            ));
        }
        let mut out: Vec<String> = Vec::new();
        for n in names.iter().map(|n| ids::normalize_hostname(n)) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        return Ok(out);
    }
    let store = CertStore::build(&[CertSource {
        cert_pem: req.cert_pem.clone(),
        key_pem: req.key_pem.clone(),
        names: None,
    }])
    .map_err(|e| CommandError::invalid(e.to_string()))?;
    Ok(store
        .summaries()
        .into_iter()
        .flat_map(|s| s.names)
        .collect())
}

/// Certificates issued over ACME change only through their hostname's lifecycle.
fn refuse_managed(config: &EdgeConfig, id: &str) -> Result<(), CommandError> {
    match config
        .managed_tls
        .values()
        .find(|m| m.cert_id.as_deref() == Some(id))
    {
        Some(m) => Err(CommandError::Conflict(format!(
            "certificate `{id}` is issued over ACME for `{}`; it renews itself",
            m.hostname
        ))),
        None => Ok(()),
    }
}

fn with_certs<T>(plan: Plan<T>) -> Plan<T> {
    Plan {
        check_certs: true,
        ..plan
    }
}

impl Commands {
    /// Uploads a certificate under a new id.
    pub async fn upload_certificate(
        &self,
        ctx: &Ctx,
        req: UploadCert,
    ) -> Result<Written<CertView>, CommandError> {
        let generated = req.id.is_none();
        let id = match &req.id {
            Some(id) => {
                check_id("certificate id", id)?;
                id.clone()
            }
            None => ids::generate("c_")?,
        };
        let names = names_for(&req)?;
        let cert = EdgeCert {
            id: id.clone(),
            cert_pem: req.cert_pem,
            key_pem: req.key_pem,
            names,
        };
        self.execute(ctx, Target::with_id(KIND, &id, generated), |config| {
            if config.certificates.contains_key(&id) {
                return Err(CommandError::Conflict(format!(
                    "certificate `{id}` already exists; rotate it instead"
                )));
            }
            if let Some(n) = cert.names.iter().find(|n| config.managed_tls.contains_key(*n)) {
                return Err(CommandError::Conflict(format!(
                    "`{n}` gets its certificate over ACME; take it off first (DELETE /api/v1/hostnames/{n}/tls)"
                )));
            }
            let view = cert_view(&cert);
            Ok(with_certs(Plan::new(
                vec![EdgeEvent::CertificateUploaded { cert }],
                view,
            )))
        })
        .await
    }

    /// Replaces a certificate's chain and key; it keeps its names, which the new
    /// certificate must cover.
    pub async fn rotate_certificate(
        &self,
        ctx: &Ctx,
        id: &str,
        cert_pem: String,
        key_pem: String,
    ) -> Result<Written<CertView>, CommandError> {
        self.execute(ctx, Target::new(KIND, id), |config| {
            let current = config
                .certificates
                .get(id)
                .ok_or_else(|| CommandError::NotFound(format!("no certificate `{id}`")))?;
            refuse_managed(config, id)?;
            let next = EdgeCert {
                cert_pem: cert_pem.clone(),
                key_pem: key_pem.clone(),
                ..current.clone()
            };
            let view = cert_view(&next);
            if *current == next {
                return Ok(Plan::noop(view));
            }
            Ok(with_certs(Plan::new(
                vec![EdgeEvent::CertificateRotated {
                    cert_id: id.to_string(),
                    cert_pem,
                    key_pem,
                }],
                view,
            )))
        })
        .await
    }

    /// Removes a certificate; answers with it as it was.
    pub async fn remove_certificate(
        &self,
        ctx: &Ctx,
        id: &str,
    ) -> Result<Written<CertView>, CommandError> {
        self.execute(ctx, Target::new(KIND, id), |config| {
            let current = config
                .certificates
                .get(id)
                .ok_or_else(|| CommandError::NotFound(format!("no certificate `{id}`")))?;
            refuse_managed(config, id)?;
            Ok(with_certs(Plan::new(
                vec![EdgeEvent::CertificateRemoved {
                    cert_id: id.to_string(),
                }],
                cert_view(current),
            )))
        })
        .await
    }
}
