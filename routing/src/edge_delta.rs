//! What a proxy recompiles when its edge config moves from one version to another.
//!
//! [`EdgeConfig::routing_delta`] diffs two versions (the persistent maps' diff skips
//! what they share, so it costs what changed) and names the apps whose compiled routes
//! may differ: apps added, removed or changed, apps whose limits changed, the apps of
//! routes added, removed or changed, the apps that gained or lost a hostname, and the
//! apps of routes on a name whose binding changed (a route on a name bound to another
//! app is left out, so a binding can add or drop it). Each comes with everything it is
//! now, ready for [`crate::Snapshot::updated`], and with the spec to validate first:
//! the scoped spec of [`crate::edge_scope`] over the same objects.

use crate::edge::EdgeConfig;
use crate::edge_index::ids;
use crate::edge_scope::Scope;
use crate::host::wildcard_parent;
use crate::model::{RouteSpec, RoutingSpec};
use crate::table_build::AppChange;
use imbl::OrdMap;
use imbl::ordmap::DiffItem;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The apps to recompile and the spec that checks them.
#[derive(Debug, Clone)]
pub struct RoutingDelta {
    /// Each changed app as it is now, with its routes (cross-tenant ones left out).
    pub apps: Vec<AppChange>,
    /// What [`crate::validate()`] must accept before the change is served: the changed
    /// objects and what the rules relate them to. Cross-tenant routes are in it.
    pub scoped: RoutingSpec,
}

/// The keys whose values differ between two maps (added, removed or changed): the
/// persistent maps' diff skips the nodes they share, so this costs what changed.
pub fn changed_ids<V: Clone + PartialEq>(
    old: &OrdMap<String, V>,
    new: &OrdMap<String, V>,
) -> Vec<String> {
    old.diff(new)
        .map(|change| match change {
            DiffItem::Add(id, _) | DiffItem::Remove(id, _) => id.clone(),
            DiffItem::Update { new: (id, _), .. } => id.clone(),
        })
        .collect()
}

impl EdgeConfig {
    /// The apps whose compiled routes differ from `self` to `next`; `None` when a
    /// platform-wide part changed (API hosts, the port policy, OIDC issuers) and
    /// everything must be compiled again.
    pub fn routing_delta(&self, next: &EdgeConfig) -> Option<RoutingDelta> {
        if self.api_hosts != next.api_hosts
            || self.port_policy != next.port_policy
            || !self.oidc_issuers.ptr_eq(&next.oidc_issuers)
                && self.oidc_issuers != next.oidc_issuers
        {
            return None;
        }
        let mut apps: BTreeSet<String> = changed_ids(&self.apps, &next.apps).into_iter().collect();
        apps.extend(changed_ids(&self.limits, &next.limits));
        let mut routes = BTreeSet::new();
        for id in changed_ids(&self.routes, &next.routes) {
            for r in [self.routes.get(&id), next.routes.get(&id)]
                .into_iter()
                .flatten()
            {
                apps.insert(r.app.clone());
            }
            routes.insert(id);
        }
        let mut hostnames = BTreeSet::new();
        let index = next.lookups();
        for host in changed_ids(&self.hostnames, &next.hostnames) {
            for owner in [self.hostnames.get(&host), next.hostnames.get(&host)]
                .into_iter()
                .flatten()
            {
                apps.insert(owner.clone());
            }
            let mut on: Vec<&str> = ids(&index.routes_on, host.as_str()).collect();
            if let Some(parent) = host.strip_prefix("*.") {
                on.extend(ids(&index.routes_under, parent));
            }
            apps.extend(
                on.iter()
                    .filter_map(|id| Some(next.routes.get(*id)?.app.clone())),
            );
            hostnames.insert(host);
        }
        let scope = Scope::touching(apps.clone(), routes, hostnames);
        let related = self.related(&scope).union(next.related(&scope));
        let changes = apps
            .into_iter()
            .map(|id| {
                let spec = next.apps.get(&id).map(|a| {
                    Arc::new(
                        next.app_spec(
                            a,
                            ids(&index.hostnames_of, id.as_str())
                                .map(str::to_string)
                                .collect(),
                        ),
                    )
                });
                let routes = ids(&index.routes_of, id.as_str())
                    .filter_map(|r| next.routes.get(r))
                    .filter(|r| !next.is_cross_tenant(r))
                    .map(Arc::clone)
                    .collect();
                AppChange { id, spec, routes }
            })
            .collect();
        Some(RoutingDelta {
            apps: changes,
            scoped: next.spec_of(&related),
        })
    }

    /// The app a name is bound to: exactly, else by the wildcard covering it.
    fn owner_of(&self, host: &str) -> Option<&String> {
        self.hostnames.get(host).or_else(|| {
            let parent = wildcard_parent(host).filter(|_| !host.starts_with("*."))?;
            self.hostnames.get(&format!("*.{parent}"))
        })
    }

    /// Whether `route` is on a name bound to another app (see
    /// [`crate::validate::cross_tenant_routes`]).
    pub fn is_cross_tenant(&self, route: &RouteSpec) -> bool {
        self.owner_of(&route.hostname)
            .is_some_and(|o| *o != route.app)
    }
}
