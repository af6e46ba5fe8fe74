//! Upstream clusters of every app, built from a routing spec and reused across
//! reloads when a cluster's spec is unchanged (keeping its pool and health state).

pub mod balance;
pub mod client;
pub mod cluster;
pub mod endpoint;
pub mod grpc_health;
pub mod h1_pool;
pub mod h2_conn;
pub mod h2_pool;
pub mod health;
pub mod retry;

use crate::metric_scope::MetricScope;
use crate::metrics::Metrics;
use cluster::{Cluster, ClusterError};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::Arc;
use tollgate_routing::{AppChange, AppSpec, RoutingSpec};

/// Runtime upstreams of all apps.
#[derive(Debug, Default)]
pub struct Upstreams {
    /// Persistent: an update shares every app it does not name.
    apps: imbl::HashMap<Box<str>, Arc<AppUpstreams>>,
}

/// What building an app's clusters needs.
struct Build<'a> {
    metrics: &'a Metrics,
    scope: &'a MetricScope,
    max_response_header_bytes: usize,
}

impl Build<'_> {
    /// One app's clusters, reusing `previous`'s where their spec and metric label are
    /// unchanged; new clusters are added to `fresh`. `None` when the app has no
    /// default cluster (validation refuses that).
    fn app(
        &self,
        app: &AppSpec,
        previous: Option<&AppUpstreams>,
        fresh: &mut Vec<Arc<Cluster>>,
    ) -> Result<Option<Arc<AppUpstreams>>, ClusterError> {
        let mut clusters = HashMap::with_capacity(app.upstreams.len());
        let metrics_app = self.scope.app_label(&app.id, self.metrics);
        for (name, cspec) in app.upstreams.iter() {
            let reused = previous
                .and_then(|a| a.clusters.get(name.as_str()))
                .filter(|c| c.spec == *cspec && c.metrics_app == metrics_app)
                .cloned();
            let cluster = match reused {
                Some(c) => c,
                None => {
                    let c = Arc::new(Cluster::new(
                        &app.id,
                        name,
                        cspec,
                        self.metrics,
                        self.scope,
                        self.max_response_header_bytes,
                    )?);
                    fresh.push(c.clone());
                    c
                }
            };
            clusters.insert(name.as_str().into(), cluster);
        }
        let Some(default) = clusters.get(app.default_upstream.as_str()).cloned() else {
            return Ok(None);
        };
        let splits = app
            .splits
            .iter()
            .filter_map(|s| {
                let backends: Vec<_> = s
                    .backends
                    .iter()
                    .filter_map(|b| {
                        clusters
                            .get(b.upstream.as_str())
                            .map(|c| (c.clone(), b.weight))
                    })
                    .collect();
                Some(Split {
                    header: HeaderName::from_bytes(s.header.as_bytes()).ok()?,
                    value: match &s.value {
                        Some(v) => Some(HeaderValue::from_str(v).ok()?),
                        None => None,
                    },
                    total: backends.iter().map(|(_, w)| *w).sum(),
                    backends,
                })
            })
            .collect();
        let app_header =
            HeaderValue::from_str(&app.id).unwrap_or(HeaderValue::from_static("invalid"));
        Ok(Some(Arc::new(AppUpstreams {
            app_header,
            clusters,
            default,
            splits,
        })))
    }
}

/// The clusters of one app and how a request picks among them.
#[derive(Debug)]
pub struct AppUpstreams {
    /// `x-tollgate-app-id` value, built once.
    pub app_header: HeaderValue,
    clusters: HashMap<Box<str>, Arc<Cluster>>,
    default: Arc<Cluster>,
    splits: Vec<Split>,
}

#[derive(Debug)]
struct Split {
    header: HeaderName,
    value: Option<HeaderValue>,
    backends: Vec<(Arc<Cluster>, u32)>,
    total: u32,
}

impl AppUpstreams {
    /// The cluster for a request: the first matching split by weight, else the default.
    pub fn choose(&self, headers: &HeaderMap) -> &Arc<Cluster> {
        for s in &self.splits {
            let Some(v) = headers.get(&s.header) else {
                continue;
            };
            if s.value.as_ref().is_some_and(|want| want != v) {
                continue;
            }
            let mut roll = fastrand::u32(..s.total.max(1));
            for (c, w) in &s.backends {
                if roll < *w {
                    return c;
                }
                roll -= w;
            }
        }
        &self.default
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.values()
    }
}

impl Upstreams {
    /// Builds clusters for a validated spec, reusing those of `previous` whose spec is equal.
    /// Response heads above `max_response_header_bytes` fail their request (502).
    pub fn build(
        spec: &RoutingSpec,
        previous: Option<&Upstreams>,
        metrics: &Metrics,
        scope: &MetricScope,
        max_response_header_bytes: usize,
    ) -> Result<Self, ClusterError> {
        let mut apps = imbl::HashMap::new();
        let mut fresh = Vec::new();
        let build = Build {
            metrics,
            scope,
            max_response_header_bytes,
        };
        for app in &spec.apps {
            let old = previous.and_then(|p| p.apps.get(app.id.as_str()));
            if let Some(built) = build.app(app, old.map(|a| &**a), &mut fresh)? {
                apps.insert(app.id.as_str().into(), built);
            }
        }
        for c in &fresh {
            health::start(c);
        }
        Ok(Upstreams { apps })
    }

    /// These upstreams with those of the apps `changes` name built again (their
    /// clusters reused where unchanged); every other app's are shared as they are.
    pub fn updated(
        &self,
        changes: &[AppChange],
        metrics: &Metrics,
        scope: &MetricScope,
        max_response_header_bytes: usize,
    ) -> Result<Self, ClusterError> {
        let mut apps = self.apps.clone();
        let mut fresh = Vec::new();
        let build = Build {
            metrics,
            scope,
            max_response_header_bytes,
        };
        for c in changes {
            let old = apps.remove(c.id.as_str());
            let Some(app) = &c.spec else { continue };
            if let Some(built) = build.app(app, old.as_deref(), &mut fresh)? {
                apps.insert(c.id.as_str().into(), built);
            }
        }
        for c in &fresh {
            health::start(c);
        }
        Ok(Upstreams { apps })
    }

    pub fn app(&self, id: &str) -> Option<&Arc<AppUpstreams>> {
        self.apps.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &AppUpstreams)> {
        self.apps.iter().map(|(k, v)| (k.as_ref(), &**v))
    }
}
