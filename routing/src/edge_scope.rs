//! The part of the edge config a list of events can affect, so that the result of a
//! command is validated by what it touched, not by the whole config: the cost of a
//! write must not grow with the number of tenants.
//!
//! [`Scope::of`] names the apps, routes, hostnames and keys events touch, or says
//! "everything" for platform-wide events (API hosts, the port policy, issuers).
//! [`EdgeConfig::scoped_spec`] builds the routing spec of those objects plus every
//! object a rule of [`crate::validate()`] relates them to:
//!
//! - the touched apps, with all their hostnames, and every route sending to them;
//! - every route on a touched hostname, or on a name a touched wildcard covers, and
//!   every route on the same listen port as one of those;
//! - for every route in the spec, its app and the apps owning its hostname (exactly or
//!   by wildcard), so reference and cross-tenant checks see what the full spec has;
//! - the touched keys and every key with the same hash, and each key's app (a new
//!   key touches no app: its checks read only its app's existence); every issuer.
//!
//! A problem `validate` finds in the scoped spec is a problem of the whole spec, and a
//! problem of the whole spec that the events could have caused is in the scoped spec
//! (`routing/tests/scoped_validation.rs` checks both on random configs and events).
//! Building it costs lookups in the config's index (`edge_index`), no scan and no copy
//! of the config.

use crate::auth::ApiKeySpec;
use crate::edge::{EdgeConfig, EdgeEvent};
use crate::edge_index::{Index, ids};
use crate::host::wildcard_parent;
use crate::model::{RouteSpec, RoutingSpec};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

/// What a list of events touches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scope {
    apps: BTreeSet<String>,
    routes: BTreeSet<String>,
    hostnames: BTreeSet<String>,
    keys: BTreeSet<String>,
}

impl Scope {
    /// A scope naming these objects.
    pub(crate) fn touching(
        apps: BTreeSet<String>,
        routes: BTreeSet<String>,
        hostnames: BTreeSet<String>,
    ) -> Scope {
        Scope {
            apps,
            routes,
            hostnames,
            keys: BTreeSet::new(),
        }
    }

    /// What `events` touch; `None` when they may affect any object.
    pub fn of(events: &[EdgeEvent]) -> Option<Scope> {
        use EdgeEvent::*;
        let mut s = Scope::default();
        for e in events {
            match e {
                AppCreated { app_id, .. }
                | AppSuspended { app_id }
                | AppResumed { app_id }
                | AppAuthChanged { app_id, .. }
                | AppDeletionScheduled { app_id, .. }
                | AppRemoved { app_id }
                | UpstreamConfigured { app_id, .. }
                | InstanceAdded { app_id, .. }
                | InstanceRemoved { app_id, .. }
                | LimitsSet { app_id, .. } => {
                    s.apps.insert(app_id.clone());
                }
                RouteCreated { route } => {
                    s.routes.extend(route.id.clone());
                    s.apps.insert(route.app.clone());
                    s.hostnames.insert(route.hostname.clone());
                }
                RouteDeleted { route_id } => {
                    s.routes.insert(route_id.clone());
                }
                HostnameBound { hostname, app_id } => {
                    s.hostnames.insert(hostname.clone());
                    s.apps.insert(app_id.clone());
                }
                HostnameRebound {
                    hostname,
                    from_app,
                    to_app,
                } => {
                    s.hostnames.insert(hostname.clone());
                    s.apps.insert(from_app.clone());
                    s.apps.insert(to_app.clone());
                }
                HostnameUnbound { hostname } => {
                    s.hostnames.insert(hostname.clone());
                }
                // A key's checks read its app, which the spec takes in as the
                // key's reference; the app's routes and names are not affected.
                ApiKeyCreated { key } => {
                    s.keys.insert(key.key_id.clone());
                }
                ApiKeyRevoked { key_id } => {
                    s.keys.insert(key_id.clone());
                }
                IssuerConfigured { .. }
                | IssuerRemoved { .. }
                | ApiHostsSet { .. }
                | PortPolicySet { .. } => return None,
                // Certificates, ACME state and ownership claims are not in the routing
                // spec (certificates are checked on their own).
                CertificateUploaded { .. }
                | CertificateRotated { .. }
                | CertificateRemoved { .. }
                | TlsManaged { .. }
                | TlsUnmanaged { .. }
                | TlsOrderStarted { .. }
                | AcmeChallengePublished { .. }
                | TlsIssued { .. }
                | TlsRenewalDue { .. }
                | TlsOrderFailed { .. }
                | HostnameClaimed { .. }
                | HostnameVerified { .. }
                | HostnameCheckFailed { .. }
                | HostnameVerificationLapsed { .. }
                | HostnameClaimWithdrawn { .. } => {}
            }
        }
        Some(s)
    }
}

/// The objects of one config a scope reaches: ids of apps, routes and keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Related {
    apps: BTreeSet<String>,
    routes: BTreeSet<String>,
    keys: BTreeSet<String>,
}

impl Related {
    /// Both sets of objects: validating the config before and after a command over
    /// the same objects tells the problems the command adds from those it found.
    pub fn union(mut self, other: Related) -> Related {
        self.apps.extend(other.apps);
        self.routes.extend(other.routes);
        self.keys.extend(other.keys);
        self
    }
}

impl EdgeConfig {
    /// The index, rebuilt here if this config was deserialized and never applied to.
    pub(crate) fn lookups(&self) -> Cow<'_, Index> {
        if self.index().stale {
            Cow::Owned(Index::build(self))
        } else {
            Cow::Borrowed(self.index())
        }
    }

    /// Whether the index `apply` maintained equals one built from the data (for tests).
    #[doc(hidden)]
    pub fn index_is_current(&self) -> bool {
        self.lookups().same_as(&Index::build(self))
    }

    /// The hostnames bound to `app`, in order.
    pub fn hostnames_of(&self, app: &str) -> Vec<String> {
        ids(&self.lookups().hostnames_of, app)
            .map(str::to_string)
            .collect()
    }

    /// The ids of the routes sending to `app`, in order.
    pub fn routes_of(&self, app: &str) -> Vec<String> {
        ids(&self.lookups().routes_of, app)
            .map(str::to_string)
            .collect()
    }

    /// The ids of the certificates whose stored names include `name`, in order.
    pub fn certs_named(&self, name: &str) -> Vec<String> {
        ids(&self.lookups().certs_by_name, name)
            .map(str::to_string)
            .collect()
    }

    /// The ids of `app`'s API keys, in order.
    pub fn keys_of(&self, app: &str) -> Vec<String> {
        ids(&self.lookups().keys_of, app)
            .map(str::to_string)
            .collect()
    }

    /// The routing spec of what `scope` touched and what the validation rules relate
    /// it to (see the module docs).
    pub fn scoped_spec(&self, scope: &Scope) -> RoutingSpec {
        self.spec_of(&self.related(scope))
    }

    /// The specs before (`self`) and after (`next`) a command with this scope, over
    /// the same objects.
    pub fn scoped_specs(&self, next: &EdgeConfig, scope: &Scope) -> (RoutingSpec, RoutingSpec) {
        let related = self.related(scope).union(next.related(scope));
        (self.spec_of(&related), next.spec_of(&related))
    }

    /// The objects `scope` reaches here: touched apps, routes sending to them or on
    /// touched (or wildcard-covered) names, routes sharing their ports, touched keys and
    /// keys sharing their hash.
    pub fn related(&self, scope: &Scope) -> Related {
        let index = self.lookups();
        let index = &*index;
        let mut hosts: BTreeSet<&str> = scope.hostnames.iter().map(String::as_str).collect();
        for app in &scope.apps {
            hosts.extend(ids(&index.hostnames_of, app.as_str()));
        }
        let mut routes: BTreeSet<&str> = BTreeSet::new();
        for id in &scope.routes {
            if let Some((id, r)) = self.routes.get_key_value(id) {
                hosts.insert(&r.hostname);
                routes.insert(id);
            }
        }
        for app in &scope.apps {
            routes.extend(ids(&index.routes_of, app.as_str()));
        }
        for h in &hosts {
            routes.extend(ids(&index.routes_on, *h));
            if let Some(parent) = h.strip_prefix("*.") {
                routes.extend(ids(&index.routes_under, parent));
            }
        }
        let ports: BTreeSet<u16> = routes
            .iter()
            .filter_map(|id| self.routes.get(*id)?.listen_port)
            .collect();
        for port in &ports {
            routes.extend(ids(&index.routes_at, port));
        }
        let mut keys: BTreeSet<String> = BTreeSet::new();
        for k in scope.keys.iter().filter_map(|id| self.api_keys.get(id)) {
            if index.edge_only {
                let same = self.api_keys.values().filter(|o| o.sha256 == k.sha256);
                keys.extend(same.map(|o| o.key_id.clone()));
            } else {
                keys.extend(ids(&index.keys_by_hash, k.sha256.as_str()).map(str::to_string));
            }
        }
        let route_specs: Vec<&RouteSpec> = routes
            .iter()
            .filter_map(|id| self.routes.get(*id).map(|r| &**r))
            .collect();
        let key_specs: Vec<&ApiKeySpec> = keys
            .iter()
            .filter_map(|id: &String| self.api_keys.get(id).map(|k| &**k))
            .collect();
        let mut apps: BTreeSet<&str> = scope.apps.iter().map(String::as_str).collect();
        self.referenced_apps(&route_specs, &key_specs, &mut apps);
        Related {
            apps: apps.into_iter().map(str::to_string).collect(),
            routes: routes.into_iter().map(str::to_string).collect(),
            keys,
        }
    }

    /// Adds the apps the checks of `routes` and `keys` refer to: each route's app and
    /// the apps owning its name (exactly or by wildcard), each key's app.
    fn referenced_apps<'a>(
        &'a self,
        routes: &[&'a RouteSpec],
        keys: &[&'a ApiKeySpec],
        apps: &mut BTreeSet<&'a str>,
    ) {
        for r in routes {
            apps.insert(&r.app);
            if let Some(owner) = self.hostnames.get(&r.hostname) {
                apps.insert(owner);
            }
            if let Some(parent) = wildcard_parent(&r.hostname)
                && let Some(owner) = self.hostnames.get(&format!("*.{parent}"))
            {
                apps.insert(owner);
            }
        }
        apps.extend(keys.iter().map(|k| k.app.as_str()));
    }

    /// The routing spec of `related`'s objects that exist here, with what their checks
    /// refer to: each route's app and the apps owning its name, each key's app.
    pub fn spec_of(&self, related: &Related) -> RoutingSpec {
        let shared: Vec<&Arc<RouteSpec>> = related
            .routes
            .iter()
            .filter_map(|id| self.routes.get(id))
            .collect();
        let routes: Vec<&RouteSpec> = shared.iter().map(|r| r.as_ref()).collect();
        let keys: Vec<&ApiKeySpec> = related
            .keys
            .iter()
            .filter_map(|id| self.api_keys.get(id).map(|k| &**k))
            .collect();
        let mut apps: BTreeSet<&str> = related.apps.iter().map(String::as_str).collect();
        self.referenced_apps(&routes, &keys, &mut apps);
        let index = self.lookups();
        RoutingSpec {
            api_hosts: self.api_hosts.clone(),
            apps: apps
                .iter()
                .filter_map(|id| self.apps.get(*id))
                .map(|a| {
                    self.app_spec(
                        a,
                        ids(&index.hostnames_of, a.id.as_str())
                            .map(str::to_string)
                            .collect(),
                    )
                })
                .collect(),
            routes: shared.into_iter().cloned().collect(),
            port_policy: self.port_policy.clone(),
            api_keys: keys
                .into_iter()
                .filter(|k| self.serves_keys_of(&k.app))
                .cloned()
                .collect(),
            oidc_issuers: self.oidc_issuers.values().cloned().collect(),
        }
    }
}
