//! The proxy's shared state: the active config (swapped atomically as one value),
//! the certificate resolver, metrics and settings fixed at start.

use crate::acme::{AcmeMetrics, AcmeTable};
use crate::auth::AuthState;
use crate::cert_health::CertHealth;
use crate::chain::{PlanParts, Plans, build_plans, update_plans};
use crate::config::{ConfigError, Limits, Loaded};
use crate::control_client::ControlStatus;
use crate::limits::{self, LimitEngine, LimitMap};
use crate::metric_scope::MetricScope;
use crate::metrics::Metrics;
use crate::upstream::Upstreams;
use crate::usage::UsageRecorder;
use arc_swap::ArcSwap;
use prometheus::IntGauge;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tollgate_certs::{CertResolver, CertStore};
use tollgate_filters::apikey::KeyStore;
use tollgate_filters::oidc::IssuerRegistry;
use tollgate_filters::rpc::Schema;
use tollgate_routing::{
    AcmeChallenge, AppChange, PathPolicy, RouteTable, RoutingDelta, RoutingSpec, Snapshot, validate,
};

/// One config generation: routes and the upstream clusters they point at.
///
/// The parts compiled from routes are persistent maps or behind `Arc`s, so a
/// generation that changes only API keys or ACME challenges shares them with the one
/// before ([`ProxyState::with_keys`]), and one that changes a few apps copies the
/// paths to those apps and shares the rest ([`ProxyState::updated`]).
#[derive(Debug)]
pub struct ProxyState {
    /// Counts every swap, whatever it changed.
    pub version: u64,
    pub snapshot: Arc<Snapshot>,
    pub upstreams: Arc<Upstreams>,
    pub auth: AuthState,
    /// Schemas for Connect JSON, by the `descriptor_set` name routes give.
    pub schemas: Arc<HashMap<String, Schema>>,
    /// Compiled rate limits, quotas and budgets of the apps that have them.
    pub limits: LimitMap,
    /// Routes with limits of their own (instead of their app's), by route id.
    pub route_limits: LimitMap,
    /// Each route's plan (resolved parts and filter chain), by route slot.
    pub(crate) routes: Plans,
    /// The apps whose metrics carry their id.
    pub(crate) metric_scope: Arc<MetricScope>,
    /// The ACME challenges to answer, by hostname.
    pub(crate) acme: AcmeTable,
}

/// What the routes of a new generation are made of.
pub enum Routing {
    /// The routes serving, unchanged: only keys, certificates and challenges change.
    Same,
    /// A whole spec, compiled from scratch (reusing clusters and limits that match).
    Full(RoutingSpec),
    /// A few apps changed (see [`EdgeConfig::routing_delta`]); the rest is shared.
    ///
    /// [`EdgeConfig::routing_delta`]: tollgate_routing::EdgeConfig::routing_delta
    Delta(RoutingDelta),
}

/// What building a generation needs besides its routes.
struct Env<'a> {
    metrics: &'a Metrics,
    engine: &'a LimitEngine,
    settings: &'a Limits,
}

impl ProxyState {
    /// Builds the runtime parts of a snapshot compiled from `spec`, reusing what
    /// `previous` already runs. `keys`, when given, is the key store to serve (kept
    /// up to date by the caller); otherwise it is built from the snapshot's keys.
    fn build(
        snapshot: Arc<Snapshot>,
        spec: &RoutingSpec,
        keys: Option<KeyStore>,
        acme: &tollgate_routing::OrdMap<String, AcmeChallenge>,
        previous: Option<&ProxyState>,
        env: &Env<'_>,
    ) -> Result<Self, ConfigError> {
        let metric_scope = MetricScope::build(
            spec,
            env.settings.max_detailed_metrics_apps,
            previous.map(|p| &*p.metric_scope),
        );
        let upstreams = Upstreams::build(
            spec,
            previous.map(|p| &*p.upstreams),
            env.metrics,
            &metric_scope,
            env.settings.max_response_header_bytes,
        )?;
        let keys = match keys {
            Some(k) => k,
            None => KeyStore::build(&snapshot.api_keys).map_err(ConfigError::ApiKeys)?,
        };
        let issuers = IssuerRegistry::build(&spec.oidc_issuers, previous.map(|p| &p.auth.issuers))
            .map_err(ConfigError::Issuers)?;
        let schemas = load_schemas(spec, previous.map(|p| &*p.schemas))?;
        let limits = limits::build_apps(spec, previous.map(|p| &p.limits), env.engine);
        let route_limits =
            limits::build_routes(spec, previous.map(|p| &p.route_limits), env.engine);
        let routes = build_plans(
            &snapshot.table,
            &PlanParts {
                upstreams: &upstreams,
                limits: &limits,
                route_limits: &route_limits,
                schemas: &schemas,
                metrics: env.metrics,
                metric_scope: &metric_scope,
            },
        );
        let acme = AcmeTable::build(acme, previous.map(|p| &p.acme));
        Ok(ProxyState {
            version: snapshot.version,
            snapshot,
            upstreams: Arc::new(upstreams),
            auth: AuthState { keys, issuers },
            schemas: Arc::new(schemas),
            limits,
            route_limits,
            routes,
            metric_scope: Arc::new(metric_scope),
            acme,
        })
    }

    /// This generation with the apps `delta` names compiled again and everything
    /// else shared, after validating what they relate to. `None` when the change
    /// needs a whole build (see [`MetricScope::updated`]); `snapshot` is then the
    /// updated routes to build it from.
    fn updated(
        &self,
        delta: RoutingDelta,
        keys: Option<KeyStore>,
        acme: &tollgate_routing::OrdMap<String, AcmeChallenge>,
        version: u64,
        env: &Env<'_>,
    ) -> Result<Result<Self, Arc<Snapshot>>, ConfigError> {
        validate(&delta.scoped)?;
        let changes = delta.apps;
        let (snapshot, slots) = self.snapshot.updated(changes.clone(), version);
        let snapshot = Arc::new(snapshot);
        let Some(metric_scope) = self
            .metric_scope
            .updated(&changes, env.settings.max_detailed_metrics_apps)
        else {
            return Ok(Err(snapshot));
        };
        let upstreams = self.upstreams.updated(
            &changes,
            env.metrics,
            &metric_scope,
            env.settings.max_response_header_bytes,
        )?;
        let schemas = update_schemas(&self.schemas, &changes)?;
        let (limits, route_limits) = limits::update(
            (&self.limits, &self.route_limits),
            &changes,
            |app| self.snapshot.table.routes_of(app),
            env.engine,
        );
        let routes = update_plans(
            &self.routes,
            &snapshot.table,
            &slots,
            changes.iter().map(|c| c.id.as_str()),
            &PlanParts {
                upstreams: &upstreams,
                limits: &limits,
                route_limits: &route_limits,
                schemas: &schemas,
                metrics: env.metrics,
                metric_scope: &metric_scope,
            },
        );
        report_degraded_apps(&changes, &self.snapshot.table, env.metrics);
        Ok(Ok(ProxyState {
            version,
            snapshot,
            upstreams: Arc::new(upstreams),
            auth: AuthState {
                keys: keys.unwrap_or_else(|| self.auth.keys.clone()),
                issuers: self.auth.issuers.clone(),
            },
            schemas,
            limits,
            route_limits,
            routes,
            metric_scope: Arc::new(metric_scope),
            acme: AcmeTable::build(acme, Some(&self.acme)),
        }))
    }

    /// This generation's routes with other keys and ACME challenges: nothing compiled
    /// from routes is rebuilt, so the cost follows the keys and challenges changed.
    fn with_keys(
        &self,
        version: u64,
        keys: Option<KeyStore>,
        acme: &tollgate_routing::OrdMap<String, AcmeChallenge>,
    ) -> ProxyState {
        ProxyState {
            version,
            snapshot: self.snapshot.clone(),
            upstreams: self.upstreams.clone(),
            auth: AuthState {
                keys: keys.unwrap_or_else(|| self.auth.keys.clone()),
                issuers: self.auth.issuers.clone(),
            },
            schemas: self.schemas.clone(),
            limits: self.limits.clone(),
            route_limits: self.route_limits.clone(),
            routes: self.routes.clone(),
            metric_scope: self.metric_scope.clone(),
            acme: AcmeTable::build(acme, Some(&self.acme)),
        }
    }
}

/// Counts the apps refused for a config problem, logging each new problem once.
fn report_degraded(next: &RoutingSpec, previous: &RouteTable, metrics: &Metrics) {
    let mut count = 0;
    for app in &next.apps {
        let Some(why) = &app.degraded else { continue };
        count += 1;
        let known = previous
            .app(&app.id)
            .is_some_and(|p| p.degraded.as_ref() == Some(why));
        if !known {
            tracing::error!(app = %app.id, problem = %why, "app refused until its config is fixed");
        }
    }
    metrics.apps_degraded.set(count);
}

/// [`report_degraded`] for the apps `changes` name: the count moves by what they
/// changed.
fn report_degraded_apps(changes: &[AppChange], previous: &RouteTable, metrics: &Metrics) {
    let mut count = metrics.apps_degraded.get();
    for c in changes {
        let before = previous.app(&c.id).and_then(|a| a.degraded.as_ref());
        let now = c.spec.as_ref().and_then(|a| a.degraded.as_ref());
        count += i64::from(now.is_some()) - i64::from(before.is_some());
        if let Some(why) = now
            && before != Some(why)
        {
            tracing::error!(app = %c.id, problem = %why, "app refused until its config is fixed");
        }
    }
    metrics.apps_degraded.set(count.max(0));
}

/// The schemas serving, with any the apps `changes` name newly use loaded; the map
/// is shared as it is when they use none it lacks.
fn update_schemas(
    previous: &Arc<HashMap<String, Schema>>,
    changes: &[AppChange],
) -> Result<Arc<HashMap<String, Schema>>, ConfigError> {
    let missing: Vec<&str> = changes
        .iter()
        .flat_map(|c| {
            let routes = c.routes.iter().filter_map(|r| r.rpc.as_ref());
            c.spec.iter().filter_map(|a| a.rpc.as_ref()).chain(routes)
        })
        .filter_map(|rpc| rpc.descriptor_set.as_deref())
        .filter(|name| !previous.contains_key(*name))
        .collect();
    if missing.is_empty() {
        return Ok(previous.clone());
    }
    let mut out = (**previous).clone();
    for name in missing {
        if !out.contains_key(name) {
            out.insert(name.to_string(), load_schema(name, None)?);
        }
    }
    Ok(Arc::new(out))
}

/// Name of the schema compiled into the binary (the `proto/` crate's files).
pub const BUILTIN_SCHEMA: &str = "builtin";

/// Loads every descriptor set the routes name. The builtin one is reused from the
/// previous generation; files are read again so a reload picks up a changed schema.
fn load_schemas(
    spec: &RoutingSpec,
    previous: Option<&HashMap<String, Schema>>,
) -> Result<HashMap<String, Schema>, ConfigError> {
    let names = spec
        .apps
        .iter()
        .filter_map(|a| a.rpc.as_ref())
        .chain(spec.routes.iter().filter_map(|r| r.rpc.as_ref()))
        .filter_map(|rpc| rpc.descriptor_set.as_deref());
    let mut out = HashMap::new();
    for name in names {
        if out.contains_key(name) {
            continue;
        }
        let reused = previous
            .and_then(|p| p.get(name))
            .filter(|_| name == BUILTIN_SCHEMA);
        out.insert(name.to_string(), load_schema(name, reused)?);
    }
    Ok(out)
}

/// The schema `name` names: `reused` when given, else the builtin one or a file read.
fn load_schema(name: &str, reused: Option<&Schema>) -> Result<Schema, ConfigError> {
    if let Some(s) = reused {
        return Ok(s.clone());
    }
    let bytes = if name == BUILTIN_SCHEMA {
        tollgate_proto::FILE_DESCRIPTOR_SET.to_vec()
    } else {
        std::fs::read(name).map_err(|source| ConfigError::DescriptorSetRead {
            path: name.into(),
            source,
        })?
    };
    Schema::from_bytes(&bytes).map_err(|source| ConfigError::Schema {
        name: name.to_string(),
        source,
    })
}

/// Everything a connection or request needs, shared by all of them.
pub struct Shared {
    pub state: ArcSwap<ProxyState>,
    pub certs: Arc<CertResolver>,
    /// Expired and refused certificates, made visible.
    pub cert_health: CertHealth,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// How request paths are normalised before matching.
    pub paths: PathPolicy,
    pub access_log: bool,
    draining: AtomicBool,
    pub streams_h1: IntGauge,
    pub streams_h2: IntGauge,
    /// Serialises reloads so two never race to swap.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Set once at start when routing comes from the control service.
    pub control: OnceLock<Arc<ControlStatus>>,
    /// ACME challenges answered and active.
    pub acme_metrics: AcmeMetrics,
    /// Backends of rate limits and budgets.
    pub limit_engine: Arc<LimitEngine>,
    /// Per-app usage (requests, bytes, metered units) for billing.
    pub usage: Arc<UsageRecorder>,
    /// Resumable streams carried by this proxy.
    pub resume: Arc<crate::resume::Resumer>,
    /// Trace context propagation, and spans when `[tracing]` exports them.
    pub tracing: crate::trace::Tracing,
}

impl Shared {
    /// Builds the first state from a loaded config (version 1).
    pub fn new(
        loaded: Loaded,
        metrics: Arc<Metrics>,
        limit_engine: Arc<LimitEngine>,
        tracing: crate::trace::Tracing,
    ) -> Result<Arc<Self>, ConfigError> {
        let state = ProxyState::build(
            Arc::new(loaded.snapshot(1)?),
            &loaded.routing,
            None,
            &tollgate_routing::OrdMap::new(),
            None,
            &Env {
                metrics: &metrics,
                engine: &limit_engine,
                settings: &loaded.config.limits,
            },
        )?;
        metrics.config_version.set(1);
        state.metric_scope.publish(&metrics);
        metrics.certificates_loaded.set(loaded.certs.len() as i64);
        let cert_health = CertHealth::register(&metrics.registry).map_err(ConfigError::Metrics)?;
        cert_health.observe(&loaded.certs);
        let acme_metrics =
            AcmeMetrics::register(&metrics.registry).map_err(ConfigError::Metrics)?;
        let resume = crate::resume::Resumer::start(
            &loaded.config.resume,
            loaded.config.rate_limiting.redis_url.as_deref(),
            &metrics.registry,
        )
        .map_err(ConfigError::Resume)?;
        let shared = Shared {
            cert_health,
            state: ArcSwap::from_pointee(state),
            certs: Arc::new(CertResolver::new(loaded.certs)),
            streams_h1: metrics.streams_active.with_label_values(&["http1"]),
            streams_h2: metrics.streams_active.with_label_values(&["http2"]),
            limits: loaded.config.limits.clone(),
            paths: loaded.config.paths.policy(),
            access_log: loaded.config.log.access_log,
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            control: OnceLock::new(),
            acme_metrics,
            limit_engine,
            usage: Arc::new(UsageRecorder::new()),
            resume,
            metrics,
            tracing,
        };
        Ok(Arc::new(shared))
    }

    /// Swaps in a new config; on error nothing changes. Returns the new version.
    pub fn apply(&self, loaded: Loaded) -> Result<u64, ConfigError> {
        self.apply_parts(
            Routing::Full(loaded.routing),
            None,
            loaded.certs,
            &tollgate_routing::OrdMap::new(),
        )
    }

    /// Swaps in routes, certificates and ACME challenges from any source (the config
    /// file has no challenges; the control service publishes them); on error nothing
    /// changes. Returns the new version. `keys`, when given, replaces the keys of
    /// `routing` (see [`ProxyState::build`]).
    pub fn apply_parts(
        &self,
        routing: Routing,
        keys: Option<KeyStore>,
        certs: CertStore,
        acme: &tollgate_routing::OrdMap<String, AcmeChallenge>,
    ) -> Result<u64, ConfigError> {
        let started = Instant::now();
        let current = self.state.load();
        let version = current.version + 1;
        let env = Env {
            metrics: &self.metrics,
            engine: &self.limit_engine,
            settings: &self.limits,
        };
        let same = matches!(routing, Routing::Same);
        let full = |snapshot: Arc<Snapshot>, spec: &RoutingSpec, keys| {
            let state = ProxyState::build(snapshot, spec, keys, acme, Some(&current), &env)?;
            report_degraded(spec, &current.snapshot.table, &self.metrics);
            Ok::<_, ConfigError>(state)
        };
        let state = match routing {
            Routing::Same => current.with_keys(version, keys, acme),
            Routing::Full(spec) => full(Arc::new(Snapshot::compile(&spec, version)?), &spec, keys)?,
            Routing::Delta(delta) => {
                match current.updated(delta, keys.clone(), acme, version, &env)? {
                    Ok(state) => state,
                    Err(snapshot) => {
                        let spec = snapshot.spec();
                        full(snapshot, &spec, keys)?
                    }
                }
            }
        };
        if !same {
            state.metric_scope.publish(&self.metrics);
        }
        let cert_count = certs.len();
        let acme_active = state.acme.len();
        // Routes and certificates change together, right after each other.
        self.state.store(Arc::new(state));
        self.cert_health.observe(&certs);
        self.certs.swap(certs);
        self.metrics.config_version.set(version as i64);
        self.metrics.certificates_loaded.set(cert_count as i64);
        self.acme_metrics.set_active(acme_active);
        self.metrics
            .apply_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(version)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
