//! The declarative route model: apps, their upstream clusters, and routes.
//!
//! These are plain data with serde derives; the proxy reads them from its config file
//! and the control service builds them from its event log. Defaults are the values a
//! production gateway for long-lived streams wants (no total timeout, 600 s idle).

use crate::auth::{ApiKeySpec, AuthPolicy, OidcIssuerSpec};
use crate::clusters::Clusters;
use crate::gateway::{
    HeaderRulesSpec, HstsSpec, HttpsRedirectSpec, RedirectSpec, SecurityHeadersSpec, Switch,
};
use crate::limits::LimitsSpec;
use crate::resume::ResumeSpec;
use crate::rpc::{CorsSpec, RpcSpec};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Everything the router needs: API hosts, apps and explicit routes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSpec {
    /// Hosts serving the tenant pattern `/v1/<app_id>/...` (e.g. `api.example.com`).
    #[serde(default)]
    pub api_hosts: Vec<String>,
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    #[serde(default)]
    pub routes: Vec<Arc<RouteSpec>>,
    /// Which listen ports L4 routes may use.
    #[serde(default)]
    pub port_policy: PortPolicy,
    /// API keys (hashes) of every app.
    #[serde(default)]
    pub api_keys: Vec<ApiKeySpec>,
    /// OIDC issuers whose access tokens policies may accept.
    #[serde(default)]
    pub oidc_issuers: Vec<OidcIssuerSpec>,
}

/// The platform's rules for L4 (`tls_passthrough`, `tcp_raw`) listen ports.
///
/// Ports 80 and 443 are always allowed. Any other port needs to be in `allowed`;
/// a port in [`RISKY_PORTS`] additionally needs to be in `risky_allowed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortPolicy {
    #[serde(default)]
    pub allowed: Vec<u16>,
    #[serde(default)]
    pub risky_allowed: Vec<u16>,
}

/// Ports abused for spam and lateral movement: SMTP, telnet, NetBIOS/SMB, RDP.
pub const RISKY_PORTS: [u16; 10] = [23, 25, 135, 137, 138, 139, 445, 465, 587, 3389];

impl PortPolicy {
    /// Why `port` may not carry an L4 route, or `None` when it may.
    pub fn refuses(&self, port: u16) -> Option<String> {
        if RISKY_PORTS.contains(&port) && !self.risky_allowed.contains(&port) {
            return Some(format!(
                "port {port} is denied by default (risky); add it to port_policy.risky_allowed to allow it"
            ));
        }
        if port == 80 || port == 443 || self.allowed.contains(&port) {
            return None;
        }
        Some(format!(
            "port {port} is not in port_policy.allowed (only 80 and 443 are allowed by default)"
        ))
    }
}

/// Whether an app's traffic is forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppStatus {
    #[default]
    Active,
    /// Answered with 503 at the edge; nothing reaches the upstream.
    Suspended,
}

/// A tenant application and the upstream clusters that serve it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub id: String,
    #[serde(default)]
    pub status: AppStatus,
    /// Tenant hostnames routed whole (`/` prefix) to this app.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Path the `/v1/<app_id>` prefix is rewritten to on the API host.
    #[serde(default = "default_api_rewrite")]
    pub api_rewrite: String,
    /// Named upstream clusters; `default_upstream` names the one used without a split.
    /// Shared with the control service's app it is built from (a map's smallest node
    /// costs about 3 KB per copy and app); change it with `Arc::make_mut`.
    pub upstreams: Arc<Clusters>,
    #[serde(default = "default_upstream_name")]
    pub default_upstream: String,
    /// Header-selected weighted splits (canaries), first match wins.
    #[serde(default)]
    pub splits: Vec<SplitSpec>,
    /// Request body limit for this app's routes, unless a route sets its own.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Credentials required on this app's routes, unless a route sets its own.
    #[serde(default)]
    pub auth: Option<AuthPolicy>,
    /// The app is a gRPC service reached by browsers too, unless a route sets its own.
    #[serde(default)]
    pub rpc: Option<RpcSpec>,
    /// Cross-origin access to the app's routes, unless a route sets its own.
    #[serde(default)]
    pub cors: Option<CorsSpec>,
    /// Rate limits, concurrent-stream quota and budget for the whole app.
    #[serde(default)]
    pub limits: Option<LimitsSpec>,
    /// Server streams clients can resume, unless a route sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeSpec>,
    /// Plaintext requests redirected to HTTPS, unless a route sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<Switch<HttpsRedirectSpec>>,
    /// `Strict-Transport-Security` on TLS answers, unless a route sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<Switch<HstsSpec>>,
    /// Request and response header rules, unless a route sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderRulesSpec>,
    /// Response security headers, unless a route sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<Switch<SecurityHeadersSpec>>,
    /// `detailed`: the app's metrics carry its id and route ids (capped by the proxy's
    /// `limits.max_detailed_metrics_apps`); bounded labels only by default.
    #[serde(default, skip_serializing_if = "MetricsDetail::is_default")]
    pub metrics: MetricsDetail,
    /// Why part of this app's config from the control service cannot be served
    /// (say, a limits block this proxy cannot parse). The app alone is refused (503)
    /// until it is fixed: failing open would drop its limits, failing the whole config
    /// would take every tenant down. Never read from files.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
}

/// Sends requests carrying a header to several clusters by weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    pub header: String,
    /// Required header value; any value matches when absent.
    #[serde(default)]
    pub value: Option<String>,
    pub backends: Vec<SplitBackend>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitBackend {
    pub upstream: String,
    pub weight: u32,
}

/// How the proxy speaks to an upstream cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over TCP, keep-alive pooled.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over TCP, multiplexed.
    H2c,
    /// TLS, HTTP/1.1.
    Https,
    /// TLS, HTTP/2 (ALPN h2), multiplexed.
    H2,
}

impl UpstreamProtocol {
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::H2)
    }
    pub fn is_http2(self) -> bool {
        matches!(self, Self::H2c | Self::H2)
    }
}

/// How an endpoint is picked for each request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum BalancePolicy {
    #[default]
    RoundRobin,
    /// Power of two random choices on in-flight requests.
    LeastRequest,
    /// Rendezvous hashing on the values of these request headers (app id is always mixed in).
    ConsistentHash { headers: Vec<String> },
}

/// One upstream address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// `host:port`; names are resolved at connect time.
    pub address: String,
    #[serde(default = "one")]
    pub weight: u32,
}

/// Active health checking of a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    #[serde(default)]
    pub kind: HealthCheckKind,
    /// HTTP checks: the path probed with `GET`.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// gRPC checks: the `service` asked about; empty asks about the server as a whole.
    #[serde(default)]
    pub service: String,
    #[serde(default = "default_health_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_health_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "two")]
    pub healthy_threshold: u32,
    #[serde(default = "two")]
    pub unhealthy_threshold: u32,
}

/// How a health check probes an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// `GET path`: any 2xx is healthy.
    #[default]
    Http,
    /// `grpc.health.v1.Health/Check` for `service` (HTTP/2 clusters): `SERVING` is healthy.
    Grpc,
}

/// Passive ejection of endpoints that keep failing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSpec {
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_ejection_ms")]
    pub ejection_ms: u64,
    /// Most of the cluster's endpoints (percent, rounded down) out at once, ejected or
    /// failing health checks; below 100 the last endpoint is never ejected.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            ejection_ms: default_ejection_ms(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

/// Retries of safe failures, bounded by a budget relative to live traffic.
#[derive(Debug, Clone, PartialEq, Hash, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Extra attempts after the first.
    #[serde(default = "two")]
    pub max_retries: u32,
    /// Retries may add at most this percentage of requests, over `min_retries_per_sec`.
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    #[serde(default = "default_min_retries")]
    pub min_retries_per_sec: u32,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_retries: 2,
            budget_percent: default_budget_percent(),
            min_retries_per_sec: default_min_retries(),
        }
    }
}

/// A set of endpoints and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub endpoints: Vec<EndpointSpec>,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default)]
    pub balance: BalancePolicy,
    /// PEM bundle of CAs trusted for TLS upstreams; the web PKI roots when absent.
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// Name sent as SNI and verified in the upstream certificate; the endpoint host when absent.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Time allowed until response headers arrive; the body then streams without a total limit.
    #[serde(default = "default_response_header_timeout")]
    pub response_header_timeout_ms: u64,
    /// A stream with no frame either way for this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// HTTP/2 clusters: most connections open to one endpoint at once. A stream goes on
    /// an open connection that can take one more under the endpoint's advertised
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`, else on a new connection, up to this many.
    #[serde(default = "default_max_connections_per_endpoint")]
    pub max_connections_per_endpoint: u32,
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
    #[serde(default)]
    pub outlier: OutlierSpec,
    #[serde(default)]
    pub retry: RetrySpec,
}

impl ClusterSpec {
    /// A cluster with no endpoints yet and default settings.
    pub fn empty() -> Self {
        ClusterSpec {
            endpoints: Vec::new(),
            protocol: UpstreamProtocol::default(),
            balance: BalancePolicy::default(),
            tls_ca_file: None,
            tls_server_name: None,
            connect_timeout_ms: default_connect_timeout(),
            response_header_timeout_ms: default_response_header_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            max_connections_per_endpoint: default_max_connections_per_endpoint(),
            health_check: None,
            outlier: OutlierSpec::default(),
            retry: RetrySpec::default(),
        }
    }
}

/// What a route's listener does with a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolHint {
    #[default]
    HttpTerminate,
    TlsPassthrough,
    TcpRaw,
}

/// An explicit route: host and path prefix to an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Stable id used in metrics; derived from host and prefix when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Exact host or `*.suffix` (one label).
    pub hostname: String,
    /// Only requests arriving on this listener port match, when set.
    #[serde(default)]
    pub listen_port: Option<u16>,
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Replaces `path_prefix` in the upstream request path, when set.
    #[serde(default)]
    pub rewrite_prefix: Option<String>,
    pub app: String,
    #[serde(default)]
    pub protocol_hint: ProtocolHint,
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Cluster of the app to use; the app's default when absent.
    #[serde(default)]
    pub upstream: Option<String>,
    /// L4 routes: connect to this port on the endpoint hosts instead of theirs.
    #[serde(default)]
    pub backend_port: Option<u16>,
    /// L4 routes: send a PROXY protocol v2 header with the client's address first.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// L4 routes: open connections allowed at once; more are closed on accept.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Credentials required here; the app's policy when absent.
    #[serde(default)]
    pub auth: Option<AuthPolicy>,
    /// gRPC service settings here; the app's when absent.
    #[serde(default)]
    pub rpc: Option<RpcSpec>,
    /// Cross-origin access here; the app's when absent.
    #[serde(default)]
    pub cors: Option<CorsSpec>,
    /// Rate limits and stream quota of this route alone, instead of the app's; the
    /// budget stays the app's.
    #[serde(default)]
    pub limits: Option<LimitsSpec>,
    /// Answers every request with a redirect to another host or path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectSpec>,
    /// Server streams clients can resume here; the app's setting when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeSpec>,
    /// Plaintext requests redirected to HTTPS here; the app's setting when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<Switch<HttpsRedirectSpec>>,
    /// `Strict-Transport-Security` here; the app's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<Switch<HstsSpec>>,
    /// Header rules here; the app's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderRulesSpec>,
    /// Response security headers here; the app's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<Switch<SecurityHeadersSpec>>,
    /// `detailed`: this route's metrics carry its app and route ids (the app counts
    /// against the proxy's cap on detailed apps); bounded labels only by default.
    #[serde(default, skip_serializing_if = "MetricsDetail::is_default")]
    pub metrics: MetricsDetail,
}

/// How much of an app's or route's identity its metrics carry. At 10,000 tenants a
/// label with the app id multiplies every series by the tenant count, so only apps an
/// operator picks get their own series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsDetail {
    /// Bounded labels only (route kind, protocol, status class); `app="_other"`.
    #[default]
    Default,
    /// Series of its own, labelled with the app id (and route id).
    Detailed,
}

impl MetricsDetail {
    pub fn is_default(&self) -> bool {
        *self == MetricsDetail::Default
    }
}

impl RouteSpec {
    /// The id used in metrics and logs: `id`, else host, port and prefix.
    pub fn metrics_id(&self) -> String {
        self.id.clone().unwrap_or_else(|| {
            let port = self
                .listen_port
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            format!("{}{}{}", self.hostname, port, self.path_prefix)
        })
    }

    /// Whether this route is served at layer 4 (no HTTP termination).
    pub fn is_l4(&self) -> bool {
        self.protocol_hint != ProtocolHint::HttpTerminate
    }
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn default_api_rewrite() -> String {
    "/".into()
}
fn default_upstream_name() -> String {
    "default".into()
}
fn default_prefix() -> String {
    "/".into()
}
pub(crate) fn default_health_path() -> String {
    "/healthz".into()
}
fn default_health_interval() -> u64 {
    5_000
}
fn default_health_timeout() -> u64 {
    1_000
}
fn default_consecutive_failures() -> u32 {
    3
}
fn default_ejection_ms() -> u64 {
    30_000
}
fn default_max_ejection_percent() -> u32 {
    50
}
fn default_budget_percent() -> u32 {
    20
}
fn default_min_retries() -> u32 {
    10
}
fn default_connect_timeout() -> u64 {
    2_000
}
fn default_response_header_timeout() -> u64 {
    30_000
}
fn default_idle_timeout() -> u64 {
    600_000
}
fn default_max_connections_per_endpoint() -> u32 {
    16
}
