//! The static config file read by `tollgate proxy --config FILE`.
//!
//! TOML; the format is documented in `proxy/CONFIG.md`. Loading reads the certificate
//! files and builds everything a reload would swap in, so an invalid file is refused as
//! a whole before anything running changes.

use crate::control_client::ControlConfig;
use crate::control_client::settings::ControlConfigError;
use crate::limits::EngineError;
use crate::upstream::cluster::ClusterError;
use crate::usage::FlushError;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tollgate_certs::{CertError, CertSource, CertStore, Expiry, TlsOptions, TlsVersion};
use tollgate_filters::apikey::KeyError;
use tollgate_filters::oidc::TokenError;
use tollgate_filters::rpc::SchemaError;
use tollgate_routing::{
    ApiKeySpec, AppSpec, EscapedSlashes, OidcIssuerSpec, PathPolicy, PortPolicy, RouteSpec,
    RoutingSpec, Snapshot,
};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Serving threads, each with its own runtime and sockets; the usable CPUs when
    /// absent. Needs a restart.
    #[serde(default)]
    pub workers: Option<std::num::NonZeroUsize>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub limits: Limits,
    /// How request paths are normalised before matching.
    #[serde(default)]
    pub paths: PathsConfig,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub certificates: Vec<CertificateConfig>,
    /// Certificate name served to TLS clients that send no SNI.
    #[serde(default)]
    pub default_certificate: Option<String>,
    #[serde(default)]
    pub api_hosts: Vec<String>,
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Listen ports L4 routes may use (80 and 443 always).
    #[serde(default)]
    pub port_policy: PortPolicy,
    /// API key records (SHA-256 hashes, never keys).
    #[serde(default)]
    pub api_keys: Vec<ApiKeySpec>,
    #[serde(default)]
    pub oidc_issuers: Vec<OidcIssuerSpec>,
    /// Follow the control service for routing instead of the tables above.
    #[serde(default)]
    pub control: Option<ControlConfig>,
    /// Where rate limits and budgets keep their counters.
    #[serde(default)]
    pub rate_limiting: RateLimitingConfig,
    /// Where resumable streams are buffered.
    #[serde(default)]
    pub resume: crate::resume::ResumeConfig,
    /// OpenTelemetry spans exported over OTLP; none when absent.
    #[serde(default)]
    pub tracing: Option<crate::trace::TracingConfig>,
}

/// Path normalisation (see `tollgate_routing::path`): dot segments are always removed.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// Collapse repeated slashes (default true).
    #[serde(default = "yes")]
    pub merge_slashes: bool,
    /// `reject` (default, 400), `keep` or `decode` for `%2F` and `%5C`.
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathsConfig {
    fn default() -> Self {
        let p = PathPolicy::default();
        PathsConfig {
            merge_slashes: p.merge_slashes,
            escaped_slashes: p.escaped_slashes,
        }
    }
}

impl PathsConfig {
    pub fn policy(&self) -> PathPolicy {
        PathPolicy {
            merge_slashes: self.merge_slashes,
            escaped_slashes: self.escaped_slashes,
        }
    }
}

/// Backends for rate limits and budgets, shared by every app.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// Redis for cluster-wide limits and budgets; in-process only when absent.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Bound on every Redis call, connecting included.
    #[serde(default)]
    pub redis_timeout_ms: Option<u64>,
    /// First segment of every Redis key.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// `redis` or `memory`; Redis when `redis_url` is set.
    #[serde(default)]
    pub budget_store: Option<BudgetStoreKind>,
    /// File the in-process budget counters are saved to, so they survive restarts.
    #[serde(default)]
    pub budget_state_file: Option<PathBuf>,
    /// Units a stream leases from the budget at a time (default 64).
    #[serde(default)]
    pub budget_lease: Option<u64>,
}

/// Where budget counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetStoreKind {
    Memory,
    Redis,
}

/// `[admin]`: the listener of `/metrics`, `/healthz`, `/readyz` and `/config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// File holding the bearer token `/metrics` and `/config` require (read again on
    /// each such request); `TOLLGATE_PROXY_ADMIN_TOKEN` instead, or no token, when absent.
    /// Relative paths are resolved from the config file's folder.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// One line per request at target `access`.
    #[serde(default = "yes")]
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            access_log: true,
        }
    }
}

/// Limits and timeouts that apply to every listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Total request header bytes (names + values); larger requests get 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest upstream response head (HTTP/1.1 head, HTTP/2 header list); larger: 502.
    #[serde(default = "default_max_response_header_bytes")]
    pub max_response_header_bytes: usize,
    /// Time a client has to send its request head; also bounds the wait for the first
    /// request of a connection, from accept (TLS: from the end of the handshake).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed (GOAWAY on HTTP/2).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Open client connections per HTTP listener; beyond it new ones are closed on accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout_ms: u64,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_ms: u64,
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 PING interval keeping long streams alive through middleboxes.
    #[serde(default = "default_h2_keepalive")]
    pub h2_keepalive_interval_ms: u64,
    /// Trust and extend `x-forwarded-*` from clients (only behind another proxy).
    #[serde(default)]
    pub trust_forwarded_headers: bool,
    /// Identity headers backends trust; client copies are removed on every route.
    #[serde(default)]
    pub identity_headers: crate::auth::IdentityHeaders,
    /// Apps whose metrics may carry their id (`metrics = "detailed"`); the rest of
    /// those asking fall back to the bounded labels.
    #[serde(default = "default_max_detailed_metrics_apps")]
    pub max_detailed_metrics_apps: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: default_max_header_bytes(),
            max_response_header_bytes: default_max_response_header_bytes(),
            header_read_timeout_ms: default_header_read_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            max_connections: default_max_connections(),
            tls_handshake_timeout_ms: default_tls_handshake_timeout(),
            drain_timeout_ms: default_drain_timeout(),
            h2_max_concurrent_streams: default_h2_streams(),
            h2_keepalive_interval_ms: default_h2_keepalive(),
            trust_forwarded_headers: false,
            identity_headers: Default::default(),
            max_detailed_metrics_apps: default_max_detailed_metrics_apps(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// `http` (default) terminates HTTP; `tls_passthrough` and `tcp` serve L4 routes.
    #[serde(default)]
    pub mode: ListenerMode,
    /// TLS termination; plain HTTP/1.1 and h2c (prior knowledge) without it.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// This listener's own connection cap instead of `limits.max_connections`.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

/// What a listener does with its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerMode {
    #[default]
    Http,
    /// Routes by the ClientHello's SNI to `tls_passthrough` routes of its port.
    TlsPassthrough,
    /// Routes to the `tcp_raw` route of its port.
    Tcp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// `"1.2"` or `"1.3"`.
    #[serde(default = "default_min_tls")]
    pub min_version: String,
    /// rustls suite names such as `TLS13_AES_128_GCM_SHA256`; all safe defaults when absent.
    #[serde(default)]
    pub cipher_suites: Option<Vec<String>>,
    #[serde(default = "default_alpn")]
    pub alpn: Vec<String>,
}

impl ListenerTls {
    /// The settings for `tollgate_certs::server_config`; an unknown `min_version` is
    /// [`CertError::UnknownTlsVersion`].
    pub fn options(&self) -> Result<TlsOptions, CertError> {
        let min_version: TlsVersion = self.min_version.parse()?;
        Ok(TlsOptions {
            min_version,
            cipher_suites: self.cipher_suites.clone(),
            alpn: self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM chain, leaf first. Relative paths are resolved from the config file's folder.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Names to serve it for; the certificate's DNS names when absent.
    #[serde(default)]
    pub names: Option<Vec<String>>,
}

/// Why a config (the file, or a snapshot from the control service) cannot be used.
///
/// Each variant says which part is wrong; the message names it and includes the
/// cause's own message (printed on exit and logged on a refused reload), and
/// `source()` returns that cause.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid routes: {0}")]
    Routes(#[from] tollgate_routing::ValidationError),
    #[error("invalid certificates: {0}")]
    Certs(#[from] CertError),
    #[error("duplicate listener name `{0}`")]
    DuplicateListener(String),
    #[error("listener `{0}`: [tls] applies to http listeners; L4 listeners never terminate TLS")]
    TlsOnL4Listener(String),
    /// A listener's `[tls]` settings the file alone can refuse (`min_version`).
    #[error("listener `{name}`: {source}")]
    ListenerTls { name: String, source: CertError },
    /// A setting under its lower bound.
    #[error("{field} must be at least {min}")]
    Limits { field: &'static str, min: u64 },
    #[error("[control] {0}")]
    Control(#[from] ControlConfigError),
    /// The admin token (`[admin] token_file` or `TOLLGATE_PROXY_ADMIN_TOKEN`) is unusable.
    #[error("[admin] {from}: {problem}")]
    AdminToken { from: String, problem: String },
    /// `[control]` together with routing the file declares itself.
    #[error(
        "[control] is set, so routing comes only from the control service; remove {} from the file",
        .sections.join(", ")
    )]
    RoutingBesideControl { sections: Vec<&'static str> },
    #[error("{0}")]
    Upstream(#[from] ClusterError),
    /// Which record is logged when the key store is built.
    #[error("api_keys: {0}")]
    ApiKeys(#[source] KeyError),
    /// Which issuer is logged when the registry is built.
    #[error("oidc_issuers: {0}")]
    Issuers(#[source] TokenError),
    #[error("cannot read descriptor set {path}: {source}")]
    DescriptorSetRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("descriptor set {name}: {source}")]
    Schema { name: String, source: SchemaError },
    #[error("{0}")]
    RateLimiting(#[from] EngineError),
    #[error("{0}")]
    UsageFlusher(#[from] FlushError),
    #[error("metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    #[error("resume: {0}")]
    Resume(String),
    /// The blocking task that loads or applies a config panicked or was cancelled.
    #[error("{what} task failed: {source}")]
    Task {
        what: &'static str,
        source: tokio::task::JoinError,
    },
}

/// A config file turned into what the proxy runs: routes and certificates, validated.
pub struct Loaded {
    pub config: ProxyConfig,
    pub routing: RoutingSpec,
    pub certs: CertStore,
}

impl ProxyConfig {
    /// Parses TOML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn routing(&self) -> RoutingSpec {
        RoutingSpec {
            api_hosts: self.api_hosts.clone(),
            apps: self.apps.clone(),
            routes: self
                .routes
                .iter()
                .cloned()
                .map(std::sync::Arc::new)
                .collect(),
            port_policy: self.port_policy.clone(),
            api_keys: self.api_keys.clone(),
            oidc_issuers: self.oidc_issuers.clone(),
        }
    }

    /// Makes relative CA paths relative to the config file's folder.
    fn resolve_paths(&mut self, base: &Path) {
        let absolute = |p: &mut String| {
            if Path::new(p.as_str()).is_relative() {
                *p = base.join(&*p).to_string_lossy().into_owned();
            }
        };
        for issuer in &mut self.oidc_issuers {
            if let Some(ca) = &mut issuer.ca_file {
                absolute(ca);
            }
        }
        for app in &mut self.apps {
            for cluster in std::sync::Arc::make_mut(&mut app.upstreams).values_mut() {
                if let Some(ca) = &mut cluster.tls_ca_file {
                    absolute(ca);
                }
            }
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for l in &self.listeners {
            if !names.insert(&l.name) {
                return Err(ConfigError::DuplicateListener(l.name.clone()));
            }
            if let Some(tls) = &l.tls {
                if l.mode != ListenerMode::Http {
                    return Err(ConfigError::TlsOnL4Listener(l.name.clone()));
                }
                tls.options().map_err(|source| ConfigError::ListenerTls {
                    name: l.name.clone(),
                    source,
                })?;
            }
        }
        if let Some(control) = &self.control {
            control.check()?;
            let declared: Vec<&'static str> = [
                ("apps", !self.apps.is_empty()),
                ("routes", !self.routes.is_empty()),
                ("api_keys", !self.api_keys.is_empty()),
                ("oidc_issuers", !self.oidc_issuers.is_empty()),
                ("certificates", !self.certificates.is_empty()),
                ("api_hosts", !self.api_hosts.is_empty()),
                ("port_policy", self.port_policy != PortPolicy::default()),
            ]
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect();
            if !declared.is_empty() {
                return Err(ConfigError::RoutingBesideControl { sections: declared });
            }
        }
        if self.limits.max_connections == 0
            || self.listeners.iter().any(|l| l.max_connections == Some(0))
        {
            return Err(ConfigError::Limits {
                field: "max_connections",
                min: 1,
            });
        }
        if self.limits.idle_timeout_ms == 0 {
            return Err(ConfigError::Limits {
                field: "limits.idle_timeout_ms",
                min: 1,
            });
        }
        if self.limits.max_header_bytes < 1024 {
            return Err(ConfigError::Limits {
                field: "limits.max_header_bytes",
                min: 1024,
            });
        }
        Ok(())
    }
}

/// Reads and validates a config file and the certificates it names, at start.
///
/// A certificate outside its validity window is served (and reported), not refused:
/// a restart must not take every tenant down because one certificate lapsed.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_with(path, Expiry::Serve)
}

/// Like [`load`], for a reload: certificates the proxy serves already (by
/// fingerprint) may have lapsed, a newly added one must be within its window.
pub fn load_for_reload(path: &Path, serving: &HashSet<String>) -> Result<Loaded, ConfigError> {
    load_with(path, Expiry::ServeKnown(serving))
}

fn load_with(path: &Path, expiry: Expiry<'_>) -> Result<Loaded, ConfigError> {
    let text = read(path)?;
    let mut config = ProxyConfig::parse(&text, path)?;
    config.check()?;
    let base = path.parent().unwrap_or(Path::new("."));
    config.resolve_paths(base);
    let routing = config.routing();
    tollgate_routing::validate(&routing)?;
    let mut sources = Vec::with_capacity(config.certificates.len());
    for c in &config.certificates {
        sources.push(CertSource {
            cert_pem: read(&base.join(&c.cert_file))?,
            key_pem: read(&base.join(&c.key_file))?,
            names: c.names.clone(),
        });
    }
    let mut certs = CertStore::build_with(&sources, expiry)?;
    // With [control] the certificates, and so the default's, come from the service.
    if let Some(name) = &config.default_certificate
        && config.control.is_none()
    {
        certs = certs.with_default(name)?;
    }
    Ok(Loaded {
        config,
        routing,
        certs,
    })
}

impl Loaded {
    /// Compiles the routes into a snapshot with the given version.
    pub fn snapshot(&self, version: u64) -> Result<Snapshot, ConfigError> {
        Ok(Snapshot::compile(&self.routing, version)?)
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn yes() -> bool {
    true
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}
fn default_max_header_bytes() -> usize {
    32 * 1024
}
fn default_max_response_header_bytes() -> usize {
    64 * 1024
}
fn default_header_read_timeout() -> u64 {
    30_000
}
fn default_idle_timeout() -> u64 {
    60_000
}
fn default_max_detailed_metrics_apps() -> usize {
    100
}
fn default_max_connections() -> usize {
    100_000
}
fn default_tls_handshake_timeout() -> u64 {
    10_000
}
fn default_drain_timeout() -> u64 {
    30_000
}
fn default_h2_streams() -> u32 {
    1024
}
fn default_h2_keepalive() -> u64 {
    30_000
}
fn default_min_tls() -> String {
    "1.2".into()
}
fn default_alpn() -> Vec<String> {
    vec!["h2".into(), "http/1.1".into()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn refused(text: &str) -> ConfigError {
        let config = ProxyConfig::parse(text, Path::new("t.toml")).unwrap();
        config.check().unwrap_err()
    }

    #[test]
    fn check_says_what_is_wrong_by_type_and_in_words() {
        let two = "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n";
        let e = refused(&format!("{two}{two}"));
        assert!(
            matches!(&e, ConfigError::DuplicateListener(n) if n == "a"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "duplicate listener name `a`");

        let e = refused(&format!("{two}[listeners.tls]\nmin_version = \"1.4\"\n"));
        assert!(matches!(&e, ConfigError::ListenerTls { name, .. } if name == "a"));
        assert!(
            e.to_string()
                .starts_with("listener `a`: unknown TLS version `1.4`")
        );
        let source = e.source().and_then(|s| s.downcast_ref::<CertError>());
        assert!(
            matches!(source, Some(CertError::UnknownTlsVersion(_))),
            "{e:?}"
        );

        let e = refused("[limits]\nmax_header_bytes = 10\n");
        assert!(matches!(e, ConfigError::Limits { min: 1024, .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "limits.max_header_bytes must be at least 1024"
        );
    }

    #[test]
    fn control_problems_keep_their_table_name() {
        let e = refused("[control]\ngrpc_url = \"ftp://x\"\n");
        assert_eq!(
            e.to_string(),
            "[control] grpc_url `ftp://x`: needs http:// or https://"
        );
        let e = refused("[control]\nhttp_url = \"http://x\"\npoll_interval_ms = 1\n");
        assert!(matches!(
            e,
            ConfigError::Control(ControlConfigError::TooSmall {
                field: "poll_interval_ms",
                ..
            })
        ));
        let e = refused("api_hosts = [\"a.test\"]\n[control]\nhttp_url = \"http://x\"\n");
        assert_eq!(
            e.to_string(),
            "[control] is set, so routing comes only from the control service; \
             remove api_hosts from the file"
        );
    }
}
