//! Certificates the control service obtains itself over ACME (RFC 8555): the
//! per-hostname lifecycle it records in the event log, and the challenges every
//! proxy answers while a hostname is being validated.
//!
//! The control service decides; proxies only read [`EdgeConfig::acme_challenges`]
//! (HTTP-01 on `/.well-known/acme-challenge/<token>`, TLS-ALPN-01 on `acme-tls/1`)
//! and serve the issued certificate like any other in [`EdgeConfig::certificates`].
//!
//! [`EdgeConfig::acme_challenges`]: crate::EdgeConfig::acme_challenges
//! [`EdgeConfig::certificates`]: crate::EdgeConfig::certificates

use serde::{Deserialize, Serialize};

/// How long a hostname's history of orders, failures and issuances is kept: the
/// longest window of the CA's rate limits (a week).
pub const HISTORY_SECS: i64 = 7 * 24 * 3600;

/// Which ACME challenge proves control of a hostname.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ChallengeKind {
    /// A token served over plain HTTP on port 80.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A self-signed certificate served on port 443 for the `acme-tls/1` protocol
    /// (RFC 8737), for hostnames whose port 80 is not reachable.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeKind {
    /// The name RFC 8555 and RFC 8737 give the challenge.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// A challenge every proxy answers for one hostname while the CA validates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeChallenge {
    pub hostname: String,
    pub kind: ChallengeKind,
    /// The challenge token (the last path segment for HTTP-01).
    pub token: String,
    /// `token.thumbprint`: the HTTP-01 response body; its SHA-256 is the
    /// TLS-ALPN-01 `acmeIdentifier` extension.
    pub key_authorization: String,
}

/// Where a managed hostname's certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsState {
    /// Asked for; no order placed yet.
    Requested,
    /// An order is placed with the CA.
    Ordering,
    /// The challenge is on the feed; the CA is validating.
    ChallengePublished,
    /// A certificate is served and not yet due for renewal.
    Issued,
    /// The renewal point passed; the order waits for a slot under the CA's limits.
    RenewalDue,
    /// The last order failed; retried at `retry_at_unix`. An earlier certificate,
    /// if any, is still served.
    Failed,
}

/// Timestamps (Unix seconds) of a hostname's recent ACME activity, kept for
/// [`HISTORY_SECS`] so the CA's rate limits can be respected after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsHistory {
    #[serde(default)]
    pub orders: Vec<i64>,
    #[serde(default)]
    pub validation_failures: Vec<i64>,
    #[serde(default)]
    pub issued: Vec<i64>,
}

impl TlsHistory {
    fn trim(&mut self, now: i64) {
        let keep = |t: &i64| now - *t < HISTORY_SECS;
        self.orders.retain(keep);
        self.validation_failures.retain(keep);
        self.issued.retain(keep);
    }
}

/// A hostname whose certificate the control service obtains and renews.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedTls {
    pub hostname: String,
    pub challenge: ChallengeKind,
    pub state: TlsState,
    /// When the current state was entered.
    pub since_unix: i64,
    /// The certificate serving this hostname (in `EdgeConfig::certificates`).
    #[serde(default)]
    pub cert_id: Option<String>,
    #[serde(default)]
    pub not_before_unix: Option<i64>,
    #[serde(default)]
    pub not_after_unix: Option<i64>,
    /// The CA's (or the network's) error from the last failed order.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Failed orders since the last issuance.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub retry_at_unix: Option<i64>,
    #[serde(default)]
    pub history: TlsHistory,
}

/// The id of the certificate the control service issues for `hostname`.
pub fn managed_cert_id(hostname: &str) -> String {
    format!("acme-{hostname}")
}

impl ManagedTls {
    /// A hostname just put under management.
    pub fn new(hostname: &str, challenge: ChallengeKind, at_unix: i64) -> Self {
        ManagedTls {
            hostname: hostname.to_string(),
            challenge,
            state: TlsState::Requested,
            since_unix: at_unix,
            cert_id: None,
            not_before_unix: None,
            not_after_unix: None,
            last_error: None,
            failures: 0,
            retry_at_unix: None,
            history: TlsHistory::default(),
        }
    }

    pub(crate) fn enter(&mut self, state: TlsState, at_unix: i64) {
        self.state = state;
        self.since_unix = at_unix;
        self.history.trim(at_unix);
    }

    pub(crate) fn order_started(&mut self, at_unix: i64) {
        self.enter(TlsState::Ordering, at_unix);
        self.history.orders.push(at_unix);
        self.retry_at_unix = None;
    }

    pub(crate) fn issued(&mut self, cert_id: &str, window: (i64, i64), at_unix: i64) {
        self.enter(TlsState::Issued, at_unix);
        self.cert_id = Some(cert_id.to_string());
        self.not_before_unix = Some(window.0);
        self.not_after_unix = Some(window.1);
        self.history.issued.push(at_unix);
        self.failures = 0;
        self.last_error = None;
        self.retry_at_unix = None;
    }

    pub(crate) fn failed(&mut self, error: &str, validation: bool, retry_at: i64, at_unix: i64) {
        self.enter(TlsState::Failed, at_unix);
        self.last_error = Some(error.to_string());
        self.failures = self.failures.saturating_add(1);
        self.retry_at_unix = Some(retry_at);
        if validation {
            self.history.validation_failures.push(at_unix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_one_week() {
        let mut m = ManagedTls::new("a.example", ChallengeKind::Http01, 0);
        m.order_started(0);
        m.failed("boom", true, 60, 10);
        m.order_started(HISTORY_SECS + 5);
        assert_eq!(m.history.orders, vec![HISTORY_SECS + 5]);
        m.issued("acme-a.example", (0, 10), HISTORY_SECS + 11);
        assert!(m.history.validation_failures.is_empty());
        assert_eq!(m.failures, 0);
        assert_eq!(m.state, TlsState::Issued);
    }

    #[test]
    fn challenge_kinds_use_the_rfc_names() {
        let j = serde_json::to_string(&ChallengeKind::TlsAlpn01).unwrap();
        assert_eq!(j, "\"tls-alpn-01\"");
        assert_eq!(ChallengeKind::Http01.as_str(), "http-01");
    }
}
