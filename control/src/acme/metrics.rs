//! The control service's ACME metrics, exposed on `GET /metrics` (admin token) from
//! the registry of [`crate::metrics::ControlMetrics`].
//! Every label has a fixed set of values, whatever the number of hostnames.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tollgate_routing::{EdgeConfig, TlsState};

/// Why an order failed (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The CA could not validate the challenge.
    Validation,
    /// The CA refused for its rate limits.
    RateLimited,
    /// Any other error the CA answered with.
    Ca,
    /// The CA could not be reached.
    Network,
    Timeout,
    /// The CA's certificate did not load with the generated key.
    InvalidCertificate,
    /// Another writer moved the hostname on (not an error of the CA).
    Superseded,
    /// The event log or a local step failed.
    Internal,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Validation => "validation",
            Failure::RateLimited => "rate_limited",
            Failure::Ca => "ca_error",
            Failure::Network => "network",
            Failure::Timeout => "timeout",
            Failure::InvalidCertificate => "invalid_certificate",
            Failure::Superseded => "superseded",
            Failure::Internal => "internal",
        }
    }
}

const STATES: [(TlsState, &str); 6] = [
    (TlsState::Requested, "requested"),
    (TlsState::Ordering, "ordering"),
    (TlsState::ChallengePublished, "challenge_published"),
    (TlsState::Issued, "issued"),
    (TlsState::RenewalDue, "renewal_due"),
    (TlsState::Failed, "failed"),
];

/// Expiry buckets (days) of `tollgate_control_managed_certificates_expiring`.
const WITHIN_DAYS: [(i64, &str); 4] = [(1, "1"), (7, "7"), (14, "14"), (30, "30")];

/// Counters the order tasks bump and gauges each scheduling pass sets.
pub struct AcmeMetrics {
    orders: IntCounterVec,
    failures: IntCounterVec,
    by_state: IntGaugeVec,
    expiring: IntGaugeVec,
    soonest: IntGauge,
    queued: IntGauge,
}

impl AcmeMetrics {
    /// The ACME metrics, registered in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let orders = IntCounterVec::new(
            Opts::new(
                "tollgate_control_acme_orders_total",
                "ACME orders finished, by result (issued, failed).",
            ),
            &["result"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "tollgate_control_acme_failures_total",
                "Failed ACME orders by reason.",
            ),
            &["reason"],
        )?;
        let by_state = IntGaugeVec::new(
            Opts::new(
                "tollgate_control_managed_certificates",
                "Hostnames under ACME management, by lifecycle state.",
            ),
            &["state"],
        )?;
        let expiring = IntGaugeVec::new(
            Opts::new(
                "tollgate_control_managed_certificates_expiring",
                "Issued certificates expiring within `within_days` days.",
            ),
            &["within_days"],
        )?;
        let soonest = IntGauge::new(
            "tollgate_control_managed_certificates_soonest_expiry_timestamp_seconds",
            "notAfter of the issued certificate that expires first (0 when none).",
        )?;
        let queued = IntGauge::new(
            "tollgate_control_acme_queued",
            "Orders due but held back by the CA's rate limits.",
        )?;
        registry.register(Box::new(orders.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(by_state.clone()))?;
        registry.register(Box::new(expiring.clone()))?;
        registry.register(Box::new(soonest.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        for (_, s) in STATES {
            by_state.with_label_values(&[s]).set(0);
        }
        for (_, d) in WITHIN_DAYS {
            expiring.with_label_values(&[d]).set(0);
        }
        Ok(AcmeMetrics {
            orders,
            failures,
            by_state,
            expiring,
            soonest,
            queued,
        })
    }

    pub fn issued(&self) {
        self.orders.with_label_values(&["issued"]).inc();
    }

    pub fn failed(&self, reason: Failure) {
        self.orders.with_label_values(&["failed"]).inc();
        self.failures.with_label_values(&[reason.as_str()]).inc();
    }

    /// Sets the gauges from the config (one pass over the managed hostnames).
    pub fn observe(&self, config: &EdgeConfig, now: i64, queued: usize) {
        let mut counts = [0i64; STATES.len()];
        let mut expiring = [0i64; WITHIN_DAYS.len()];
        let mut soonest: Option<i64> = None;
        for m in config.managed_tls.values() {
            if let Some(i) = STATES.iter().position(|(s, _)| *s == m.state) {
                counts[i] += 1;
            }
            if let Some(na) = m.not_after_unix {
                soonest = Some(soonest.map_or(na, |s| s.min(na)));
                for (i, (days, _)) in WITHIN_DAYS.iter().enumerate() {
                    if na - now <= days * 86_400 {
                        expiring[i] += 1;
                    }
                }
            }
        }
        for (i, (_, s)) in STATES.iter().enumerate() {
            self.by_state.with_label_values(&[s]).set(counts[i]);
        }
        for (i, (_, d)) in WITHIN_DAYS.iter().enumerate() {
            self.expiring.with_label_values(&[d]).set(expiring[i]);
        }
        self.soonest.set(soonest.unwrap_or(0));
        self.queued.set(queued as i64);
    }
}
