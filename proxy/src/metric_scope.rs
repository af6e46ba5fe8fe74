//! Which apps and routes get metric series of their own, decided once per config.
//!
//! By default request series carry bounded labels only (route kind, status class,
//! protocol) and every per-app metric says `app="_other"`: at 10,000 tenants an app
//! id label multiplies each series by the tenant count. Apps marked
//! `metrics = "detailed"` (or with a route so marked) keep their id, and their
//! routes' ids where asked, up to `limits.max_detailed_metrics_apps`; the rest fall
//! back to the bounded labels, with a warning once and
//! `tollgate_metrics_detailed_apps_overflow`. Each route's [`RouteSeries`] is resolved
//! when its plan is built, so a request hashes no label strings.

use crate::metrics::{Metrics, status_class};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use tollgate_routing::{AppChange, Matched, MetricsDetail, RoutingSpec};

/// The `app` and `route` label of everything without detailed metrics.
pub const OTHER: &str = "_other";

/// The request series of a route: its labels, fixed per config, and the counter and
/// histogram handles, each resolved on first use.
pub struct RouteSeries {
    /// The `app` label of the app's other metrics: its id when detailed, else `_other`.
    pub app: Arc<str>,
    /// `route_kind`, `app`, `route`.
    labels: [Arc<str>; 3],
    requests: IntCounterVec,
    duration: HistogramVec,
    /// By protocol (http1, http2), then status class (1xx to 5xx).
    counters: [[OnceLock<IntCounter>; 5]; 2],
    histograms: [OnceLock<Histogram>; 2],
}

impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSeries")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl RouteSeries {
    fn new(kind: &str, app: &Arc<str>, route: &Arc<str>, vecs: &Vecs) -> Self {
        RouteSeries {
            app: app.clone(),
            labels: [kind.into(), app.clone(), route.clone()],
            requests: vecs.0.clone(),
            duration: vecs.1.clone(),
            counters: Default::default(),
            histograms: Default::default(),
        }
    }

    /// Counts one finished exchange; `protocol` is `http1` or `http2`.
    pub fn record(&self, status: u16, protocol: &'static str, seconds: f64) {
        let p = usize::from(protocol == "http2");
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        let [kind, app, route] = &self.labels;
        self.counters[p][class]
            .get_or_init(|| {
                self.requests
                    .with_label_values(&[kind, app, route, status_class(status), protocol])
            })
            .inc();
        self.histograms[p]
            .get_or_init(|| {
                self.duration
                    .with_label_values(&[&**kind, &**app, &**route, protocol])
            })
            .observe(seconds);
    }
}

/// The series every app without detailed metrics shares, one per route kind, and
/// those of requests that matched no route; they live as long as the process.
pub struct BoundedSeries {
    vecs: Vecs,
    other: Arc<str>,
    api: Arc<RouteSeries>,
    host: Arc<RouteSeries>,
    route: Arc<RouteSeries>,
    pub(crate) unrouted: Arc<RouteSeries>,
    /// Stands in for the endpoint health gauge of apps without detailed metrics:
    /// never registered, so never exported.
    sink: IntGauge,
}

impl BoundedSeries {
    pub fn new(
        requests: &IntCounterVec,
        duration: &HistogramVec,
    ) -> Result<Self, prometheus::Error> {
        let vecs = Vecs(requests.clone(), duration.clone());
        let other: Arc<str> = OTHER.into();
        let none: Arc<str> = "-".into();
        let shared = |kind| Arc::new(RouteSeries::new(kind, &other, &other, &vecs));
        Ok(BoundedSeries {
            api: shared("api"),
            host: shared("host"),
            route: shared("route"),
            unrouted: Arc::new(RouteSeries::new("none", &none, &none, &vecs)),
            sink: IntGauge::new("tollgate_unexported", "Not exported.")?,
            other,
            vecs,
        })
    }
}

/// The request counter and duration histogram families.
struct Vecs(IntCounterVec, HistogramVec);

/// The apps of one config whose metrics carry their id.
#[derive(Debug, Default)]
pub struct MetricScope {
    detailed: HashSet<Box<str>>,
    /// Apps asking for detail beyond the cap.
    overflow: HashSet<Box<str>>,
}

impl MetricScope {
    /// Picks the detailed apps of `spec`, at most `cap`: those already detailed in
    /// `previous` first (a reload does not move series between apps), then in spec
    /// order. Logs each app newly over the cap once.
    pub fn build(spec: &RoutingSpec, cap: usize, previous: Option<&MetricScope>) -> Self {
        let by_route: HashSet<&str> = spec
            .routes
            .iter()
            .filter(|r| r.metrics == MetricsDetail::Detailed)
            .map(|r| r.app.as_str())
            .collect();
        let asking: Vec<&str> = spec
            .apps
            .iter()
            .filter(|a| a.metrics == MetricsDetail::Detailed || by_route.contains(a.id.as_str()))
            .map(|a| a.id.as_str())
            .collect();
        let was_detailed = |id: &str| previous.is_some_and(|p| p.detailed.contains(id));
        let mut scope = MetricScope::default();
        let ordered = asking
            .iter()
            .filter(|id| was_detailed(id))
            .chain(asking.iter().filter(|id| !was_detailed(id)));
        for id in ordered {
            if scope.detailed.len() < cap {
                scope.detailed.insert((*id).into());
            } else {
                if !previous.is_some_and(|p| p.overflow.contains(*id)) {
                    warn_overflow(id, cap);
                }
                scope.overflow.insert((*id).into());
            }
        }
        scope
    }

    /// This scope after the apps `changes` name changed, deciding for those apps alone
    /// as [`MetricScope::build`] would; `None` when a detailed app stopped asking while
    /// others wait beyond the cap (which of them moves up is a whole-config choice).
    pub fn updated(&self, changes: &[AppChange], cap: usize) -> Option<MetricScope> {
        let mut next = MetricScope {
            detailed: self.detailed.clone(),
            overflow: self.overflow.clone(),
        };
        for c in changes {
            let id = c.id.as_str();
            let asking = c.spec.as_ref().is_some_and(|a| {
                a.metrics == MetricsDetail::Detailed
                    || c.routes
                        .iter()
                        .any(|r| r.metrics == MetricsDetail::Detailed)
            });
            let was_detailed = next.detailed.remove(id);
            let was_overflow = next.overflow.remove(id);
            if !asking {
                if was_detailed && !next.overflow.is_empty() {
                    return None;
                }
                continue;
            }
            if was_detailed || next.detailed.len() < cap {
                next.detailed.insert(id.into());
            } else {
                if !was_overflow {
                    warn_overflow(id, cap);
                }
                next.overflow.insert(id.into());
            }
        }
        Some(next)
    }

    /// Shows this scope in the gauges, once its config is the one serving.
    pub fn publish(&self, metrics: &Metrics) {
        metrics.detailed_apps.set(self.detailed.len() as i64);
        metrics
            .detailed_apps_overflow
            .set(self.overflow.len() as i64);
    }

    /// Whether `app`'s metrics carry its id.
    pub fn is_detailed(&self, app: &str) -> bool {
        self.detailed.contains(app)
    }

    /// The `app` label of `app`'s per-app metrics: its id, or `_other`.
    pub fn app_label(&self, app: &str, metrics: &Metrics) -> Arc<str> {
        if self.is_detailed(app) {
            app.into()
        } else {
            metrics.bounded.other.clone()
        }
    }

    /// The gauge an endpoint of `app`'s reports its health to: exported only for
    /// detailed apps (the labels name the app, cluster and endpoint).
    pub fn endpoint_gauge(
        &self,
        app: &str,
        cluster: &str,
        endpoint: &str,
        metrics: &Metrics,
    ) -> IntGauge {
        if self.is_detailed(app) {
            metrics
                .endpoint_healthy
                .with_label_values(&[app, cluster, endpoint])
        } else {
            metrics.bounded.sink.clone()
        }
    }

    /// The request series of route `m`: the shared one of its kind, or its own when
    /// its app is detailed (with its route id when the app or the route asks for it).
    pub fn route_series(&self, m: &Matched<'_>, metrics: &Metrics) -> Arc<RouteSeries> {
        let bounded = &metrics.bounded;
        // Only configured routes have a source; the API route's id is always "api".
        let (kind, shared) = match m.source {
            Some(_) => ("route", &bounded.route),
            None if &**m.route_id == "api" => ("api", &bounded.api),
            None => ("host", &bounded.host),
        };
        if !self.is_detailed(&m.app.id) {
            return shared.clone();
        }
        let per_route = m.app.metrics == MetricsDetail::Detailed
            || m.source
                .is_some_and(|r| r.metrics == MetricsDetail::Detailed);
        let route = if per_route {
            m.route_id.clone()
        } else {
            bounded.other.clone()
        };
        let app: Arc<str> = m.app.id.as_str().into();
        Arc::new(RouteSeries::new(kind, &app, &route, &bounded.vecs))
    }
}

/// Says, once, that an app's series fold into `_other`.
fn warn_overflow(app: &str, cap: usize) {
    tracing::warn!(
        app,
        cap,
        "app asks for detailed metrics beyond limits.max_detailed_metrics_apps: its series use app=\"_other\""
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_routing::Snapshot;

    fn spec(detailed: &[&str], apps: usize) -> RoutingSpec {
        let mut toml = String::from("api_hosts = [\"api.test\"]\n");
        for i in 0..apps {
            let id = format!("app{i}");
            let detail = if detailed.contains(&id.as_str()) {
                "metrics = \"detailed\"\n"
            } else {
                ""
            };
            toml.push_str(&format!(
                "[[apps]]\nid = \"{id}\"\nhostnames = [\"{id}.test\"]\n{detail}[apps.upstreams.default]\nendpoints = [{{ address = \"127.0.0.1:9\" }}]\n"
            ));
        }
        toml::from_str(&toml).expect("spec parses")
    }

    #[test]
    fn detailed_apps_are_capped_and_keep_their_place_across_reloads() {
        let metrics = Metrics::new().expect("metrics");
        let first = MetricScope::build(&spec(&["app1", "app2"], 4), 2, None);
        assert!(first.is_detailed("app1") && first.is_detailed("app2"));

        // app0 now asks too: it comes first in the spec, but the cap is held by the
        // apps already detailed.
        let second = MetricScope::build(&spec(&["app0", "app1", "app2"], 4), 2, Some(&first));
        second.publish(&metrics);
        assert!(!second.is_detailed("app0"));
        assert!(second.is_detailed("app1") && second.is_detailed("app2"));
        assert_eq!(metrics.detailed_apps.get(), 2);
        assert_eq!(metrics.detailed_apps_overflow.get(), 1);
        assert_eq!(&*second.app_label("app0", &metrics), OTHER);
        assert_eq!(&*second.app_label("app1", &metrics), "app1");
    }

    #[test]
    fn routes_share_bounded_series_unless_their_app_is_detailed() {
        let metrics = Metrics::new().expect("metrics");
        let spec = spec(&["app3"], 5);
        let snapshot = Snapshot::compile(&spec, 1).expect("valid");
        let scope = MetricScope::build(&spec, 100, None);
        let series = |host: &str, path: &str| {
            let m = snapshot.table.lookup(host, 80, path).expect("route");
            scope.route_series(&m, &metrics)
        };
        let a = series("app0.test", "/");
        let b = series("app1.test", "/");
        assert!(Arc::ptr_eq(&a, &b), "bounded routes share one series");
        a.record(200, "http1", 0.01);
        b.record(200, "http1", 0.01);
        series("api.test", "/v1/app2/x").record(404, "http2", 0.01);
        series("app3.test", "/").record(200, "http1", 0.01);

        let text = String::from_utf8(metrics.render()).expect("utf-8");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tollgate_http_requests_total{"))
            .collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains(
            r#"app="_other",protocol="http1",route="_other",route_kind="host",status_class="2xx"} 2"#
        )));
        assert!(lines.iter().any(|l| l.contains(r#"route_kind="api""#)));
        assert!(lines.iter().any(|l| {
            l.contains(r#"app="app3",protocol="http1",route="host:app3.test",route_kind="host""#)
        }));
        assert!(!text.contains("app0") && !text.contains("app2"));
    }
}
