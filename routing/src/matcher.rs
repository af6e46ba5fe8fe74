//! The compiled route table: host lookup by hash, then the longest path prefix.
//!
//! Lookups allocate nothing; the upstream path is described as "replace the first
//! `strip` bytes with `replace`" so the caller builds the new URI once. Every route,
//! including each app's `/v1/<app_id>` route on the API hosts, has a small `index` (a
//! slot, reused once its route is gone): a proxy keeps what it compiles per route in
//! that slot, so a request makes one lookup here and none afterwards. How the table is
//! built and updated app by app is in `table_build`.

use crate::auth::AuthPolicy;
use crate::host::wildcard_parent;
use crate::model::{AppSpec, RouteSpec};
use crate::resume::ResumeSpec;
use crate::rpc::{CorsSpec, RpcSpec};
use std::collections::HashSet;
use std::sync::Arc;

/// A route ready for matching.
#[derive(Debug)]
pub struct CompiledRoute {
    /// Slot of this route (see [`Matched::index`]).
    pub index: usize,
    /// Bounded label for metrics and logs.
    pub id: Arc<str>,
    pub(crate) prefix: Box<str>,
    pub(crate) rewrite: Option<Box<str>>,
    pub(crate) port: Option<u16>,
    pub app: Arc<AppSpec>,
    pub max_body_bytes: Option<u64>,
    pub(crate) upstream: Option<Box<str>>,
    pub(crate) auth: Option<AuthPolicy>,
    pub(crate) rpc: Option<RpcSpec>,
    pub(crate) cors: Option<CorsSpec>,
    pub(crate) resume: Option<ResumeSpec>,
    /// The configured route, or `None` for an app's hostname and API routes.
    pub(crate) source: Option<Arc<RouteSpec>>,
}

/// The outcome of a successful lookup.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    /// The route's slot, below [`RouteTable::route_count`]: where per-route tables
    /// built from [`RouteTable::routes`] keep this route's parts.
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

/// The routes of one host (exact, or the parent of a wildcard), longest prefix first.
pub(crate) type Bucket = Arc<[Arc<CompiledRoute>]>;

/// One app in the table: its spec, its routes and where they sit, so that replacing
/// the app touches its own entries and nothing else.
#[derive(Debug)]
pub(crate) struct AppEntry {
    pub(crate) spec: Arc<AppSpec>,
    /// The app's route on the API hosts (`/v1/<app_id>`).
    pub(crate) api: Arc<CompiledRoute>,
    /// The bucket and slot of each hostname route and configured route of the app.
    pub(crate) placed: Vec<Placed>,
    /// The configured routes sending to the app, L4 ones included, as given.
    pub(crate) routes: Vec<Arc<RouteSpec>>,
}

/// A compiled route of an app and the bucket it sits in.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub(crate) wildcard: bool,
    pub(crate) host: Arc<str>,
    pub(crate) route: Arc<CompiledRoute>,
}

/// Host and path matcher built from a validated [`crate::RoutingSpec`].
///
/// Its maps are persistent (`imbl`): a clone shares them, and
/// [`RouteTable::updated`] replaces a few apps by copying the paths to what changed,
/// so the cost of an update follows the apps it names, not how many there are.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    pub(crate) exact: imbl::HashMap<Arc<str>, Bucket>,
    /// Keyed by the parent of the wildcard: `*.tenant.example` under `tenant.example`.
    pub(crate) wildcard: imbl::HashMap<Arc<str>, Bucket>,
    pub(crate) api_hosts: Arc<HashSet<Box<str>>>,
    /// Every app by id, with its routes.
    pub(crate) apps: imbl::HashMap<Box<str>, Arc<AppEntry>>,
    /// Route indexes run from 0 to `slots - 1`; `free` holds those no route uses.
    pub(crate) slots: usize,
    pub(crate) free: Vec<usize>,
}

impl RouteTable {
    /// An app by id.
    pub fn app(&self, id: &str) -> Option<&Arc<AppSpec>> {
        self.apps.get(id).map(|e| &e.spec)
    }

    /// Every app, in no particular order.
    pub fn apps(&self) -> impl Iterator<Item = &Arc<AppSpec>> {
        self.apps.values().map(|e| &e.spec)
    }

    /// The configured routes of every app (L4 ones included), in no particular order.
    pub fn configured_routes(&self) -> impl Iterator<Item = (&Arc<AppSpec>, &Arc<RouteSpec>)> {
        self.apps
            .values()
            .flat_map(|e| e.routes.iter().map(move |r| (&e.spec, r)))
    }

    /// The configured routes of one app, as given.
    pub fn routes_of(&self, app: &str) -> &[Arc<RouteSpec>] {
        self.apps.get(app).map_or(&[], |e| &e.routes)
    }

    /// The routes of one app (its API route, hostname routes and configured HTTP
    /// routes), as a lookup would return them with nothing to strip.
    pub fn app_routes(&self, app: &str) -> impl Iterator<Item = Matched<'_>> {
        self.apps
            .get(app)
            .into_iter()
            .flat_map(|e| std::iter::once(&e.api).chain(e.placed.iter().map(|p| &p.route)))
            .map(|r| r.matched(0))
    }

    /// An upper bound of the route indexes: every [`Matched::index`] is below it.
    /// Slots freed by an update are reused by later ones, so it stays near the
    /// number of routes.
    pub fn route_count(&self) -> usize {
        self.slots
    }

    /// Every route, as a lookup would return it (with nothing to strip), in no
    /// particular order; each index in use appears once.
    pub fn routes(&self) -> impl Iterator<Item = Matched<'_>> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .flat_map(|b| b.iter())
            .chain(self.apps.values().map(|e| &e.api))
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
            for r in routes.iter() {
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
        let entry = self.apps.get(app_id).ok_or(Miss::UnknownApp(app_id))?;
        Ok(entry.api.matched("/v1/".len() + app_id.len()))
    }
}

impl CompiledRoute {
    pub(crate) fn matched(&self, strip: usize) -> Matched<'_> {
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
