//! Hostname claims (aggregate `hostname/<hostname>`, shared with binding): an app
//! claims a hostname, publishes the claim's token as a TXT record at
//! `_tollgate-challenge.<hostname>`, and the ownership checker (`crate::ownership`)
//! binds the hostname once it sees it, re-checks it, and unbinds it after a grace
//! period once it is gone.
//!
//! With `--require-ownership`, a direct bind (`PUT /api/v1/hostnames/{h}`) is
//! refused for hostnames outside the `--platform-domain`s: customers' own domains
//! go through a claim.

use super::{CommandError, Commands, Ctx, Plan, Target, Written};
use crate::ids;
use serde::Serialize;
use tollgate_routing::ownership::txt_name;
use tollgate_routing::{ClaimState, EdgeEvent, HostnameClaim};

const KIND: &str = "hostname";

/// Which hostnames may be bound without a verified claim.
#[derive(Debug, Clone, Default)]
pub struct OwnershipPolicy {
    /// Refuse direct binds outside `platform_domains`.
    pub required: bool,
    /// Domains the platform owns (their subdomains bind directly).
    pub platform_domains: Vec<String>,
}

impl OwnershipPolicy {
    /// Whether `hostname` may be bound directly.
    pub fn may_bind(&self, hostname: &str) -> bool {
        !self.required
            || self.platform_domains.iter().any(|d| {
                hostname == d
                    || hostname
                        .strip_suffix(d.as_str())
                        .is_some_and(|p| p.ends_with('.'))
            })
    }
}

/// A claim as the API shows it, with what to publish.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimView {
    #[serde(flatten)]
    pub claim: HostnameClaim,
    /// The TXT record to create (`_tollgate-challenge.<hostname>`).
    pub txt_name: String,
    /// Its value (the token).
    pub txt_value: String,
}

impl From<&HostnameClaim> for ClaimView {
    fn from(c: &HostnameClaim) -> Self {
        ClaimView {
            claim: c.clone(),
            txt_name: txt_name(&c.hostname),
            txt_value: c.token.clone(),
        }
    }
}

/// What a DNS check of a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimCheck {
    Found,
    Missing(String),
}

fn token() -> Result<String, CommandError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CommandError::Store("the system random source failed".into()))?;
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl Commands {
    /// `app` claims `hostname`; answers with the TXT record to publish.
    pub async fn claim_hostname(
        &self,
        ctx: &Ctx,
        hostname: &str,
        app: &str,
    ) -> Result<Written<ClaimView>, CommandError> {
        let hostname = ids::normalize_hostname(hostname);
        if hostname.is_empty() || hostname.starts_with("*.") {
            return Err(CommandError::BadRequest(
                "claims are for one exact hostname".into(),
            ));
        }
        let token = token()?;
        self.execute(ctx, Target::new(KIND, &hostname), |config| {
            if !config.apps.contains_key(app) {
                return Err(CommandError::NotFound(format!("no app `{app}`")));
            }
            if let Some(c) = config.hostname_claims.get(&hostname) {
                if c.app_id == app {
                    return Ok(Plan::noop(ClaimView::from(c)));
                }
                return Err(CommandError::Conflict(format!(
                    "`{hostname}` is claimed by another app"
                )));
            }
            if let Some(owner) = config.hostnames.get(&hostname) {
                return Err(CommandError::Conflict(if owner == app {
                    format!("`{hostname}` is already bound to `{app}`")
                } else {
                    format!("`{hostname}` is bound to another app")
                }));
            }
            let at_unix = super::now_unix();
            let claim = HostnameClaim {
                hostname: hostname.clone(),
                app_id: app.to_string(),
                token: token.clone(),
                state: ClaimState::Pending,
                claimed_unix: at_unix,
                verified_unix: None,
                missing_since_unix: None,
                last_error: None,
            };
            Ok(Plan::new(
                vec![EdgeEvent::HostnameClaimed {
                    hostname: hostname.clone(),
                    app_id: app.to_string(),
                    token: token.clone(),
                    at_unix,
                }],
                ClaimView::from(&claim),
            ))
        })
        .await
    }

    /// Withdraws a claim; a verified one's binding goes with it.
    pub async fn withdraw_claim(
        &self,
        ctx: &Ctx,
        hostname: &str,
    ) -> Result<Written<()>, CommandError> {
        let hostname = ids::normalize_hostname(hostname);
        self.execute(ctx, Target::new(KIND, &hostname), |config| {
            let c = config
                .hostname_claims
                .get(&hostname)
                .ok_or_else(|| CommandError::NotFound(format!("`{hostname}` has no claim")))?;
            let mut events = vec![EdgeEvent::HostnameClaimWithdrawn {
                hostname: hostname.clone(),
            }];
            if config.hostnames.get(&hostname) == Some(&c.app_id) {
                events.push(EdgeEvent::HostnameUnbound {
                    hostname: hostname.clone(),
                });
            }
            Ok(Plan::new(events, ()))
        })
        .await
    }

    /// Records what a check of `token`'s claim on `hostname` found: binds on the
    /// first sighting, starts the grace period when it goes missing, unbinds when
    /// the grace period (`grace_secs`) is over. Nothing is written when nothing
    /// changed. Returns whether anything was.
    pub(crate) async fn record_claim_check(
        &self,
        hostname: &str,
        token: &str,
        found: ClaimCheck,
        grace_secs: i64,
    ) -> Result<bool, CommandError> {
        let ctx = Ctx::actor("ownership");
        let now = super::now_unix();
        let r = self
            .execute(&ctx, Target::new(KIND, hostname), |config| {
                let Some(c) = config.hostname_claims.get(hostname) else {
                    return Ok(Plan::noop(false));
                };
                if c.token != token {
                    return Ok(Plan::noop(false));
                }
                let h = hostname.to_string();
                let bound_to = config.hostnames.get(hostname);
                let events = match (&found, c.state) {
                    (ClaimCheck::Found, ClaimState::Pending) => match bound_to {
                        None => vec![
                            EdgeEvent::HostnameVerified {
                                hostname: h.clone(),
                                at_unix: now,
                            },
                            EdgeEvent::HostnameBound {
                                hostname: h,
                                app_id: c.app_id.clone(),
                            },
                        ],
                        Some(_) => {
                            let error = "verified, but the hostname is bound to another app";
                            if c.last_error.as_deref() == Some(error) {
                                Vec::new()
                            } else {
                                vec![EdgeEvent::HostnameCheckFailed {
                                    hostname: h,
                                    error: error.into(),
                                    at_unix: now,
                                }]
                            }
                        }
                    },
                    (ClaimCheck::Found, ClaimState::Verified) => {
                        if c.missing_since_unix.is_some() || c.last_error.is_some() {
                            vec![EdgeEvent::HostnameVerified {
                                hostname: h,
                                at_unix: now,
                            }]
                        } else {
                            Vec::new()
                        }
                    }
                    (ClaimCheck::Missing(error), state) => {
                        let lapsed = state == ClaimState::Verified
                            && c.missing_since_unix.is_some_and(|t| now - t >= grace_secs);
                        if lapsed {
                            let mut ev = vec![EdgeEvent::HostnameVerificationLapsed {
                                hostname: h.clone(),
                            }];
                            if bound_to == Some(&c.app_id) {
                                ev.push(EdgeEvent::HostnameUnbound { hostname: h });
                            }
                            ev
                        } else if c.last_error.as_deref() != Some(error.as_str())
                            || (state == ClaimState::Verified && c.missing_since_unix.is_none())
                        {
                            vec![EdgeEvent::HostnameCheckFailed {
                                hostname: h,
                                error: error.clone(),
                                at_unix: now,
                            }]
                        } else {
                            Vec::new()
                        }
                    }
                };
                let changed = !events.is_empty();
                Ok(Plan::new(events, changed))
            })
            .await;
        super::unless_raced(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_subdomains_bind_directly_when_ownership_is_required() {
        let p = OwnershipPolicy {
            required: true,
            platform_domains: vec!["tollgate.app".into()],
        };
        assert!(p.may_bind("shop.tollgate.app"));
        assert!(p.may_bind("tollgate.app"));
        assert!(!p.may_bind("eviltollgate.app"));
        assert!(!p.may_bind("shop.example.com"));
        assert!(OwnershipPolicy::default().may_bind("shop.example.com"));
    }
}
