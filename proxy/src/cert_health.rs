//! Certificate health: what the serving certificate store holds that needs a human.
//!
//! A certificate that lapses keeps being served (its clients see the expiry, no other
//! tenant notices); this module makes that visible instead: gauges of expired and
//! soon-to-expire certificates and of the soonest expiry, a warning logged once per
//! certificate, and a per-certificate state in the admin `/config`. Certificates the
//! control feed held but that could not be served at all are kept here as well.

use crate::clock::now_unix;
use prometheus::{IntGauge, Registry};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Mutex;
use tollgate_certs::{CertStore, CertSummary};

/// A certificate expiring within this many seconds counts as expiring soon.
pub const EXPIRING_SOON_SECS: i64 = 14 * 86_400;

/// How often the serving store is looked at again, so a lapse is seen without a change.
pub const CHECK_EVERY_SECS: u64 = 60;

/// Gauges and log-once state for the serving certificates.
pub struct CertHealth {
    expired: IntGauge,
    expiring: IntGauge,
    soonest: IntGauge,
    refused_gauge: IntGauge,
    /// Fingerprints already logged as out of their validity window.
    warned: Mutex<HashSet<String>>,
    /// Why certificates from the control feed were left out of the store.
    refused: Mutex<Vec<String>>,
}

impl CertHealth {
    /// Registers the gauges in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(CertHealth {
            expired: gauge(
                "tollgate_certificates_expired",
                "Served certificates outside their validity window (expired or not yet valid).",
            )?,
            expiring: gauge(
                "tollgate_certificates_expiring",
                "Served certificates that expire within 14 days.",
            )?,
            soonest: gauge(
                "tollgate_certificates_soonest_expiry_timestamp_seconds",
                "The earliest notAfter among served certificates (Unix seconds; 0 with none).",
            )?,
            refused_gauge: gauge(
                "tollgate_certificates_refused",
                "Certificates from the control feed left out because they cannot be served.",
            )?,
            warned: Mutex::new(HashSet::new()),
            refused: Mutex::new(Vec::new()),
        })
    }

    /// Updates the gauges from `store` and logs each newly lapsed certificate once.
    pub fn observe(&self, store: &CertStore) {
        let now = now_unix();
        let (mut expired, mut expiring, mut soonest) = (0, 0, i64::MAX);
        let mut lapsed = Vec::new();
        for s in store.summary_list() {
            soonest = soonest.min(s.not_after_unix);
            if s.out_of_window(now) {
                expired += 1;
                lapsed.push(s);
            } else if s.not_after_unix - now <= EXPIRING_SOON_SECS {
                expiring += 1;
            }
        }
        self.expired.set(expired);
        self.expiring.set(expiring);
        self.soonest
            .set(if soonest == i64::MAX { 0 } else { soonest });
        if lapsed.is_empty() {
            return;
        }
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        for s in lapsed {
            if warned.insert(s.sha256_fingerprint.clone()) {
                tracing::warn!(
                    names = ?s.names,
                    not_before_unix = s.not_before_unix,
                    not_after_unix = s.not_after_unix,
                    sha256 = %s.sha256_fingerprint,
                    "certificate outside its validity window; still served for its names until replaced"
                );
            }
        }
    }

    /// Records the certificates a control config held but could not serve, logging
    /// each problem the previous config did not already have.
    pub fn set_refused(&self, errors: Vec<String>) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        for e in errors.iter().filter(|e| !refused.contains(e)) {
            tracing::error!(error = %e, "certificate left out of the served store");
        }
        self.refused_gauge.set(errors.len() as i64);
        *refused = errors;
    }

    /// The `/config` view: each served certificate with its state, then the refused ones.
    pub fn view(&self, store: &CertStore) -> (Vec<Value>, Vec<String>) {
        let now = now_unix();
        let certs = store.summary_list().map(|s| cert_view(s, now)).collect();
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (certs, refused)
    }
}

fn cert_view(s: &CertSummary, now: i64) -> Value {
    let state = if now > s.not_after_unix {
        "expired"
    } else if now < s.not_before_unix {
        "not_yet_valid"
    } else if s.not_after_unix - now <= EXPIRING_SOON_SECS {
        "expiring"
    } else {
        "valid"
    };
    json!({
        "names": s.names,
        "not_before_unix": s.not_before_unix,
        "not_after_unix": s.not_after_unix,
        "sha256": s.sha256_fingerprint,
        "state": state,
    })
}

impl std::fmt::Debug for CertHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertHealth")
    }
}
