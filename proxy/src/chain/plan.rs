//! The per-route plan: everything a request on a route needs, resolved once per config
//! (the app's clusters, the named cluster, limits, schema) and the route's filters in
//! the order they run. Adding a filter is one line in [`build_plans`].

use super::HeadFilter;
use super::{admission, auth, body_limit, cors, resume, rpc_call, status};
use super::{headers, hsts, https_redirect, redirect, security_headers};
use crate::limits::LimitMap;
use crate::upstream::AppUpstreams;
use crate::upstream::cluster::Cluster;
use std::collections::HashMap;
use std::sync::Arc;
use tollgate_filters::rpc::Schema;
use tollgate_routing::{AppSpec, Matched, RouteTable, TableDelta};

/// One route, compiled for the request path.
#[derive(Debug)]
pub struct RoutePlan {
    pub app: Arc<AppSpec>,
    /// The app's clusters; `None` when the app has none to serve from.
    pub upstreams: Option<Arc<AppUpstreams>>,
    pub cluster: ClusterChoice,
    /// The route is a gRPC service: errors are rendered in the client's RPC protocol.
    pub rpc: bool,
    pub max_body_bytes: Option<u64>,
    /// Server streams on this route can be resumed.
    pub resume: Option<Arc<tollgate_routing::ResumeSpec>>,
    /// The route's request series and its app's metric label, resolved once.
    pub series: Arc<crate::metric_scope::RouteSeries>,
    pub(super) head: Box<[Box<dyn HeadFilter>]>,
}

/// Which of the app's clusters serves a request.
#[derive(Debug)]
pub enum ClusterChoice {
    /// The app's own choice per request (splits, else its default).
    App,
    /// The route names one; `None` when the app has no such cluster.
    Named(Option<Arc<Cluster>>),
}

/// Compiled runtime parts the plans point into.
pub struct Parts<'a> {
    pub upstreams: &'a crate::upstream::Upstreams,
    pub limits: &'a LimitMap,
    pub route_limits: &'a LimitMap,
    pub schemas: &'a HashMap<String, Schema>,
    pub metrics: &'a crate::metrics::Metrics,
    pub metric_scope: &'a crate::metric_scope::MetricScope,
}

/// Each route's plan, in its slot ([`Matched::index`]); an empty slot is `None`. A
/// persistent vector: an update sets the slots it changed and shares the rest.
pub type Plans = imbl::Vector<Option<Arc<RoutePlan>>>;

/// One plan per route of `table`.
pub fn build_plans(table: &RouteTable, parts: &Parts<'_>) -> Plans {
    let mut plans: Vec<Option<Arc<RoutePlan>>> = vec![None; table.route_count()];
    for m in table.routes() {
        if let Some(slot) = plans.get_mut(m.index) {
            *slot = Some(Arc::new(plan(&m, parts)));
        }
    }
    plans.into_iter().collect()
}

/// `previous` with the slots `delta` emptied cleared and the routes of the apps
/// `changed` names planned again.
pub fn update_plans<'a>(
    previous: &Plans,
    table: &RouteTable,
    delta: &TableDelta,
    changed: impl Iterator<Item = &'a str>,
    parts: &Parts<'_>,
) -> Plans {
    let mut plans = previous.clone();
    for &i in &delta.removed {
        if i < plans.len() {
            plans.set(i, None);
        }
    }
    while plans.len() < table.route_count() {
        plans.push_back(None);
    }
    for app in changed {
        for m in table.app_routes(app) {
            if m.index < plans.len() {
                plans.set(m.index, Some(Arc::new(plan(&m, parts))));
            }
        }
    }
    plans
}

fn plan(m: &Matched<'_>, parts: &Parts<'_>) -> RoutePlan {
    let app: &Arc<AppSpec> = m.app;
    let upstreams = parts.upstreams.app(&app.id).cloned();
    let cluster = match m.upstream {
        Some(name) => {
            ClusterChoice::Named(upstreams.as_ref().and_then(|u| u.cluster(name)).cloned())
        }
        None => ClusterChoice::App,
    };
    let limits = parts
        .route_limits
        .get(&**m.route_id)
        .or_else(|| parts.limits.get(app.id.as_str()))
        .cloned();
    let schema = m
        .rpc
        .and_then(|spec| spec.descriptor_set.as_deref())
        .and_then(|name| parts.schemas.get(name))
        .cloned();

    // The chain, in the order the filters run.
    let mut head: Vec<Box<dyn HeadFilter>> = Vec::new();
    // Redirects first: nothing is exchanged in clear text or checked before them.
    head.extend(https_redirect::compile(m));
    head.extend(redirect::compile(m));
    // Answers are edited in reverse order: HSTS last (nothing can send it over
    // plaintext), the header rules after the security headers' defaults.
    head.extend(hsts::compile(m));
    head.extend(headers::compile(m));
    head.extend(security_headers::compile(m));
    if let Some(spec) = m.cors {
        head.push(Box::new(cors::Cors::new(spec.clone())));
    }
    if let Some(filter) = status::AppStatus::new(app) {
        head.push(Box::new(filter));
    }
    if let Some(limit) = m.max_body_bytes {
        head.push(Box::new(body_limit::BodyLimit::new(limit)));
    }
    if let Some(policy) = m.auth {
        head.push(Box::new(auth::Auth::new(&app.id, policy.clone())));
    }
    if let Some(spec) = m.rpc {
        head.push(Box::new(rpc_call::RpcCallHead::new(
            spec.clone(),
            schema.clone(),
        )));
    }
    // Resumes answer from the buffer: after auth and the call, before admission.
    let resume = m.resume.cloned().map(Arc::new);
    if let Some(spec) = &resume {
        head.push(Box::new(resume::Resume::new(spec.clone())));
    }
    if let Some(limits) = limits {
        head.push(Box::new(admission::Admission::new(limits, schema)));
    }
    RoutePlan {
        resume,
        app: app.clone(),
        upstreams,
        cluster,
        rpc: m.rpc.is_some(),
        max_body_bytes: m.max_body_bytes,
        series: parts.metric_scope.route_series(m, parts.metrics),
        head: head.into_boxed_slice(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::upstream::Upstreams;
    use tollgate_routing::{RoutingSpec, Snapshot};

    const SPEC: &str = r#"
api_hosts = ["api.example.com"]

[[apps]]
id = "acme"
hostnames = ["acme.example"]
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:9" }]
[apps.upstreams.canary]
endpoints = [{ address = "127.0.0.1:9" }]
[apps.auth]
api_keys = true
[apps.cors]
allowed_origins = ["https://app.example"]

[[apps]]
id = "globex"
status = "suspended"
hostnames = ["globex.example"]
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:9" }]

[[routes]]
hostname = "acme.example"
path_prefix = "/upload"
upstream = "canary"
max_body_bytes = 10
app = "acme"
"#;

    fn names(plan: &RoutePlan) -> Vec<String> {
        plan.head
            .iter()
            .map(|f| {
                let debug = format!("{f:?}");
                debug.split([' ', '{']).next().unwrap_or("").to_string()
            })
            .collect()
    }

    #[tokio::test]
    async fn each_route_gets_its_own_chain_in_order_and_its_resolved_cluster() {
        let spec: RoutingSpec = toml::from_str(SPEC).expect("spec parses");
        let snapshot = Snapshot::compile(&spec, 1).expect("spec is valid");
        let metrics = Metrics::new().expect("metrics");
        let scope = crate::metric_scope::MetricScope::default();
        let upstreams = Upstreams::build(&spec, None, &metrics, &scope, 65536).expect("clusters");
        let none = LimitMap::new();
        let plans = build_plans(
            &snapshot.table,
            &Parts {
                upstreams: &upstreams,
                limits: &none,
                route_limits: &none,
                schemas: &HashMap::new(),
                metrics: &metrics,
                metric_scope: &scope,
            },
        );
        assert_eq!(plans.len(), snapshot.table.route_count());
        let plan_of = |host: &str, path: &str| {
            let m = snapshot.table.lookup(host, 443, path).expect("route");
            let plan = plans[m.index].clone().expect("a plan in the route's slot");
            assert_eq!(plan.app.id, m.app.id, "plan index matches the route");
            plan
        };

        let upload = plan_of("acme.example", "/upload/x");
        assert_eq!(names(&upload), ["Cors", "BodyLimit", "Auth"]);
        match &upload.cluster {
            ClusterChoice::Named(Some(c)) => assert_eq!(&*c.name, "canary"),
            other => panic!("named cluster expected, got {other:?}"),
        }
        let root = plan_of("acme.example", "/");
        assert_eq!(names(&root), ["Cors", "Auth"]);
        assert!(matches!(root.cluster, ClusterChoice::App));
        assert_eq!(
            names(&plan_of("api.example.com", "/v1/acme/x")),
            ["Cors", "Auth"]
        );
        // A suspended app's routes refuse before anything else runs.
        assert_eq!(names(&plan_of("globex.example", "/")), ["AppStatus"]);
        assert!(plans.iter().flatten().all(|p| p.upstreams.is_some()));
    }
}
