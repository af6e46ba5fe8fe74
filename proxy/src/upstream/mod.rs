//! Upstream clusters of every app, built from a routing spec and reused across
//! reloads when a cluster's spec is unchanged (keeping its pool and health state).

pub mod balance;
pub mod client;
pub mod cluster;
pub mod endpoint;
pub mod grpc_health;
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
use tollgate_routing::RoutingSpec;

/// Runtime upstreams of all apps.
#[derive(Debug, Default)]
pub struct Upstreams {
    apps: HashMap<Box<str>, Arc<AppUpstreams>>,
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
        let mut apps = HashMap::with_capacity(spec.apps.len());
        let mut fresh = Vec::new();
        for app in &spec.apps {
            let mut clusters = HashMap::with_capacity(app.upstreams.len());
            let metrics_app = scope.app_label(&app.id, metrics);
            for (name, cspec) in &app.upstreams {
                let reused = previous
                    .and_then(|p| p.apps.get(app.id.as_str()))
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
                            metrics,
                            scope,
                            max_response_header_bytes,
                        )?);
                        fresh.push(c.clone());
                        c
                    }
                };
                clusters.insert(name.as_str().into(), cluster);
            }
            let Some(default) = clusters.get(app.default_upstream.as_str()).cloned() else {
                continue; // validation guarantees it exists
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
            apps.insert(
                app.id.as_str().into(),
                Arc::new(AppUpstreams {
                    app_header,
                    clusters,
                    default,
                    splits,
                }),
            );
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
