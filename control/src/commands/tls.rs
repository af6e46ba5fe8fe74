//! Managed TLS commands (aggregate `tls/<hostname>`): put a hostname's certificate
//! under ACME management, take it off, and the lifecycle events the ACME manager
//! records (`crate::acme`).
//!
//! Managing needs the hostname bound to an app and no uploaded certificate
//! claiming it (the issued certificate would clash with it). Taking a hostname off
//! removes its issued certificate and any challenge in flight.

use super::{CommandError, Commands, Ctx, Plan, Target, Written};
use crate::ids;
use serde::{Deserialize, Serialize};
use tollgate_routing::{ChallengeKind, EdgeConfig, EdgeEvent, ManagedTls, TlsState};

const KIND: &str = "tls";

/// `PUT /api/v1/hostnames/{hostname}/tls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManageTls {
    /// `http-01` (default) or `tls-alpn-01`.
    #[serde(default)]
    pub challenge: Option<ChallengeKind>,
}

/// A managed hostname as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsView {
    #[serde(flatten)]
    pub managed: ManagedTls,
    /// When a renewal is due (Unix seconds), once a certificate is issued.
    pub renewal_due_unix: Option<i64>,
    /// The challenge proxies answer now, if an order is being validated.
    pub challenge_in_flight: Option<String>,
}

/// The view of one managed hostname, with `renew_at` from the ACME settings.
pub fn tls_view(config: &EdgeConfig, m: &ManagedTls, renew_at: Option<i64>) -> TlsView {
    TlsView {
        managed: m.clone(),
        renewal_due_unix: renew_at,
        challenge_in_flight: config
            .acme_challenges
            .get(&m.hostname)
            .map(|c| c.kind.as_str().to_string()),
    }
}

/// The state a lifecycle event expects to find, so a replica (or a stale task)
/// that lost a race records nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub state: TlsState,
    pub since_unix: i64,
}

impl Expect {
    pub fn of(m: &ManagedTls) -> Self {
        Expect {
            state: m.state,
            since_unix: m.since_unix,
        }
    }
}

impl Commands {
    /// Puts `hostname`'s certificate under ACME management.
    pub async fn manage_tls(
        &self,
        ctx: &Ctx,
        hostname: &str,
        req: ManageTls,
    ) -> Result<Written<ManagedTls>, CommandError> {
        let hostname = ids::normalize_hostname(hostname);
        let challenge = req.challenge.unwrap_or_default();
        self.execute(ctx, Target::new(KIND, &hostname), |config| {
            if !config.hostnames.contains_key(&hostname) {
                return Err(CommandError::NotFound(format!(
                    "hostname `{hostname}` is not bound; bind it to an app first"
                )));
            }
            if hostname.starts_with("*.") {
                return Err(CommandError::BadRequest(
                    "wildcard hostnames need DNS-01, which is not supported".into(),
                ));
            }
            if let Some(m) = config.managed_tls.get(&hostname) {
                if m.challenge == challenge {
                    return Ok(Plan::noop(m.clone()));
                }
                return Err(CommandError::Conflict(format!(
                    "hostname `{hostname}` is managed with {}; remove it first to change",
                    m.challenge.as_str()
                )));
            }
            if let Some(c) = config
                .certificates
                .values()
                .find(|c| c.names.iter().any(|n| n == &hostname))
            {
                return Err(CommandError::Conflict(format!(
                    "certificate `{}` is uploaded for `{hostname}`; remove it first",
                    c.id
                )));
            }
            let at_unix = super::now_unix();
            Ok(Plan::new(
                vec![EdgeEvent::TlsManaged {
                    hostname: hostname.clone(),
                    challenge,
                    at_unix,
                }],
                ManagedTls::new(&hostname, challenge, at_unix),
            ))
        })
        .await
    }

    /// Takes `hostname` off ACME management; its issued certificate goes too.
    pub async fn unmanage_tls(
        &self,
        ctx: &Ctx,
        hostname: &str,
    ) -> Result<Written<()>, CommandError> {
        let hostname = ids::normalize_hostname(hostname);
        self.execute(ctx, Target::new(KIND, &hostname), |config| {
            if !config.managed_tls.contains_key(&hostname) {
                return Err(CommandError::NotFound(format!(
                    "hostname `{hostname}` is not managed"
                )));
            }
            Ok(Plan::new(
                vec![EdgeEvent::TlsUnmanaged {
                    hostname: hostname.clone(),
                }],
                (),
            ))
        })
        .await
    }

    /// Records a lifecycle event of the ACME manager if `hostname` is still in the
    /// state it expects; `Ok(false)` when it is not (another writer moved on).
    pub(crate) async fn record_tls(
        &self,
        hostname: &str,
        expect: Expect,
        event: EdgeEvent,
    ) -> Result<bool, CommandError> {
        let ctx = Ctx::actor("acme");
        let r = self
            .execute(&ctx, Target::new(KIND, hostname), |config| {
                match config.managed_tls.get(hostname) {
                    Some(m) if Expect::of(m) == expect => Ok(Plan::new(vec![event], true)),
                    _ => Ok(Plan::noop(false)),
                }
            })
            .await;
        super::unless_raced(r)
    }
}
