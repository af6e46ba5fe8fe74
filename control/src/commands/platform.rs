//! Platform-wide commands (aggregate `platform/<setting>`): OIDC issuers
//! (`platform/issuer:<name>`), the API hosts (`platform/api_hosts`) and the L4
//! port policy (`platform/port_policy`).
//!
//! Removing an issuer that a policy still names, or narrowing the port policy
//! under an existing L4 route, fails validation (422).

use super::{CommandError, Commands, Ctx, Plan, Target, Written, check_id};
use crate::ids;
use tollgate_routing::{EdgeEvent, OidcIssuerSpec, PortPolicy};

const KIND: &str = "platform";

impl Commands {
    /// Creates or replaces an OIDC issuer.
    pub async fn configure_issuer(
        &self,
        ctx: &Ctx,
        issuer: OidcIssuerSpec,
    ) -> Result<Written<OidcIssuerSpec>, CommandError> {
        check_id("issuer name", &issuer.name)?;
        let target = Target::new(KIND, format!("issuer:{}", issuer.name));
        self.execute(ctx, target, |config| {
            if config.oidc_issuers.get(&issuer.name) == Some(&issuer) {
                return Ok(Plan::noop(issuer));
            }
            Ok(Plan::new(
                vec![EdgeEvent::IssuerConfigured {
                    issuer: issuer.clone(),
                }],
                issuer,
            ))
        })
        .await
    }

    /// Removes an OIDC issuer; answers with it as it was.
    pub async fn remove_issuer(
        &self,
        ctx: &Ctx,
        name: &str,
    ) -> Result<Written<OidcIssuerSpec>, CommandError> {
        let target = Target::new(KIND, format!("issuer:{name}"));
        self.execute(ctx, target, |config| {
            let issuer = config
                .oidc_issuers
                .get(name)
                .cloned()
                .ok_or_else(|| CommandError::NotFound(format!("no issuer `{name}`")))?;
            Ok(Plan::new(
                vec![EdgeEvent::IssuerRemoved {
                    name: name.to_string(),
                }],
                issuer,
            ))
        })
        .await
    }

    /// Replaces the API hosts (served by `/v1/<app_id>/...`).
    pub async fn set_api_hosts(
        &self,
        ctx: &Ctx,
        hosts: Vec<String>,
    ) -> Result<Written<Vec<String>>, CommandError> {
        let mut normalized: Vec<String> = Vec::with_capacity(hosts.len());
        for h in hosts.iter().map(|h| ids::normalize_hostname(h)) {
            if !normalized.contains(&h) {
                normalized.push(h);
            }
        }
        self.execute(ctx, Target::new(KIND, "api_hosts"), |config| {
            if config.api_hosts == normalized {
                return Ok(Plan::noop(normalized));
            }
            Ok(Plan::new(
                vec![EdgeEvent::ApiHostsSet {
                    hosts: normalized.clone(),
                }],
                normalized,
            ))
        })
        .await
    }

    /// Replaces the L4 port policy.
    pub async fn set_port_policy(
        &self,
        ctx: &Ctx,
        policy: PortPolicy,
    ) -> Result<Written<PortPolicy>, CommandError> {
        self.execute(ctx, Target::new(KIND, "port_policy"), |config| {
            if config.port_policy == policy {
                return Ok(Plan::noop(policy));
            }
            Ok(Plan::new(
                vec![EdgeEvent::PortPolicySet {
                    policy: policy.clone(),
                }],
                policy,
            ))
        })
        .await
    }
}
