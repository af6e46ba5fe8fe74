//! The compiled route table: host lookup by hash, then the longest path prefix.
//!
//! Lookups allocate nothing; the upstream path is described as "replace the first
//! `strip` bytes with `replace`" so the caller builds the new URI once. Every route,
//! including each app's `/v1/<app_id>` route on the API hosts, has a dense `index`: a
//! proxy compiles what it needs per route into a `Vec` in that order, so a request
//! makes one lookup here and none afterwards.

use crate::auth::AuthPolicy;
use crate::host::wildcard_parent;
use crate::model::{AppSpec, RouteSpec, RoutingSpec};
use crate::resume::ResumeSpec;
use crate::rpc::{CorsSpec, RpcSpec};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A route ready for matching.
#[derive(Debug)]
pub struct CompiledRoute {
    /// Position in [`RouteTable::routes`].
    pub index: usize,
    /// Bounded label for metrics and logs.
    pub id: Arc<str>,
    prefix: Box<str>,
    rewrite: Option<Box<str>>,
    port: Option<u16>,
    pub app: Arc<AppSpec>,
    pub max_body_bytes: Option<u64>,
    upstream: Option<Box<str>>,
    auth: Option<AuthPolicy>,
    rpc: Option<RpcSpec>,
    cors: Option<CorsSpec>,
    resume: Option<ResumeSpec>,
    /// The configured route, or `None` for an app's hostname and API routes.
    source: Option<Arc<RouteSpec>>,
}

/// The outcome of a successful lookup.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    /// Dense route index: the slot of this route in per-route tables built from
    /// [`RouteTable::routes`].
    pub index: usize,
    pub route_id: &'a Arc<str>,
    pub app: &'a Arc<AppSpec>,
    /// Bytes of the request path replaced by `replace` upstream.
    pub strip: usize,
    pub replace: Option<&'a str>,
    pub max_body_bytes: Option<u64>,
    /// The app cluster the route names; the app's usual choice when `None`.
    pub upstream: Option<&'a str>,
    /// Credentials required: the route's policy, else the app's; open when `None`.
    pub auth: Option<&'a AuthPolicy>,
    /// gRPC service settings: the route's, else the app's; plain HTTP when `None`.
    pub rpc: Option<&'a RpcSpec>,
    /// Cross-origin access: the route's, else the app's.
    pub cors: Option<&'a CorsSpec>,
    /// Resumable server streams: the route's setting, else the app's.
    pub resume: Option<&'a ResumeSpec>,
    /// The configured route, or `None` for an app's hostname and API routes.
    pub source: Option<&'a RouteSpec>,
}

impl Matched<'_> {
    /// The upstream path for `path` (no query), or `None` when it is unchanged.
    pub fn rewrite(&self, path: &str) -> Option<String> {
        let replace = self.replace?;
        let rest = path.get(self.strip..).unwrap_or("");
        let mut out = String::with_capacity(replace.len() + rest.len() + 1);
        out.push_str(replace);
        match (replace.ends_with('/'), rest.starts_with('/')) {
            (true, true) => out.push_str(&rest[1..]),
            (false, false) if !rest.is_empty() => {
                out.push('/');
                out.push_str(rest);
            }
            _ => out.push_str(rest),
        }
        Some(out)
    }
}

/// Why nothing matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss<'a> {
    /// API host, `/v1/<app_id>` names no app.
    UnknownApp(&'a str),
    /// No route for this host, port and path.
    NoRoute,
}

/// Host and path matcher built from a validated [`RoutingSpec`].
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<Box<str>, Vec<CompiledRoute>>,
    /// Keyed by the parent of the wildcard: `*.tenant.example` under `tenant.example`.
    wildcard: HashMap<Box<str>, Vec<CompiledRoute>>,
    api_hosts: HashSet<Box<str>>,
    apps: HashMap<Box<str>, Arc<AppSpec>>,
    /// Each app's route on the API hosts (`/v1/<app_id>`), by app id.
    api: HashMap<Box<str>, CompiledRoute>,
    /// How many routes there are: indexes run from 0 to `count - 1`.
    count: usize,
}

impl RouteTable {
    /// Compiles a spec that [`crate::validate`] accepted.
    pub(crate) fn compile(spec: &RoutingSpec) -> Self {
        let apps: HashMap<Box<str>, Arc<AppSpec>> = spec
            .apps
            .iter()
            .map(|a| (a.id.as_str().into(), Arc::new(a.clone())))
            .collect();
        let mut table = RouteTable {
            api_hosts: spec.api_hosts.iter().map(|h| h.as_str().into()).collect(),
            ..Default::default()
        };
        // Metrics label of every `/v1/<app_id>` match on an API host.
        let api_id: Arc<str> = "api".into();
        for app in &spec.apps {
            let Some(app) = apps.get(app.id.as_str()) else {
                continue;
            };
            let route = CompiledRoute {
                index: table.next_index(),
                id: api_id.clone(),
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
            };
            table.api.insert(app.id.as_str().into(), route);
        }
        for app in spec.apps.iter().filter_map(|a| apps.get(a.id.as_str())) {
            for host in &app.hostnames {
                let route = RouteSpec {
                    id: Some(format!("host:{host}")),
                    hostname: host.clone(),
                    listen_port: None,
                    path_prefix: "/".into(),
                    rewrite_prefix: None,
                    app: app.id.clone(),
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
                };
                table.insert(&route, None, app.clone());
            }
        }
        for route in spec.routes.iter().filter(|r| !r.is_l4()) {
            if let Some(app) = apps.get(route.app.as_str()) {
                table.insert(route, Some(Arc::new(route.clone())), app.clone());
            }
        }
        for routes in table.exact.values_mut().chain(table.wildcard.values_mut()) {
            // Longest prefix first; a port-bound route before an unbound one.
            routes.sort_by(|a, b| {
                (b.prefix.len(), b.port.is_some()).cmp(&(a.prefix.len(), a.port.is_some()))
            });
        }
        table.apps = apps;
        table
    }

    fn next_index(&mut self) -> usize {
        self.count += 1;
        self.count - 1
    }

    fn insert(&mut self, spec: &RouteSpec, source: Option<Arc<RouteSpec>>, app: Arc<AppSpec>) {
        let route = CompiledRoute {
            index: self.next_index(),
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
        };
        let (map, key) = match spec.hostname.strip_prefix("*.") {
            Some(parent) => (&mut self.wildcard, parent),
            None => (&mut self.exact, spec.hostname.as_str()),
        };
        map.entry(key.into()).or_default().push(route);
    }

    pub(crate) fn apps(&self) -> &HashMap<Box<str>, Arc<AppSpec>> {
        &self.apps
    }

    /// An app by id.
    pub fn app(&self, id: &str) -> Option<&Arc<AppSpec>> {
        self.apps.get(id)
    }

    /// How many routes the table holds; every [`Matched::index`] is below it.
    pub fn route_count(&self) -> usize {
        self.count
    }

    /// Every route, as a lookup would return it (with nothing to strip), in no
    /// particular order; each index from 0 to [`Self::route_count`] appears once.
    pub fn routes(&self) -> impl Iterator<Item = Matched<'_>> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .flatten()
            .chain(self.api.values())
            .map(|r| r.matched(0))
    }

    /// Finds the route for a normalised `host`, the listener `port` and a request `path`.
    pub fn lookup<'a, 'p>(
        &'a self,
        host: &str,
        port: u16,
        path: &'p str,
    ) -> Result<Matched<'a>, Miss<'p>> {
        if self.api_hosts.contains(host) {
            return self.lookup_api(path);
        }
        let candidates = self
            .exact
            .get(host)
            .into_iter()
            .chain(wildcard_parent(host).and_then(|p| self.wildcard.get(p)));
        for routes in candidates {
            for r in routes {
                if r.port.is_none_or(|p| p == port) && prefix_matches(&r.prefix, path) {
                    return Ok(r.matched(r.prefix.len()));
                }
            }
        }
        Err(Miss::NoRoute)
    }

    fn lookup_api<'a, 'p>(&'a self, path: &'p str) -> Result<Matched<'a>, Miss<'p>> {
        let rest = path.strip_prefix("/v1/").ok_or(Miss::NoRoute)?;
        let app_id = rest.split('/').next().unwrap_or("");
        if app_id.is_empty() {
            return Err(Miss::NoRoute);
        }
        let route = self.api.get(app_id).ok_or(Miss::UnknownApp(app_id))?;
        Ok(route.matched("/v1/".len() + app_id.len()))
    }
}

impl CompiledRoute {
    fn matched(&self, strip: usize) -> Matched<'_> {
        Matched {
            index: self.index,
            route_id: &self.id,
            app: &self.app,
            strip,
            replace: self.rewrite.as_deref(),
            max_body_bytes: self.max_body_bytes,
            upstream: self.upstream.as_deref(),
            auth: self.auth.as_ref(),
            rpc: self.rpc.as_ref(),
            cors: self.cors.as_ref(),
            resume: self.resume.as_ref(),
            source: self.source.as_deref(),
        }
    }
}

/// Segment-aware prefix: `/foo` matches `/foo` and `/foo/x` but not `/foobar`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}
