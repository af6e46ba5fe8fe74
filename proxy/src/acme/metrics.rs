//! The ACME challenge metrics: answers given, by challenge kind, and challenges
//! currently published.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tollgate_routing::ChallengeKind;

/// Counters and gauge for the challenges this proxy answers.
#[derive(Debug, Clone)]
pub struct AcmeMetrics {
    http01: IntCounter,
    tls_alpn01: IntCounter,
    active: IntGauge,
}

impl AcmeMetrics {
    /// Registers `tollgate_acme_challenges_answered_total{kind}` and
    /// `tollgate_acme_challenges_active` in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let answered = IntCounterVec::new(
            Opts::new(
                "tollgate_acme_challenges_answered_total",
                "ACME challenges answered: HTTP-01 key authorizations served and TLS-ALPN-01 handshakes completed.",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(answered.clone()))?;
        let active = IntGauge::new(
            "tollgate_acme_challenges_active",
            "ACME challenges in the serving config (published by the control service, not yet settled).",
        )?;
        registry.register(Box::new(active.clone()))?;
        Ok(AcmeMetrics {
            http01: answered.with_label_values(&[ChallengeKind::Http01.as_str()]),
            tls_alpn01: answered.with_label_values(&[ChallengeKind::TlsAlpn01.as_str()]),
            active,
        })
    }

    /// Counts one answered challenge of `kind`.
    pub fn answered(&self, kind: ChallengeKind) {
        match kind {
            ChallengeKind::Http01 => self.http01.inc(),
            ChallengeKind::TlsAlpn01 => self.tls_alpn01.inc(),
        }
    }

    #[cfg(test)]
    pub fn answered_count(&self, kind: ChallengeKind) -> u64 {
        match kind {
            ChallengeKind::Http01 => self.http01.get(),
            ChallengeKind::TlsAlpn01 => self.tls_alpn01.get(),
        }
    }

    /// Sets the number of challenges in the serving config.
    pub fn set_active(&self, count: usize) {
        self.active.set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}
