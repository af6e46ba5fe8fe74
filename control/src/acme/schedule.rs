//! When a managed hostname needs an order, and whether the CA's rate limits let
//! one start now. Pure functions of the edge config and the clock, so every
//! control replica (and a restarted one) decides the same.

use super::options::{AcmeOptions, CaLimits};
use std::collections::HashMap;
use tollgate_routing::{EdgeConfig, ManagedTls, TlsState};

const HOUR: i64 = 3600;
const WEEK: i64 = 7 * 24 * HOUR;

/// What the scheduler wants for one hostname now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Nothing before this time (Unix seconds).
    Later(i64),
    /// An order should start; `renewal` when a certificate is already served.
    Order { renewal: bool },
    /// An order is due but a CA limit holds it until `until`.
    Blocked { reason: &'static str, until: i64 },
}

/// Account-wide and per-domain counts, computed once per pass over the config.
#[derive(Debug, Default)]
pub struct Window {
    orders_3h: Vec<i64>,
    issued_by_domain: HashMap<String, Vec<i64>>,
}

/// The registered domain (public suffix plus one label) limits are counted by.
pub fn registered_domain(hostname: &str) -> String {
    psl::domain_str(hostname)
        .unwrap_or(hostname)
        .to_ascii_lowercase()
}

impl Window {
    pub fn of(config: &EdgeConfig, now: i64) -> Window {
        let mut w = Window::default();
        for m in config.managed_tls.values() {
            w.orders_3h
                .extend(m.history.orders.iter().filter(|t| now - **t < 3 * HOUR));
            let issued: Vec<i64> = m
                .history
                .issued
                .iter()
                .copied()
                .filter(|t| now - *t < WEEK)
                .collect();
            if !issued.is_empty() {
                w.issued_by_domain
                    .entry(registered_domain(&m.hostname))
                    .or_default()
                    .extend(issued);
            }
        }
        w.orders_3h.sort_unstable();
        for v in w.issued_by_domain.values_mut() {
            v.sort_unstable();
        }
        w
    }

    /// Counts an order started during this pass.
    pub fn note_order(&mut self, now: i64) {
        self.orders_3h.push(now);
    }
}

/// When `times` (sorted or not) falls back under `limit` events per `span`.
fn held(times: &[i64], limit: usize, span: i64, now: i64) -> Option<i64> {
    let mut recent: Vec<i64> = times.iter().copied().filter(|t| now - t < span).collect();
    if recent.len() < limit.max(1) {
        return None;
    }
    recent.sort_unstable();
    // The window frees a slot when the oldest counted event leaves it.
    let idx = recent.len() - limit.max(1);
    Some(recent[idx] + span)
}

/// When an issued certificate is renewed: `renew_before` ahead of expiry (at most
/// a third of its lifetime), earlier by a per-hostname jitter (at most a tenth).
pub fn renewal_at(m: &ManagedTls, opts: &AcmeOptions) -> Option<i64> {
    let (nb, na) = (m.not_before_unix?, m.not_after_unix?);
    let life = (na - nb).max(1);
    let before = (opts.renew_before_secs as i64).min(life / 3);
    let spread = (opts.renew_jitter_secs as i64).min(life / 10);
    let jitter = if spread > 0 {
        (fnv(&m.hostname) % spread as u64) as i64
    } else {
        0
    };
    Some(na - before - jitter)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What `m` needs at `now`, given the CA's limits. Orders in flight (`ordering`,
/// `challenge_published`) are restarted only after `stale_after` seconds.
pub fn due(m: &ManagedTls, window: &Window, opts: &AcmeOptions, now: i64, stale_after: i64) -> Due {
    let (renewal, at) = match m.state {
        TlsState::Requested => (false, now),
        TlsState::RenewalDue => (true, now),
        TlsState::Failed => (m.cert_id.is_some(), m.retry_at_unix.unwrap_or(now)),
        TlsState::Issued => match renewal_at(m, opts) {
            Some(t) => (true, t),
            None => (true, now),
        },
        TlsState::Ordering | TlsState::ChallengePublished => {
            (m.cert_id.is_some(), m.since_unix + stale_after)
        }
    };
    if at > now {
        return Due::Later(at);
    }
    if let Some(until) = blocked(m, window, &opts.limits, now) {
        return Due::Blocked {
            reason: until.0,
            until: until.1,
        };
    }
    Due::Order { renewal }
}

fn blocked(
    m: &ManagedTls,
    window: &Window,
    limits: &CaLimits,
    now: i64,
) -> Option<(&'static str, i64)> {
    let h = &m.history;
    if let Some(t) = held(
        &h.validation_failures,
        limits.failed_validations_hour,
        HOUR,
        now,
    ) {
        return Some(("failed validations per hostname per hour", t));
    }
    if let Some(t) = held(&h.issued, limits.duplicates_week, WEEK, now) {
        return Some(("duplicate certificates per week", t));
    }
    let domain = registered_domain(&m.hostname);
    if let Some(issued) = window.issued_by_domain.get(&domain)
        && let Some(t) = held(issued, limits.per_domain_week, WEEK, now)
    {
        return Some(("certificates per registered domain per week", t));
    }
    if let Some(t) = held(&window.orders_3h, limits.orders_3h, 3 * HOUR, now) {
        return Some(("new orders per account per 3 hours", t));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_routing::{ChallengeKind, EdgeEvent};

    fn config_with(hosts: &[&str]) -> EdgeConfig {
        let mut c = EdgeConfig::default();
        for h in hosts {
            c.apply(&EdgeEvent::TlsManaged {
                hostname: h.to_string(),
                challenge: ChallengeKind::Http01,
                at_unix: 0,
            })
            .unwrap();
        }
        c
    }

    fn issue(c: &mut EdgeConfig, host: &str, at: i64, life: i64) {
        c.apply(&EdgeEvent::TlsOrderStarted {
            hostname: host.into(),
            renewal: false,
            at_unix: at,
        })
        .unwrap();
        c.apply(&EdgeEvent::TlsIssued {
            hostname: host.into(),
            cert: tollgate_routing::EdgeCert {
                id: format!("acme-{host}"),
                cert_pem: String::new(),
                key_pem: String::new(),
                names: vec![host.into()],
            },
            not_before_unix: at,
            not_after_unix: at + life,
            at_unix: at,
        })
        .unwrap();
    }

    #[test]
    fn a_requested_hostname_is_ordered_at_once() {
        let c = config_with(&["a.example.com"]);
        let m = &c.managed_tls["a.example.com"];
        let w = Window::of(&c, 100);
        let due = due(m, &w, &AcmeOptions::default(), 100, 600);
        assert_eq!(due, Due::Order { renewal: false });
    }

    #[test]
    fn renewal_is_due_a_third_before_expiry_for_short_certificates() {
        let mut c = config_with(&["a.example.com"]);
        issue(&mut c, "a.example.com", 1000, 90);
        let m = &c.managed_tls["a.example.com"];
        let opts = AcmeOptions::default();
        let at = renewal_at(m, &opts).unwrap();
        // 90 s of life: renew 30 s before expiry, jitter below 9 s.
        assert!((1051..=1060).contains(&at), "{at}");
        let w = Window::of(&c, 1001);
        assert!(matches!(due(m, &w, &opts, 1001, 600), Due::Later(t) if t == at));
        assert_eq!(due(m, &w, &opts, at, 600), Due::Order { renewal: true });
    }

    #[test]
    fn a_ninety_day_certificate_renews_thirty_days_ahead_with_jitter() {
        let mut c = config_with(&["a.example.com", "b.example.com"]);
        let day = 24 * 3600;
        issue(&mut c, "a.example.com", 0, 90 * day);
        issue(&mut c, "b.example.com", 0, 90 * day);
        let opts = AcmeOptions::default();
        let a = renewal_at(&c.managed_tls["a.example.com"], &opts).unwrap();
        let b = renewal_at(&c.managed_tls["b.example.com"], &opts).unwrap();
        for t in [a, b] {
            assert!(t <= 60 * day && t > 59 * day, "{t}");
        }
        assert_ne!(a, b, "jitter spreads hostnames");
    }

    #[test]
    fn failed_validations_hold_a_hostname_for_the_rest_of_the_hour() {
        let mut c = config_with(&["a.example.com", "b.example.com"]);
        for i in 0..5 {
            c.apply(&EdgeEvent::TlsOrderFailed {
                hostname: "a.example.com".into(),
                error: "unauthorized".into(),
                validation: true,
                retry_at_unix: 100 + i,
                at_unix: 10 + i,
            })
            .unwrap();
        }
        let opts = AcmeOptions::default();
        let w = Window::of(&c, 200);
        let d = due(&c.managed_tls["a.example.com"], &w, &opts, 200, 600);
        assert_eq!(
            d,
            Due::Blocked {
                reason: "failed validations per hostname per hour",
                until: 10 + HOUR
            }
        );
        // The other hostname is not held by its neighbour's failures.
        let d = due(&c.managed_tls["b.example.com"], &w, &opts, 200, 600);
        assert_eq!(d, Due::Order { renewal: false });
    }

    #[test]
    fn the_registered_domain_limit_counts_every_subdomain() {
        let hosts: Vec<String> = (0..3).map(|i| format!("t{i}.example.co.uk")).collect();
        let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let mut c = config_with(&refs);
        c.apply(&EdgeEvent::TlsManaged {
            hostname: "x.other.co.uk".into(),
            challenge: ChallengeKind::Http01,
            at_unix: 0,
        })
        .unwrap();
        c.apply(&EdgeEvent::TlsManaged {
            hostname: "t9.example.co.uk".into(),
            challenge: ChallengeKind::Http01,
            at_unix: 0,
        })
        .unwrap();
        issue(&mut c, "t0.example.co.uk", 0, 90);
        issue(&mut c, "t1.example.co.uk", 5, 90);
        let mut opts = AcmeOptions::default();
        opts.limits.per_domain_week = 2;
        let w = Window::of(&c, 10);
        assert_eq!(registered_domain("t9.example.co.uk"), "example.co.uk");
        let d = due(&c.managed_tls["t9.example.co.uk"], &w, &opts, 10, 600);
        assert_eq!(
            d,
            Due::Blocked {
                reason: "certificates per registered domain per week",
                until: WEEK
            }
        );
        let d = due(&c.managed_tls["x.other.co.uk"], &w, &opts, 10, 600);
        assert_eq!(d, Due::Order { renewal: false });
    }

    #[test]
    fn account_orders_are_capped_per_three_hours() {
        let c = config_with(&["a.example.com"]);
        let mut opts = AcmeOptions::default();
        opts.limits.orders_3h = 2;
        let mut w = Window::of(&c, 0);
        w.note_order(1);
        w.note_order(2);
        let d = due(&c.managed_tls["a.example.com"], &w, &opts, 3, 600);
        assert_eq!(
            d,
            Due::Blocked {
                reason: "new orders per account per 3 hours",
                until: 1 + 3 * HOUR
            }
        );
    }

    #[test]
    fn an_order_in_flight_is_restarted_only_when_stale() {
        let mut c = config_with(&["a.example.com"]);
        c.apply(&EdgeEvent::TlsOrderStarted {
            hostname: "a.example.com".into(),
            renewal: false,
            at_unix: 100,
        })
        .unwrap();
        let m = &c.managed_tls["a.example.com"];
        let opts = AcmeOptions::default();
        let w = Window::of(&c, 200);
        assert_eq!(due(m, &w, &opts, 200, 600), Due::Later(700));
        assert_eq!(due(m, &w, &opts, 700, 600), Due::Order { renewal: false });
    }
}
