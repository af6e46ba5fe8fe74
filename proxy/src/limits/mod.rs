//! Rate limits, concurrent-stream quotas and budgets on the request path.
//!
//! [`LimitEngine`] holds the proxy-wide backends (Redis, the budget store) made once
//! at start; [`AppLimits`] is one app's (or one route's) compiled limits, kept across
//! config generations while its spec is unchanged so counters are not reset by
//! unrelated updates. [`admit`] runs at request head; [`meter`] follows a stream.

pub mod admit;
pub mod meter;

use crate::config::{BudgetStoreKind, RateLimitingConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tollgate_filters::budget::{
    Budget, BudgetAccount, BudgetStore, InProcessStore, RedisBudgetStore, spawn_persist,
};
use tollgate_filters::limit::{
    AppLimiter, ClusterLimiter, RedisBackend, RedisConfig, StreamQuota, spawn_housekeeping,
};
use tollgate_routing::{
    AppChange, AppSpec, BudgetUnit, LimitsSpec, OnBackendError, RouteSpec, RoutingSpec,
};

/// How often idle rate-limit keys are dropped and in-process budgets saved.
const HOUSEKEEPING: Duration = Duration::from_secs(30);

/// Proxy-wide backends for limits and budgets.
#[derive(Debug)]
pub struct LimitEngine {
    cluster: Option<RedisBackend>,
    budget: Budget,
    memory: Option<Arc<InProcessStore>>,
}

/// Why the limit backends could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("rate_limiting.redis_url: {0}")]
    Redis(String),
    #[error("rate_limiting.budget_state_file: {0}")]
    State(String),
    #[error("rate_limiting.budget_store = \"redis\" needs redis_url")]
    NoRedis,
}

impl LimitEngine {
    /// Connects (lazily) to Redis and loads saved in-process budgets. Must run on the runtime.
    pub async fn start(cfg: &RateLimitingConfig) -> Result<Arc<Self>, EngineError> {
        let cluster = match &cfg.redis_url {
            Some(url) => Some(
                RedisBackend::connect(&RedisConfig {
                    url: url.clone(),
                    prefix: cfg.key_prefix.clone().unwrap_or_else(|| "tollgate".into()),
                    timeout: Duration::from_millis(cfg.redis_timeout_ms.unwrap_or(50)),
                })
                .map_err(|e| EngineError::Redis(e.to_string()))?,
            ),
            None => None,
        };
        let kind = cfg.budget_store.unwrap_or(if cluster.is_some() {
            BudgetStoreKind::Redis
        } else {
            BudgetStoreKind::Memory
        });
        let (store, memory) = match kind {
            BudgetStoreKind::Redis => {
                let backend = cluster.clone().ok_or(EngineError::NoRedis)?;
                (BudgetStore::Redis(RedisBudgetStore::new(backend)), None)
            }
            BudgetStoreKind::Memory => {
                let store = Arc::new(match &cfg.budget_state_file {
                    Some(path) => InProcessStore::open(path.clone())
                        .await
                        .map_err(|e| EngineError::State(e.to_string()))?,
                    None => InProcessStore::new(),
                });
                if cfg.budget_state_file.is_some() {
                    spawn_persist(&store, HOUSEKEEPING);
                }
                (BudgetStore::InProcess(store.clone()), Some(store))
            }
        };
        let mut budget = Budget::new(store);
        if let Some(lease) = cfg.budget_lease {
            budget = budget.with_lease(lease);
        }
        Ok(Arc::new(LimitEngine {
            cluster,
            budget,
            memory,
        }))
    }

    /// Saves in-process budgets now (at shutdown).
    pub async fn persist(&self) {
        if let Some(m) = &self.memory
            && m.path().is_some()
            && let Err(e) = m.persist().await
        {
            tracing::warn!(error = %e, "could not save budget counters");
        }
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

/// One app's or route's limits, compiled.
pub struct AppLimits {
    spec: LimitsSpec,
    pub app: Arc<str>,
    /// Present when the app has rate rules.
    pub limiter: Option<AppLimiter>,
    pub quota: Option<Arc<StreamQuota>>,
    pub account: Option<BudgetAccount>,
    pub unit: BudgetUnit,
    /// The owning app's `on_backend_error`, the budget's policy when its store fails.
    budget_on_error: OnBackendError,
}

impl std::fmt::Debug for AppLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppLimits")
            .field("app", &self.app)
            .field("spec", &self.spec)
            .finish()
    }
}

impl AppLimits {
    /// Whether requests go on unmetered while the budget store fails: only with
    /// `on_backend_error = "allow"`. `local` refuses like `deny`: a budget has no local
    /// copy to fall back to. Read from the spec, so it holds without rate rules too.
    pub fn budget_fails_open(&self) -> bool {
        self.budget_on_error == OnBackendError::Allow
    }

    /// `scope` names the limiter's counters; `owner` is the app whose budget applies
    /// with the policy `budget_on_error`.
    fn build(
        scope: &str,
        owner: &str,
        spec: &LimitsSpec,
        budget_on_error: OnBackendError,
        engine: &LimitEngine,
    ) -> Self {
        let app = scope;
        let limiter = (!spec.rate.is_empty()).then(|| {
            let l = AppLimiter::new(app, spec, engine.cluster.clone().map(ClusterLimiter::new));
            spawn_housekeeping(l.local(), HOUSEKEEPING);
            l
        });
        AppLimits {
            spec: spec.clone(),
            app: app.into(),
            limiter,
            quota: spec.max_concurrent_streams.map(StreamQuota::new),
            account: spec.budget.as_ref().map(|b| BudgetAccount::new(owner, b)),
            unit: spec
                .budget
                .as_ref()
                .map(|b| b.unit.clone())
                .unwrap_or_default(),
            budget_on_error,
        }
    }
}

/// Compiled limits by app id (or by route id for routes with limits of their own):
/// a persistent map, so a generation that changes a few apps copies a few paths.
pub type LimitMap = imbl::HashMap<String, Arc<AppLimits>>;

/// Compiles every app's limits, keyed by app id, reusing the previous generation's
/// where unchanged.
pub fn build_apps(
    spec: &RoutingSpec,
    previous: Option<&LimitMap>,
    engine: &LimitEngine,
) -> LimitMap {
    let items = spec.apps.iter().filter_map(app_item);
    compile(items, previous, engine).collect()
}

/// Compiles every route's own limits, keyed by the route's metrics id. A route's rate
/// counters are its own (namespace `<app>~<route>`); its app's budget still applies.
pub fn build_routes(
    spec: &RoutingSpec,
    previous: Option<&LimitMap>,
    engine: &LimitEngine,
) -> LimitMap {
    let apps: HashMap<&str, &AppSpec> = spec.apps.iter().map(|a| (a.id.as_str(), a)).collect();
    let items = spec
        .routes
        .iter()
        .filter_map(|r| route_item(r, apps.get(r.app.as_str()).copied()));
    compile(items, previous, engine).collect()
}

/// `previous` with the limits of the apps `changes` name, and of their routes, compiled
/// again (reused where unchanged). `old_routes` gives the routes each app had.
pub fn update<'a>(
    previous: (&LimitMap, &LimitMap),
    changes: &[AppChange],
    old_routes: impl Fn(&str) -> &'a [Arc<RouteSpec>],
    engine: &LimitEngine,
) -> (LimitMap, LimitMap) {
    let (mut apps, mut routes) = (previous.0.clone(), previous.1.clone());
    for c in changes {
        apps.remove(&c.id);
        for r in old_routes(&c.id) {
            routes.remove(&r.metrics_id());
        }
    }
    let app_items = changes.iter().filter_map(|c| app_item(c.spec.as_deref()?));
    apps.extend(compile(app_items, Some(previous.0), engine));
    let route_items = changes
        .iter()
        .flat_map(|c| c.routes.iter().map(move |r| (r, c.spec.as_deref())))
        .filter_map(|(r, app)| route_item(r, app));
    routes.extend(compile(route_items, Some(previous.1), engine));
    (apps, routes)
}

/// What an app's own limits compile from.
fn app_item(app: &AppSpec) -> Option<Item<'_>> {
    let limits = app.limits.clone()?;
    let policy = limits.on_backend_error;
    Some((
        app.id.clone(),
        app.id.clone(),
        app.id.as_str(),
        limits,
        policy,
    ))
}

/// What a route's own limits compile from: its rates, its app's budget.
fn route_item<'a>(r: &'a RouteSpec, app: Option<&AppSpec>) -> Option<Item<'a>> {
    let mut limits = r.limits.clone()?;
    let app_limits = app.and_then(|a| a.limits.as_ref());
    limits.budget = app_limits.and_then(|l| l.budget.clone());
    let policy = app_limits.map(|l| l.on_backend_error).unwrap_or_default();
    let id = r.metrics_id();
    let scope = format!("{}~{id}", r.app);
    Some((id, scope, r.app.as_str(), limits, policy))
}

/// (key, counter scope, owning app, limits, the budget's `on_backend_error`)
type Item<'a> = (String, String, &'a str, LimitsSpec, OnBackendError);

fn compile<'a>(
    items: impl Iterator<Item = Item<'a>>,
    previous: Option<&LimitMap>,
    engine: &LimitEngine,
) -> impl Iterator<Item = (String, Arc<AppLimits>)> {
    items.map(move |(key, scope, owner, limits, policy)| {
        let reused = previous
            .and_then(|p| p.get(&key))
            .filter(|old| old.spec == limits && *old.app == *scope && old.budget_on_error == policy)
            .cloned();
        let built = reused
            .unwrap_or_else(|| Arc::new(AppLimits::build(&scope, owner, &limits, policy, engine)));
        (key, built)
    })
}
