//! The edge config as the control service projects it from its event log, and the
//! events that change it. The control service and every proxy apply the same events
//! with [`EdgeConfig::apply`], so both sides agree on what an event means.
//!
//! `apply` checks structure (the app exists, the route id is free); whether the
//! result is servable is [`crate::validate`] on [`EdgeConfig::routing_spec`].

use crate::acme::{AcmeChallenge, ChallengeKind, ManagedTls, TlsState};
use crate::auth::{ApiKeySpec, AuthPolicy, OidcIssuerSpec};
use crate::clusters::Clusters;
use crate::edge_index::{Index, ids};
use crate::model::{
    AppSpec, AppStatus, ClusterSpec, EndpointSpec, PortPolicy, RouteSpec, RoutingSpec,
};
use crate::ownership::{ClaimState, HostnameClaim};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Removes the entries whose value matches (a scan of `map`; removing an app is rare).
fn remove_where<V: Clone>(map: &mut OrdMap<String, V>, matches: impl Fn(&V) -> bool) {
    let doomed: Vec<String> = map
        .iter()
        .filter(|(_, v)| matches(v))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        map.remove(&k);
    }
}

/// An app as the control plane tracks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeApp {
    pub id: String,
    pub status: AppStatus,
    /// Set while a deletion's grace period runs: routes answer 503 and keys fail.
    #[serde(default)]
    pub deleting_until: Option<i64>,
    /// Shared with the app specs built from it; change it with `Arc::make_mut`.
    pub upstreams: Arc<Clusters>,
    #[serde(default)]
    pub auth: Option<AuthPolicy>,
}

/// A certificate and the hostnames it is served for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCert {
    pub id: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub names: Vec<String>,
}

/// Everything proxies serve, keyed for deterministic order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeConfig {
    #[serde(default)]
    pub api_hosts: Vec<String>,
    #[serde(default)]
    pub port_policy: PortPolicy,
    #[serde(default)]
    pub apps: OrdMap<String, EdgeApp>,
    #[serde(default)]
    pub routes: OrdMap<String, Arc<RouteSpec>>,
    /// Hostname to the app it belongs to (one app at a time).
    #[serde(default)]
    pub hostnames: OrdMap<String, String>,
    #[serde(default)]
    pub certificates: OrdMap<String, EdgeCert>,
    #[serde(default)]
    pub api_keys: OrdMap<String, Arc<ApiKeySpec>>,
    #[serde(default)]
    pub oidc_issuers: OrdMap<String, OidcIssuerSpec>,
    /// Per-app rate limits and budgets, opaque here.
    #[serde(default)]
    pub limits: OrdMap<String, serde_json::Value>,
    /// Hostnames whose certificates the control service obtains over ACME.
    #[serde(default)]
    pub managed_tls: OrdMap<String, ManagedTls>,
    /// The ACME challenge each hostname being validated answers, by hostname.
    #[serde(default)]
    pub acme_challenges: OrdMap<String, AcmeChallenge>,
    /// Tenants' claims on hostnames, verified by DNS before binding.
    #[serde(default)]
    pub hostname_claims: OrdMap<String, HostnameClaim>,
    /// Lookups `apply` keeps current; derived, never serialized.
    #[serde(skip, default = "Index::stale")]
    index: Index,
}

/// An event that changes what the edge serves. The serde tag is the `event_type`.
// Events are handled one at a time off the request path; a route's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EdgeEvent {
    AppCreated {
        app_id: String,
        #[serde(default)]
        auth: Option<AuthPolicy>,
    },
    AppSuspended {
        app_id: String,
    },
    AppResumed {
        app_id: String,
    },
    AppAuthChanged {
        app_id: String,
        auth: Option<AuthPolicy>,
    },
    AppDeletionScheduled {
        app_id: String,
        until_unix: i64,
    },
    AppRemoved {
        app_id: String,
    },
    /// Creates or replaces a cluster's settings; its endpoints are kept.
    UpstreamConfigured {
        app_id: String,
        name: String,
        cluster: ClusterSpec,
    },
    InstanceAdded {
        app_id: String,
        upstream: String,
        endpoint: EndpointSpec,
    },
    InstanceRemoved {
        app_id: String,
        upstream: String,
        address: String,
    },
    RouteCreated {
        route: RouteSpec,
    },
    RouteDeleted {
        route_id: String,
    },
    HostnameBound {
        hostname: String,
        app_id: String,
    },
    HostnameRebound {
        hostname: String,
        from_app: String,
        to_app: String,
    },
    HostnameUnbound {
        hostname: String,
    },
    CertificateUploaded {
        cert: EdgeCert,
    },
    CertificateRotated {
        cert_id: String,
        cert_pem: String,
        key_pem: String,
    },
    CertificateRemoved {
        cert_id: String,
    },
    ApiKeyCreated {
        key: ApiKeySpec,
    },
    ApiKeyRevoked {
        key_id: String,
    },
    LimitsSet {
        app_id: String,
        limits: serde_json::Value,
    },
    IssuerConfigured {
        issuer: OidcIssuerSpec,
    },
    IssuerRemoved {
        name: String,
    },
    ApiHostsSet {
        hosts: Vec<String>,
    },
    PortPolicySet {
        policy: PortPolicy,
    },
    /// The control service is to obtain and renew `hostname`'s certificate.
    TlsManaged {
        hostname: String,
        challenge: ChallengeKind,
        at_unix: i64,
    },
    /// No longer managed: its challenge and issued certificate go too.
    TlsUnmanaged {
        hostname: String,
    },
    TlsOrderStarted {
        hostname: String,
        #[serde(default)]
        renewal: bool,
        at_unix: i64,
    },
    AcmeChallengePublished {
        challenge: AcmeChallenge,
        at_unix: i64,
    },
    /// The issued certificate replaces (or becomes) the hostname's managed one.
    TlsIssued {
        hostname: String,
        cert: EdgeCert,
        not_before_unix: i64,
        not_after_unix: i64,
        at_unix: i64,
    },
    /// Due for renewal but queued behind the CA's limits.
    TlsRenewalDue {
        hostname: String,
        at_unix: i64,
    },
    /// An app claims a hostname; it binds once `token` is found in DNS.
    HostnameClaimed {
        hostname: String,
        app_id: String,
        token: String,
        at_unix: i64,
    },
    /// The claim's TXT record was found (the hostname is bound in the same append).
    HostnameVerified {
        hostname: String,
        at_unix: i64,
    },
    /// A check did not find the token; a verified claim starts its grace period.
    HostnameCheckFailed {
        hostname: String,
        error: String,
        at_unix: i64,
    },
    /// The grace period ended without the record: the claim is pending again (the
    /// hostname is unbound in the same append).
    HostnameVerificationLapsed {
        hostname: String,
    },
    HostnameClaimWithdrawn {
        hostname: String,
    },
    TlsOrderFailed {
        hostname: String,
        error: String,
        /// The CA refused the challenge (counts toward its failed-validation limit).
        #[serde(default)]
        validation: bool,
        retry_at_unix: i64,
        at_unix: i64,
    },
}

impl EdgeEvent {
    /// The `event_type` stored in the log (the serde tag).
    pub fn event_type(&self) -> &'static str {
        use EdgeEvent::*;
        match self {
            AppCreated { .. } => "app_created",
            AppSuspended { .. } => "app_suspended",
            AppResumed { .. } => "app_resumed",
            AppAuthChanged { .. } => "app_auth_changed",
            AppDeletionScheduled { .. } => "app_deletion_scheduled",
            AppRemoved { .. } => "app_removed",
            UpstreamConfigured { .. } => "upstream_configured",
            InstanceAdded { .. } => "instance_added",
            InstanceRemoved { .. } => "instance_removed",
            RouteCreated { .. } => "route_created",
            RouteDeleted { .. } => "route_deleted",
            HostnameBound { .. } => "hostname_bound",
            HostnameRebound { .. } => "hostname_rebound",
            HostnameUnbound { .. } => "hostname_unbound",
            CertificateUploaded { .. } => "certificate_uploaded",
            CertificateRotated { .. } => "certificate_rotated",
            CertificateRemoved { .. } => "certificate_removed",
            ApiKeyCreated { .. } => "api_key_created",
            ApiKeyRevoked { .. } => "api_key_revoked",
            LimitsSet { .. } => "limits_set",
            IssuerConfigured { .. } => "issuer_configured",
            IssuerRemoved { .. } => "issuer_removed",
            ApiHostsSet { .. } => "api_hosts_set",
            PortPolicySet { .. } => "port_policy_set",
            TlsManaged { .. } => "tls_managed",
            TlsUnmanaged { .. } => "tls_unmanaged",
            TlsOrderStarted { .. } => "tls_order_started",
            AcmeChallengePublished { .. } => "acme_challenge_published",
            TlsIssued { .. } => "tls_issued",
            TlsRenewalDue { .. } => "tls_renewal_due",
            TlsOrderFailed { .. } => "tls_order_failed",
            HostnameClaimed { .. } => "hostname_claimed",
            HostnameVerified { .. } => "hostname_verified",
            HostnameCheckFailed { .. } => "hostname_check_failed",
            HostnameVerificationLapsed { .. } => "hostname_verification_lapsed",
            HostnameClaimWithdrawn { .. } => "hostname_claim_withdrawn",
        }
    }
}

/// An event that does not fit the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    #[error("no app `{0}`")]
    NoApp(String),
    #[error("app `{0}` already exists")]
    AppExists(String),
    #[error("app `{app}` has no upstream `{upstream}`")]
    NoUpstream { app: String, upstream: String },
    #[error("route `{0}` already exists")]
    RouteExists(String),
    #[error("a route needs an id")]
    RouteWithoutId,
    #[error("no route `{0}`")]
    NoRoute(String),
    #[error("hostname `{hostname}` is bound to app `{app}`")]
    HostnameTaken { hostname: String, app: String },
    #[error("hostname `{0}` is not bound as stated")]
    HostnameNotBound(String),
    #[error("no certificate `{0}`")]
    NoCertificate(String),
    #[error("certificate `{0}` already exists")]
    CertificateExists(String),
    #[error("key `{0}` already exists")]
    KeyExists(String),
    #[error("no key `{0}`")]
    NoKey(String),
    #[error("no issuer `{0}`")]
    NoIssuer(String),
    #[error("hostname `{0}` is not managed")]
    NotManaged(String),
    #[error("hostname `{0}` is already managed")]
    AlreadyManaged(String),
    #[error("hostname `{0}` has no claim")]
    NoClaim(String),
}

impl EdgeConfig {
    fn app_mut(&mut self, id: &str) -> Result<&mut EdgeApp, EdgeError> {
        self.apps
            .get_mut(id)
            .ok_or_else(|| EdgeError::NoApp(id.to_string()))
    }

    /// Builds the lookups a deserialized config lacks (once; later `apply`s keep
    /// them), so that index queries do not each rebuild them.
    pub fn refresh_index(&mut self) {
        if self.index.stale {
            self.index = Index::build(self);
        }
    }

    /// The proxy's form of [`EdgeConfig::refresh_index`]: builds only the lookups a
    /// proxy reads, leaving out the keys by hash that the control service's checks
    /// use (they scan the keys instead on such an index). Later `apply`s keep to it.
    pub fn refresh_edge_index(&mut self) {
        if self.index.stale || !self.index.edge_only {
            self.index = Index::build_for(self, true);
        }
    }

    /// Applies one event; on error nothing changed.
    pub fn apply(&mut self, event: &EdgeEvent) -> Result<(), EdgeError> {
        use EdgeEvent::*;
        self.refresh_index();
        match event {
            AppCreated { app_id, auth } => {
                if self.apps.contains_key(app_id) {
                    return Err(EdgeError::AppExists(app_id.clone()));
                }
                let default = ClusterSpec::empty();
                self.apps.insert(
                    app_id.clone(),
                    EdgeApp {
                        id: app_id.clone(),
                        status: AppStatus::Active,
                        deleting_until: None,
                        upstreams: Arc::new(Clusters::from([("default".to_string(), default)])),
                        auth: auth.clone(),
                    },
                );
            }
            AppSuspended { app_id } => self.app_mut(app_id)?.status = AppStatus::Suspended,
            AppResumed { app_id } => {
                let app = self.app_mut(app_id)?;
                app.status = AppStatus::Active;
                app.deleting_until = None;
            }
            AppAuthChanged { app_id, auth } => self.app_mut(app_id)?.auth = auth.clone(),
            AppDeletionScheduled { app_id, until_unix } => {
                let app = self.app_mut(app_id)?;
                app.status = AppStatus::Suspended;
                app.deleting_until = Some(*until_unix);
            }
            AppRemoved { app_id } => {
                self.apps
                    .remove(app_id)
                    .ok_or_else(|| EdgeError::NoApp(app_id.clone()))?;
                let routes: Vec<String> = ids(&self.index.routes_of, app_id.as_str())
                    .map(str::to_string)
                    .collect();
                for id in routes {
                    if let Some(r) = self.routes.remove(&id) {
                        self.index.remove_route(&id, &r);
                    }
                }
                let hostnames: Vec<String> = ids(&self.index.hostnames_of, app_id.as_str())
                    .map(str::to_string)
                    .collect();
                for h in hostnames {
                    self.hostnames.remove(&h);
                    self.index.remove_hostname(&h, app_id);
                }
                let keys: Vec<String> = ids(&self.index.keys_of, app_id.as_str())
                    .map(str::to_string)
                    .collect();
                for id in keys {
                    if let Some(k) = self.api_keys.remove(&id) {
                        self.index.remove_key(&k);
                    }
                }
                remove_where(&mut self.hostname_claims, |c| c.app_id == *app_id);
                self.limits.remove(app_id);
            }
            UpstreamConfigured {
                app_id,
                name,
                cluster,
            } => {
                let app = self.app_mut(app_id)?;
                let endpoints = app
                    .upstreams
                    .get(name)
                    .map(|c| c.endpoints.clone())
                    .unwrap_or_default();
                let mut c = cluster.clone();
                c.endpoints = endpoints;
                Arc::make_mut(&mut app.upstreams).insert(name.clone(), c);
            }
            InstanceAdded {
                app_id,
                upstream,
                endpoint,
            } => {
                let c = cluster_mut(self.app_mut(app_id)?, upstream)?;
                c.endpoints.retain(|e| e.address != endpoint.address);
                c.endpoints.push(endpoint.clone());
            }
            InstanceRemoved {
                app_id,
                upstream,
                address,
            } => {
                cluster_mut(self.app_mut(app_id)?, upstream)?
                    .endpoints
                    .retain(|e| e.address != *address);
            }
            RouteCreated { route } => {
                let id = route.id.clone().ok_or(EdgeError::RouteWithoutId)?;
                if !self.apps.contains_key(&route.app) {
                    return Err(EdgeError::NoApp(route.app.clone()));
                }
                if self.routes.contains_key(&id) {
                    return Err(EdgeError::RouteExists(id));
                }
                self.index.add_route(&id, route);
                self.routes.insert(id, Arc::new(route.clone()));
            }
            RouteDeleted { route_id } => {
                let r = self
                    .routes
                    .remove(route_id)
                    .ok_or_else(|| EdgeError::NoRoute(route_id.clone()))?;
                self.index.remove_route(route_id, &r);
            }
            HostnameBound { hostname, app_id } => {
                if !self.apps.contains_key(app_id) {
                    return Err(EdgeError::NoApp(app_id.clone()));
                }
                if let Some(app) = self.hostnames.get(hostname) {
                    return Err(EdgeError::HostnameTaken {
                        hostname: hostname.clone(),
                        app: app.clone(),
                    });
                }
                self.hostnames.insert(hostname.clone(), app_id.clone());
                self.index.add_hostname(hostname, app_id);
            }
            HostnameRebound {
                hostname,
                from_app,
                to_app,
            } => {
                if self.hostnames.get(hostname) != Some(from_app) {
                    return Err(EdgeError::HostnameNotBound(hostname.clone()));
                }
                if !self.apps.contains_key(to_app) {
                    return Err(EdgeError::NoApp(to_app.clone()));
                }
                self.hostnames.insert(hostname.clone(), to_app.clone());
                self.index.remove_hostname(hostname, from_app);
                self.index.add_hostname(hostname, to_app);
            }
            HostnameUnbound { hostname } => {
                let app = self
                    .hostnames
                    .remove(hostname)
                    .ok_or_else(|| EdgeError::HostnameNotBound(hostname.clone()))?;
                self.index.remove_hostname(hostname, &app);
            }
            CertificateUploaded { cert } => {
                if self.certificates.contains_key(&cert.id) {
                    return Err(EdgeError::CertificateExists(cert.id.clone()));
                }
                self.put_cert(cert);
            }
            CertificateRotated {
                cert_id,
                cert_pem,
                key_pem,
            } => {
                let c = self
                    .certificates
                    .get_mut(cert_id)
                    .ok_or_else(|| EdgeError::NoCertificate(cert_id.clone()))?;
                c.cert_pem = cert_pem.clone();
                c.key_pem = key_pem.clone();
            }
            CertificateRemoved { cert_id } => {
                self.drop_cert(cert_id)
                    .ok_or_else(|| EdgeError::NoCertificate(cert_id.clone()))?;
            }
            ApiKeyCreated { key } => {
                if !self.apps.contains_key(&key.app) {
                    return Err(EdgeError::NoApp(key.app.clone()));
                }
                if self.api_keys.contains_key(&key.key_id) {
                    return Err(EdgeError::KeyExists(key.key_id.clone()));
                }
                self.api_keys
                    .insert(key.key_id.clone(), Arc::new(key.clone()));
                self.index.add_key(key);
            }
            ApiKeyRevoked { key_id } => {
                let k = self
                    .api_keys
                    .remove(key_id)
                    .ok_or_else(|| EdgeError::NoKey(key_id.clone()))?;
                self.index.remove_key(&k);
            }
            LimitsSet { app_id, limits } => {
                self.app_mut(app_id)?;
                self.limits.insert(app_id.clone(), limits.clone());
            }
            IssuerConfigured { issuer } => {
                self.oidc_issuers
                    .insert(issuer.name.clone(), issuer.clone());
            }
            IssuerRemoved { name } => {
                self.oidc_issuers
                    .remove(name)
                    .ok_or_else(|| EdgeError::NoIssuer(name.clone()))?;
            }
            ApiHostsSet { hosts } => self.api_hosts = hosts.clone(),
            PortPolicySet { policy } => self.port_policy = policy.clone(),
            TlsManaged {
                hostname,
                challenge,
                at_unix,
            } => {
                if self.managed_tls.contains_key(hostname) {
                    return Err(EdgeError::AlreadyManaged(hostname.clone()));
                }
                self.managed_tls.insert(
                    hostname.clone(),
                    ManagedTls::new(hostname, *challenge, *at_unix),
                );
            }
            TlsUnmanaged { hostname } => {
                let m = self
                    .managed_tls
                    .remove(hostname)
                    .ok_or_else(|| EdgeError::NotManaged(hostname.clone()))?;
                self.acme_challenges.remove(hostname);
                if let Some(id) = m.cert_id {
                    self.drop_cert(&id);
                }
            }
            TlsOrderStarted {
                hostname, at_unix, ..
            } => self.managed_mut(hostname)?.order_started(*at_unix),
            AcmeChallengePublished { challenge, at_unix } => {
                self.managed_mut(&challenge.hostname)?
                    .enter(TlsState::ChallengePublished, *at_unix);
                self.acme_challenges
                    .insert(challenge.hostname.clone(), challenge.clone());
            }
            TlsIssued {
                hostname,
                cert,
                not_before_unix,
                not_after_unix,
                at_unix,
            } => {
                self.managed_mut(hostname)?.issued(
                    &cert.id,
                    (*not_before_unix, *not_after_unix),
                    *at_unix,
                );
                self.acme_challenges.remove(hostname);
                self.put_cert(cert);
            }
            TlsRenewalDue { hostname, at_unix } => self
                .managed_mut(hostname)?
                .enter(TlsState::RenewalDue, *at_unix),
            TlsOrderFailed {
                hostname,
                error,
                validation,
                retry_at_unix,
                at_unix,
            } => {
                self.managed_mut(hostname)?
                    .failed(error, *validation, *retry_at_unix, *at_unix);
                self.acme_challenges.remove(hostname);
            }
            HostnameClaimed {
                hostname,
                app_id,
                token,
                at_unix,
            } => {
                if !self.apps.contains_key(app_id) {
                    return Err(EdgeError::NoApp(app_id.clone()));
                }
                self.hostname_claims.insert(
                    hostname.clone(),
                    HostnameClaim {
                        hostname: hostname.clone(),
                        app_id: app_id.clone(),
                        token: token.clone(),
                        state: ClaimState::Pending,
                        claimed_unix: *at_unix,
                        verified_unix: None,
                        missing_since_unix: None,
                        last_error: None,
                    },
                );
            }
            HostnameVerified { hostname, at_unix } => self.claim_mut(hostname)?.verified(*at_unix),
            HostnameCheckFailed {
                hostname,
                error,
                at_unix,
            } => self.claim_mut(hostname)?.check_failed(error, *at_unix),
            HostnameVerificationLapsed { hostname } => self.claim_mut(hostname)?.lapsed(),
            HostnameClaimWithdrawn { hostname } => {
                self.hostname_claims
                    .remove(hostname)
                    .ok_or_else(|| EdgeError::NoClaim(hostname.clone()))?;
            }
        }
        Ok(())
    }

    fn claim_mut(&mut self, hostname: &str) -> Result<&mut HostnameClaim, EdgeError> {
        self.hostname_claims
            .get_mut(hostname)
            .ok_or_else(|| EdgeError::NoClaim(hostname.to_string()))
    }

    fn managed_mut(&mut self, hostname: &str) -> Result<&mut ManagedTls, EdgeError> {
        self.managed_tls
            .get_mut(hostname)
            .ok_or_else(|| EdgeError::NotManaged(hostname.to_string()))
    }

    /// The routing model proxies compile; apps being deleted keep no keys.
    pub fn routing_spec(&self) -> RoutingSpec {
        let mut spec = self.routing_spec_without_keys();
        spec.api_keys = self
            .api_keys
            .values()
            .filter(|k| self.serves_keys_of(&k.app))
            .map(|k| ApiKeySpec::clone(k))
            .collect();
        spec
    }

    /// Whether `other` certainly has the same [`EdgeConfig::routing_spec_without_keys`]:
    /// it shares every map that reads (a clone to which only keys, certificates,
    /// ACME or claim events were applied does). O(1); `false` does not mean different.
    pub fn same_routing(&self, other: &EdgeConfig) -> bool {
        self.apps.ptr_eq(&other.apps)
            && self.routes.ptr_eq(&other.routes)
            && self.hostnames.ptr_eq(&other.hostnames)
            && self.limits.ptr_eq(&other.limits)
            && self.oidc_issuers.ptr_eq(&other.oidc_issuers)
            && self.api_hosts == other.api_hosts
            && self.port_policy == other.port_policy
    }

    /// [`EdgeConfig::routing_spec`] with no API keys: for proxies, which keep the keys
    /// in a store they update key by key ([`EdgeConfig::served_key`]).
    pub fn routing_spec_without_keys(&self) -> RoutingSpec {
        // Grouped once: looking each app's hostnames up in the whole map made this
        // quadratic in the number of tenants. The map is ordered, so each app's list
        // comes out sorted, as before.
        let mut hostnames_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (h, app) in &self.hostnames {
            hostnames_of
                .entry(app.as_str())
                .or_default()
                .push(h.clone());
        }
        let apps = self
            .apps
            .values()
            .map(|a| self.app_spec(a, hostnames_of.remove(a.id.as_str()).unwrap_or_default()))
            .collect();
        RoutingSpec {
            api_hosts: self.api_hosts.clone(),
            apps,
            routes: self.routes.values().cloned().collect(),
            port_policy: self.port_policy.clone(),
            api_keys: Vec::new(),
            oidc_issuers: self.oidc_issuers.values().cloned().collect(),
        }
    }

    /// Adds or replaces a certificate, keeping the name index.
    fn put_cert(&mut self, cert: &EdgeCert) {
        self.drop_cert(&cert.id);
        self.index.add_cert(cert);
        self.certificates.insert(cert.id.clone(), cert.clone());
    }

    /// Removes a certificate if present, keeping the name index.
    fn drop_cert(&mut self, id: &str) -> Option<EdgeCert> {
        let old = self.certificates.remove(id)?;
        self.index.remove_cert(&old);
        Some(old)
    }

    /// The lookups `apply` maintains.
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// The routing spec of one app, given its hostnames.
    pub(crate) fn app_spec(&self, a: &EdgeApp, hostnames: Vec<String>) -> AppSpec {
        let (limits, degraded) = match self.limits.get(&a.id) {
            None => (None, None),
            Some(v) => match crate::limits::LimitsSpec::from_json(v) {
                Ok(spec) => (Some(spec), None),
                // Refused visibly: serving the app without its limits would
                // fail open.
                Err(e) => (None, Some(e)),
            },
        };
        AppSpec {
            id: a.id.clone(),
            status: a.status,
            hostnames,
            api_rewrite: "/".into(),
            upstreams: a.upstreams.clone(),
            default_upstream: "default".into(),
            splits: Vec::new(),
            max_body_bytes: None,
            auth: a.auth.clone(),
            rpc: None,
            cors: None,
            limits,
            resume: None,
            https_redirect: None,
            hsts: None,
            headers: None,
            security_headers: None,
            metrics: Default::default(),
            degraded,
        }
    }

    /// The key `key_id` when its app accepts keys (it exists and is not being deleted).
    pub fn served_key(&self, key_id: &str) -> Option<&Arc<ApiKeySpec>> {
        self.api_keys
            .get(key_id)
            .filter(|k| self.serves_keys_of(&k.app))
    }

    /// Whether `app` exists and is not being deleted: only then are its keys served.
    pub fn serves_keys_of(&self, app: &str) -> bool {
        self.apps
            .get(app)
            .is_some_and(|a| a.deleting_until.is_none())
    }
}

fn cluster_mut<'a>(app: &'a mut EdgeApp, name: &str) -> Result<&'a mut ClusterSpec, EdgeError> {
    let id = app.id.clone();
    Arc::make_mut(&mut app.upstreams)
        .get_mut(name)
        .ok_or(EdgeError::NoUpstream {
            app: id,
            upstream: name.to_string(),
        })
}
