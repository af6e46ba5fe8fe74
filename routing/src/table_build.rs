//! Building the route table and updating it app by app.
//!
//! A table is a set of apps, each with its hostnames and the configured routes sending
//! to it. [`RouteTable::updated`] replaces or removes whole apps: their old routes
//! leave their buckets and slots, their new ones take slots (freed ones first) and
//! join theirs, and only the buckets of the hosts involved are sorted again. A full
//! compile is the same update applied to an empty table, so both paths give one
//! result for one spec.

use crate::matcher::{AppEntry, Bucket, CompiledRoute, Placed, RouteTable};
use crate::model::{AppSpec, RouteSpec, RoutingSpec};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// One app as it is now: `spec` is `None` when the app is gone. `routes` are all the
/// configured routes sending to it (the ones it had before are replaced).
#[derive(Debug, Clone)]
pub struct AppChange {
    pub id: String,
    pub spec: Option<Arc<AppSpec>>,
    pub routes: Vec<Arc<RouteSpec>>,
}

/// The slots an update emptied and the ones it filled; a slot can be in both.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableDelta {
    pub removed: Vec<usize>,
    pub added: Vec<usize>,
}

/// The buckets an update touches, by (wildcard, host).
type Edits = BTreeMap<(bool, Arc<str>), BucketEdit>;

/// Slots leaving and routes joining one bucket during an update.
#[derive(Default)]
struct BucketEdit {
    leaving: HashSet<usize>,
    joining: Vec<Arc<CompiledRoute>>,
}

impl RouteTable {
    /// Compiles a spec, which should be one [`crate::validate()`] accepted: this does
    /// not check it (routes sending to an app the spec lacks are left out; of routes
    /// that clash, one wins).
    pub fn compile(spec: &RoutingSpec) -> Self {
        let mut routes: BTreeMap<&str, Vec<Arc<RouteSpec>>> = BTreeMap::new();
        for r in &spec.routes {
            routes
                .entry(r.app.as_str())
                .or_default()
                .push(Arc::clone(r));
        }
        let changes = spec.apps.iter().map(|a| AppChange {
            id: a.id.clone(),
            routes: routes.remove(a.id.as_str()).unwrap_or_default(),
            spec: Some(Arc::new(a.clone())),
        });
        let table = RouteTable {
            api_hosts: Arc::new(spec.api_hosts.iter().map(|h| h.as_str().into()).collect()),
            ..Default::default()
        };
        table.updated(changes).0
    }

    /// This table with the apps `changes` name replaced or removed; every other app
    /// and its routes keep their slots.
    pub fn updated(&self, changes: impl IntoIterator<Item = AppChange>) -> (Self, TableDelta) {
        let mut t = self.clone();
        let mut delta = TableDelta::default();
        let mut edits: Edits = BTreeMap::new();
        let changes: Vec<AppChange> = changes.into_iter().collect();
        for c in &changes {
            let Some(old) = t.apps.remove(c.id.as_str()) else {
                continue;
            };
            t.release(old.api.index, &mut delta);
            for p in &old.placed {
                t.release(p.route.index, &mut delta);
                edits
                    .entry((p.wildcard, p.host.clone()))
                    .or_default()
                    .leaving
                    .insert(p.route.index);
            }
        }
        for c in changes {
            let Some(app) = c.spec else { continue };
            let mut placed = Vec::new();
            for host in &app.hostnames {
                let route = host_route(host, &app.id);
                t.place(&route, None, &app, &mut placed, &mut edits, &mut delta);
            }
            for r in c.routes.iter().filter(|r| !r.is_l4()) {
                t.place(
                    r,
                    Some(r.clone()),
                    &app,
                    &mut placed,
                    &mut edits,
                    &mut delta,
                );
            }
            let api = Arc::new(api_route(t.claim(&mut delta), &app));
            let entry = AppEntry {
                spec: app,
                api,
                placed,
                routes: c.routes,
            };
            t.apps.insert(c.id.into(), Arc::new(entry));
        }
        for ((wildcard, host), edit) in edits {
            let map = if wildcard {
                &mut t.wildcard
            } else {
                &mut t.exact
            };
            let mut routes: Vec<Arc<CompiledRoute>> = map
                .get(&host)
                .map(|b| {
                    b.iter()
                        .filter(|r| !edit.leaving.contains(&r.index))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            routes.extend(edit.joining);
            if routes.is_empty() {
                map.remove(&host);
            } else {
                // Longest prefix first; a port-bound route before an unbound one. Ties
                // (clashes validation refuses) go to the hostname route, then by id,
                // so the order never depends on slots.
                routes.sort_by(|a, b| {
                    let key =
                        |r: &CompiledRoute| (r.prefix.len(), r.port.is_some(), r.source.is_none());
                    key(b)
                        .cmp(&key(a))
                        .then_with(|| (&a.prefix, &a.id).cmp(&(&b.prefix, &b.id)))
                });
                let bucket: Bucket = routes.into();
                map.insert(host, bucket);
            }
        }
        (t, delta)
    }

    /// A free slot, else a new one.
    fn claim(&mut self, delta: &mut TableDelta) -> usize {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots += 1;
            self.slots - 1
        });
        delta.added.push(index);
        index
    }

    fn release(&mut self, index: usize, delta: &mut TableDelta) {
        self.free.push(index);
        delta.removed.push(index);
    }

    /// Compiles `spec` for `app` into a new slot and records where it goes.
    fn place(
        &mut self,
        spec: &RouteSpec,
        source: Option<Arc<RouteSpec>>,
        app: &Arc<AppSpec>,
        placed: &mut Vec<Placed>,
        edits: &mut Edits,
        delta: &mut TableDelta,
    ) {
        let index = self.claim(delta);
        let route = Arc::new(compiled(index, spec, source, app.clone()));
        let (wildcard, host) = match spec.hostname.strip_prefix("*.") {
            Some(parent) => (true, parent),
            None => (false, spec.hostname.as_str()),
        };
        let host: Arc<str> = host.into();
        placed.push(Placed {
            wildcard,
            host: host.clone(),
            route: route.clone(),
        });
        edits
            .entry((wildcard, host))
            .or_default()
            .joining
            .push(route);
    }
}

/// The route an app's hostname gets: the whole host, to the app's usual cluster.
fn host_route(host: &str, app: &str) -> RouteSpec {
    RouteSpec {
        id: Some(format!("host:{host}")),
        hostname: host.to_string(),
        listen_port: None,
        path_prefix: "/".into(),
        rewrite_prefix: None,
        app: app.to_string(),
        protocol_hint: Default::default(),
        max_body_bytes: None,
        upstream: None,
        backend_port: None,
        proxy_protocol: false,
        max_connections: None,
        auth: None,
        rpc: None,
        cors: None,
        limits: None,
        redirect: None,
        resume: None,
        https_redirect: None,
        hsts: None,
        headers: None,
        security_headers: None,
        metrics: Default::default(),
    }
}

/// An app's route on the API hosts; every one has the metrics label `api`.
fn api_route(index: usize, app: &Arc<AppSpec>) -> CompiledRoute {
    CompiledRoute {
        index,
        id: "api".into(),
        prefix: "/v1/".into(),
        rewrite: Some(app.api_rewrite.as_str().into()),
        port: None,
        max_body_bytes: app.max_body_bytes,
        upstream: None,
        auth: app.auth.clone(),
        rpc: app.rpc.clone(),
        cors: app.cors.clone(),
        resume: app.resume.clone(),
        source: None,
        app: app.clone(),
    }
}

/// A hostname or configured route: its own settings, else its app's.
fn compiled(
    index: usize,
    spec: &RouteSpec,
    source: Option<Arc<RouteSpec>>,
    app: Arc<AppSpec>,
) -> CompiledRoute {
    CompiledRoute {
        index,
        id: spec.metrics_id().into(),
        prefix: spec.path_prefix.as_str().into(),
        rewrite: spec.rewrite_prefix.as_deref().map(Into::into),
        port: spec.listen_port,
        max_body_bytes: spec.max_body_bytes.or(app.max_body_bytes),
        upstream: spec.upstream.as_deref().map(Into::into),
        auth: spec.auth.clone().or_else(|| app.auth.clone()),
        rpc: spec.rpc.clone().or_else(|| app.rpc.clone()),
        cors: spec.cors.clone().or_else(|| app.cors.clone()),
        resume: spec.resume.clone().or_else(|| app.resume.clone()),
        source,
        app,
    }
}
