//! Proof that a tenant controls a hostname before it is bound to their app: a claim
//! carries a token the tenant publishes as a TXT record at
//! `_tollgate-challenge.<hostname>`; the control service checks it with a real
//! resolver, binds the hostname once it is there, re-checks it periodically, and
//! unbinds it after a grace period once it is gone.

use serde::{Deserialize, Serialize};

/// The TXT record name a claim's token is published under.
pub fn txt_name(hostname: &str) -> String {
    format!("_tollgate-challenge.{hostname}")
}

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    /// Waiting for the TXT record; the hostname is not bound.
    Pending,
    /// The record was seen; the hostname is bound to the claiming app.
    Verified,
}

/// A tenant's claim on a hostname.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostnameClaim {
    pub hostname: String,
    pub app_id: String,
    /// The value the TXT record must hold.
    pub token: String,
    pub state: ClaimState,
    pub claimed_unix: i64,
    #[serde(default)]
    pub verified_unix: Option<i64>,
    /// Since when a re-check has not found the record (the grace period runs).
    #[serde(default)]
    pub missing_since_unix: Option<i64>,
    /// Why the last check did not find the token.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl HostnameClaim {
    pub(crate) fn verified(&mut self, at_unix: i64) {
        self.state = ClaimState::Verified;
        self.verified_unix = Some(at_unix);
        self.missing_since_unix = None;
        self.last_error = None;
    }

    pub(crate) fn check_failed(&mut self, error: &str, at_unix: i64) {
        self.last_error = Some(error.to_string());
        if self.state == ClaimState::Verified && self.missing_since_unix.is_none() {
            self.missing_since_unix = Some(at_unix);
        }
    }

    pub(crate) fn lapsed(&mut self) {
        self.state = ClaimState::Pending;
        self.verified_unix = None;
        self.missing_since_unix = None;
    }
}
