//! `tollgate control` flags for the ACME client (see `control/CONFIG.md`).

use std::path::PathBuf;
use std::time::Duration;

/// The CA's published rate limits, which the service queues behind rather than
/// hit (Let's Encrypt's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaLimits {
    /// Certificates per registered domain per week.
    pub per_domain_week: usize,
    /// Certificates for the exact same hostname per week.
    pub duplicates_week: usize,
    /// Failed validations per hostname per hour.
    pub failed_validations_hour: usize,
    /// New orders per account per 3 hours.
    pub orders_3h: usize,
}

impl Default for CaLimits {
    fn default() -> Self {
        CaLimits {
            per_domain_week: 50,
            duplicates_week: 5,
            failed_validations_hour: 5,
            orders_3h: 300,
        }
    }
}

/// How the service talks to its CA; ACME is off without `--acme-directory`.
#[derive(Debug, Clone, clap::Args)]
pub struct AcmeOptions {
    /// The CA's ACME directory URL (e.g. Let's Encrypt's
    /// `https://acme-v02.api.letsencrypt.org/directory`). Without it, managed
    /// hostnames wait in `requested`.
    #[arg(long = "acme-directory")]
    pub directory: Option<String>,
    /// A PEM file of roots to trust for the directory's HTTPS (private or test
    /// CAs); the platform's web roots otherwise.
    #[arg(long = "acme-ca-root")]
    pub ca_root: Option<PathBuf>,
    /// Contact for the account (`mailto:ops@example.com`); repeatable.
    #[arg(long = "acme-contact")]
    pub contact: Vec<String>,
    /// External Account Binding key id, for CAs that require one.
    #[arg(long = "acme-eab-kid")]
    pub eab_kid: Option<String>,
    /// External Account Binding HMAC key (base64url); prefer
    /// `TOLLGATE_ACME_EAB_HMAC`.
    #[arg(long = "acme-eab-hmac")]
    pub eab_hmac: Option<String>,
    /// Renew this many seconds before expiry (capped at a third of the
    /// certificate's lifetime).
    #[arg(long = "acme-renew-before-secs", default_value_t = 30 * 24 * 3600)]
    pub renew_before_secs: u64,
    /// Spread renewals by up to this many seconds, per hostname (capped at a
    /// tenth of the lifetime).
    #[arg(long = "acme-renew-jitter-secs", default_value_t = 24 * 3600)]
    pub renew_jitter_secs: u64,
    /// First retry after a failed order; doubles per failure.
    #[arg(long = "acme-retry-base-secs", default_value_t = 60)]
    pub retry_base_secs: u64,
    /// Longest wait between retries.
    #[arg(long = "acme-retry-max-secs", default_value_t = 6 * 3600)]
    pub retry_max_secs: u64,
    /// Orders in flight at once.
    #[arg(long = "acme-max-concurrent", default_value_t = 4)]
    pub max_concurrent: usize,
    /// Milliseconds between publishing a challenge and telling the CA to check
    /// it, for the feed to reach every proxy.
    #[arg(long = "acme-propagation-ms", default_value_t = 1500)]
    pub propagation_ms: u64,
    /// Longest an order may take, from placing it to the certificate.
    #[arg(long = "acme-order-timeout-secs", default_value_t = 180)]
    pub order_timeout_secs: u64,
    /// Milliseconds between looks for due work when nothing changed.
    #[arg(long = "acme-tick-ms", default_value_t = 5000)]
    pub tick_ms: u64,
    #[arg(skip)]
    pub limits: CaLimits,
}

impl Default for AcmeOptions {
    /// The flags' defaults: ACME off.
    fn default() -> Self {
        AcmeOptions {
            directory: None,
            ca_root: None,
            contact: Vec::new(),
            eab_kid: None,
            eab_hmac: None,
            renew_before_secs: 30 * 24 * 3600,
            renew_jitter_secs: 24 * 3600,
            retry_base_secs: 60,
            retry_max_secs: 6 * 3600,
            max_concurrent: 4,
            propagation_ms: 1500,
            order_timeout_secs: 180,
            tick_ms: 5000,
            limits: CaLimits::default(),
        }
    }
}

impl AcmeOptions {
    pub(crate) fn retry_delay(&self, failures: u32) -> Duration {
        let base = self.retry_base_secs.max(1);
        let exp = failures.saturating_sub(1).min(30);
        let secs = base
            .saturating_mul(1u64 << exp)
            .min(self.retry_max_secs.max(base));
        Duration::from_secs(secs)
    }

    pub(crate) fn order_timeout(&self) -> Duration {
        Duration::from_secs(self.order_timeout_secs.max(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let o = AcmeOptions {
            retry_base_secs: 60,
            retry_max_secs: 600,
            ..Default::default()
        };
        let d: Vec<u64> = (1..=6).map(|n| o.retry_delay(n).as_secs()).collect();
        assert_eq!(d, vec![60, 120, 240, 480, 600, 600]);
        assert_eq!(o.retry_delay(u32::MAX).as_secs(), 600);
    }
}
