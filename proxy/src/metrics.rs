//! Prometheus metrics of the data plane, named `tollgate_<area>_<what>_<unit>`.
//!
//! Labels are bounded by code (route kind, status class, protocol, error kind) or by
//! config the operator owns (listener); never paths, hosts from requests or user ids.
//! App and route ids are labels only for apps marked `metrics = "detailed"`, at most
//! `limits.max_detailed_metrics_apps` of them ([`crate::metric_scope`]); every other
//! app's series carry `app="_other"` (and `route="_other"`), so the exposition does
//! not grow with the number of tenants. Per-tenant totals are the usage records.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the proxy exports, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    pub upstream_errors: IntCounterVec,
    /// Requests failed by their client (bad body framing, abort, stall), by reason.
    pub client_errors: IntCounterVec,
    pub upstream_retries: IntCounterVec,
    pub upstream_ejections: IntCounterVec,
    pub endpoint_healthy: IntGaugeVec,
    pub connections_active: IntGaugeVec,
    pub connections: IntCounterVec,
    /// Accepted HTTP connections by serving worker (bounded by the worker count).
    pub worker_connections: IntCounterVec,
    pub connections_refused: IntCounterVec,
    pub connections_closed: IntCounterVec,
    pub streams_active: IntGaugeVec,
    pub tls_handshakes: IntCounterVec,
    pub config_version: IntGauge,
    pub config_reloads: IntCounterVec,
    pub certificates_loaded: IntGauge,
    /// Apps refused as a whole because part of their config cannot be served.
    pub apps_degraded: IntGauge,
    pub upgrades_active: IntGauge,
    pub apply_duration: Histogram,
    /// Responses the proxy answered itself, by error code (a bounded set).
    pub local_responses: IntCounterVec,
    pub l4_connections: IntCounterVec,
    pub l4_connections_active: IntGaugeVec,
    pub l4_bytes: IntCounterVec,
    pub auth_results: IntCounterVec,
    pub rate_limit_decisions: IntCounterVec,
    pub budget_exhausted: IntCounterVec,
    pub stream_quota_refused: IntCounterVec,
    /// Redirects the proxy answered itself, by kind (`https`, `route`).
    pub http_redirects: IntCounterVec,
    pub control_connected: IntGauge,
    pub control_last_event_id: IntGauge,
    pub control_apply_errors: IntCounterVec,
    pub control_updates: IntCounterVec,
    pub control_resyncs: IntCounterVec,
    /// Apps whose series carry their id, and those refused that for the cap.
    pub detailed_apps: IntGauge,
    pub detailed_apps_overflow: IntGauge,
    /// `tollgate_http_requests_total` and `tollgate_http_request_duration_seconds`: the
    /// series shared by apps without detailed metrics, and the families.
    pub(crate) bounded: crate::metric_scope::BoundedSeries,
    /// Stream series: open streams, first message, duration and messages per stream.
    pub streams: crate::http::stream_stats::StreamMetrics,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_http_request_duration_seconds",
                "Time from request head to the end of the response body.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 60.0, 600.0,
            ]),
            &["route_kind", "app", "route", "protocol"],
        )?;
        registry.register(Box::new(request_duration.clone()))?;
        let requests = counter(
            "tollgate_http_requests_total",
            "Requests by route kind (api, host, route; none when unrouted), response status class and client protocol; app and route are ids only for detailed apps, else _other (- when unrouted).",
            &["route_kind", "app", "route", "status_class", "protocol"],
        )?;
        let detailed_apps = IntGauge::new(
            "tollgate_metrics_detailed_apps",
            "Apps whose series carry their app id (metrics = \"detailed\", up to limits.max_detailed_metrics_apps).",
        )?;
        registry.register(Box::new(detailed_apps.clone()))?;
        let detailed_apps_overflow = IntGauge::new(
            "tollgate_metrics_detailed_apps_overflow",
            "Apps marked metrics = \"detailed\" beyond limits.max_detailed_metrics_apps: their series use app=\"_other\".",
        )?;
        registry.register(Box::new(detailed_apps_overflow.clone()))?;
        let apply_duration = Histogram::with_opts(
            HistogramOpts::new(
                "tollgate_config_apply_duration_seconds",
                "Time to validate and compile a config before it is swapped in.",
            )
            .buckets(vec![0.0001, 0.001, 0.01, 0.1, 1.0, 10.0]),
        )?;
        registry.register(Box::new(apply_duration.clone()))?;
        let config_version =
            IntGauge::new("tollgate_config_version", "Version of the active config.")?;
        registry.register(Box::new(config_version.clone()))?;
        let certificates_loaded = IntGauge::new(
            "tollgate_certificates_loaded",
            "Certificates in the active store.",
        )?;
        registry.register(Box::new(certificates_loaded.clone()))?;
        let apps_degraded = IntGauge::new(
            "tollgate_config_apps_degraded",
            "Apps answered 503 because part of their config cannot be served (see /config).",
        )?;
        registry.register(Box::new(apps_degraded.clone()))?;
        let upgrades_active = IntGauge::new(
            "tollgate_http_upgrades_active",
            "Upgraded (WebSocket) tunnels open.",
        )?;
        registry.register(Box::new(upgrades_active.clone()))?;
        let local_responses = IntCounterVec::new(
            Opts::new(
                "tollgate_http_local_responses_total",
                "Responses generated by the proxy itself rather than an upstream, by error code.",
            ),
            &["code"],
        )?;
        registry.register(Box::new(local_responses.clone()))?;
        let control_connected = IntGauge::new(
            "tollgate_control_connected",
            "1 while the control service is reachable (gRPC stream open or HTTP polls succeeding).",
        )?;
        registry.register(Box::new(control_connected.clone()))?;
        let control_last_event_id = IntGauge::new(
            "tollgate_control_last_event_id",
            "The last control event folded into the proxy's model (its cursor).",
        )?;
        registry.register(Box::new(control_last_event_id.clone()))?;
        Ok(Metrics {
            control_apply_errors: counter(
                "tollgate_control_apply_errors_total",
                "Control updates refused or failed, by kind (structural, decode, validation, certificate, build, persist, state_file).",
                &["kind"],
            )?,
            control_updates: counter(
                "tollgate_control_updates_total",
                "Control updates folded into the model, by kind (snapshot, delta).",
                &["kind"],
            )?,
            control_resyncs: {
                let c = counter(
                    "tollgate_control_resyncs_total",
                    "Fresh control snapshots taken instead of resuming from the cursor, by reason (log_diverged, cursor_ahead, too_far_behind, unappliable).",
                    &["reason"],
                )?;
                // Every reason from the start: a restore shows as a step from 0.
                for r in crate::control_client::Resync::ALL {
                    c.with_label_values(&[r.label()]);
                }
                c
            },
            control_connected,
            control_last_event_id,
            bounded: crate::metric_scope::BoundedSeries::new(&requests, &request_duration)?,
            detailed_apps,
            detailed_apps_overflow,
            upstream_errors: counter(
                "tollgate_upstream_errors_total",
                "Failed upstream attempts by kind; app is the id for detailed apps, else _other.",
                &["app", "kind"],
            )?,
            client_errors: counter(
                "tollgate_http_client_errors_total",
                "Requests failed on the client's side, never charged to the upstream, by reason (body_malformed, body_aborted, body_timeout, body_invalid).",
                &["reason"],
            )?,
            upstream_retries: counter(
                "tollgate_upstream_retries_total",
                "Retries by outcome (sent, budget_exhausted); app is the id for detailed apps, else _other.",
                &["app", "outcome"],
            )?,
            upstream_ejections: counter(
                "tollgate_upstream_ejections_total",
                "Endpoints ejected after consecutive failures, by cluster name; app is the id for detailed apps, else _other.",
                &["app", "upstream"],
            )?,
            endpoint_healthy: gauge(
                "tollgate_upstream_endpoint_healthy",
                "1 when an endpoint passes health checks and is not ejected; exported for detailed apps only.",
                &["app", "upstream", "endpoint"],
            )?,
            connections_active: gauge(
                "tollgate_downstream_connections_active",
                "Open client connections by listener.",
                &["listener"],
            )?,
            connections: counter(
                "tollgate_downstream_connections_total",
                "Accepted client connections by listener.",
                &["listener"],
            )?,
            worker_connections: counter(
                "tollgate_worker_connections_total",
                "Accepted client connections on HTTP listeners by serving worker (1..=workers).",
                &["worker"],
            )?,
            connections_refused: counter(
                "tollgate_downstream_connections_refused_total",
                "Client connections closed on accept, by listener and reason (limit).",
                &["listener", "reason"],
            )?,
            connections_closed: counter(
                "tollgate_downstream_connections_closed_total",
                "Client connections the proxy closed, by listener and reason (first_request_timeout, idle).",
                &["listener", "reason"],
            )?,
            streams_active: gauge(
                "tollgate_http_streams_active",
                "Requests in flight (HTTP/1.1 exchanges and HTTP/2 streams) by protocol.",
                &["protocol"],
            )?,
            tls_handshakes: counter(
                "tollgate_tls_handshakes_total",
                "TLS handshakes by listener and result.",
                &["listener", "result"],
            )?,
            config_version,
            config_reloads: counter(
                "tollgate_config_reloads_total",
                "Config reloads by result (ok, error).",
                &["result"],
            )?,
            l4_connections: counter(
                "tollgate_l4_connections_total",
                "L4 connections by route and result (ok or why it was closed).",
                &["route", "result"],
            )?,
            l4_connections_active: gauge(
                "tollgate_l4_connections_active",
                "Open L4 connections by route.",
                &["route"],
            )?,
            l4_bytes: counter(
                "tollgate_l4_bytes_total",
                "Bytes relayed by L4 routes, by direction.",
                &["route", "direction"],
            )?,
            auth_results: counter(
                "tollgate_auth_results_total",
                "Credential checks by result (ok_api_key, ok_token, or the refusal reason); app is the id for detailed apps, else _other.",
                &["app", "result"],
            )?,
            rate_limit_decisions: counter(
                "tollgate_rate_limit_decisions_total",
                "Rate-limit checks by result (allowed, refused) and where the answer came from (local, cluster, fallback_*); app is the id for detailed apps, else _other.",
                &["app", "result", "source"],
            )?,
            budget_exhausted: counter(
                "tollgate_budget_exhausted_total",
                "Requests refused (before) or streams cut (mid_stream) because the app's budget was spent; app is the id for detailed apps, else _other.",
                &["app", "when"],
            )?,
            stream_quota_refused: counter(
                "tollgate_stream_quota_refused_total",
                "Requests refused because the app's concurrent-stream quota was full; app is the id for detailed apps, else _other.",
                &["app"],
            )?,
            http_redirects: counter(
                "tollgate_http_redirects_total",
                "Redirects answered at the edge, by kind (https: plaintext to HTTPS; route: a route's host or path redirect).",
                &["kind"],
            )?,
            certificates_loaded,
            apps_degraded,
            upgrades_active,
            apply_duration,
            local_responses,
            streams: crate::http::stream_stats::StreamMetrics::new(&registry)?,
            registry,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// `2xx`-style label for a status code.
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
