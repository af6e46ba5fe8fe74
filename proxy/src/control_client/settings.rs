//! The `[control]` table of the config file and what it resolves to at start.

use crate::config::ConfigError;
use http::Uri;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable read for the bearer token when neither `token` nor
/// `token_env` is set.
pub const DEFAULT_TOKEN_ENV: &str = "TOLLGATE_CONTROL_TOKEN";

/// Name of the persisted snapshot inside `state_dir`.
pub const STATE_FILE: &str = "edge-snapshot.json";

/// `[control]`: follow the control service instead of declaring routing in the file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// The `EdgeFeed` gRPC endpoint, e.g. `http://127.0.0.1:7071` (`https://` for TLS).
    #[serde(default)]
    pub grpc_url: Option<String>,
    /// The control service's HTTP API, polled while gRPC is unreachable.
    #[serde(default)]
    pub http_url: Option<String>,
    /// Bearer token sent to both; prefer `token_env` to keep it out of the file.
    #[serde(default)]
    pub token: Option<String>,
    /// Environment variable holding the token (default `TOLLGATE_CONTROL_TOKEN`).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Names this proxy to the service; `<hostname>-<pid>` when absent.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Folder of the persisted snapshot; the config file's folder when absent.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// PEM CAs trusted for `https://` control URLs; the web PKI roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Interval between `/v1/events` polls while polling.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How often usage records are sent to `http_url` (default 10 s).
    #[serde(default = "default_usage_flush_ms")]
    pub usage_flush_interval_ms: u64,
    /// Longest wait between gRPC reconnect attempts (backoff starts at 100 ms).
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Consecutive failed gRPC attempts before polling `http_url`.
    #[serde(default = "default_fallback_after")]
    pub fallback_after_failures: u32,
}

impl fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlConfig")
            .field("grpc_url", &self.grpc_url)
            .field("http_url", &self.http_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_env", &self.token_env)
            .field("node_id", &self.node_id)
            .field("state_dir", &self.state_dir)
            .field("ca_file", &self.ca_file)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("fallback_after_failures", &self.fallback_after_failures)
            .finish()
    }
}

/// What is wrong with `[control]`; [`ConfigError::Control`] prefixes it with the table.
#[derive(Debug, thiserror::Error)]
pub enum ControlConfigError {
    #[error("needs grpc_url, http_url or both")]
    NoUrl,
    #[error("{key} `{url}`: {problem}")]
    Url {
        key: &'static str,
        url: String,
        problem: UrlProblem,
    },
    #[error("set token or token_env, not both")]
    TokenTwice,
    #[error("token_env: environment variable `{var}` is not set")]
    TokenEnvUnset {
        var: String,
        source: std::env::VarError,
    },
    #[error("the token contains characters not allowed in a header")]
    TokenNotHeaderSafe(#[source] http::header::InvalidHeaderValue),
    #[error("node_id must not be empty")]
    EmptyNodeId,
    #[error("{field} must be at least {min}")]
    TooSmall { field: &'static str, min: u64 },
}

/// Why a control service URL is refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlProblem {
    #[error("not a URL")]
    NotAUrl(#[source] http::uri::InvalidUri),
    #[error("needs http:// or https://")]
    Scheme,
    #[error("needs a host")]
    NoHost,
    #[error("must not have a query")]
    Query,
}

impl ControlConfig {
    /// Checks what can be checked without the environment or the file system.
    pub fn check(&self) -> Result<(), ControlConfigError> {
        let at_least = |value: u64, field, min| {
            if value < min {
                Err(ControlConfigError::TooSmall { field, min })
            } else {
                Ok(())
            }
        };
        if self.grpc_url.is_none() && self.http_url.is_none() {
            return Err(ControlConfigError::NoUrl);
        }
        for (key, url) in [("grpc_url", &self.grpc_url), ("http_url", &self.http_url)] {
            if let Some(url) = url {
                parse_url(key, url)?;
            }
        }
        if self.token.is_some() && self.token_env.is_some() {
            return Err(ControlConfigError::TokenTwice);
        }
        if self.node_id.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(ControlConfigError::EmptyNodeId);
        }
        at_least(self.usage_flush_interval_ms, "usage_flush_interval_ms", 100)?;
        at_least(self.poll_interval_ms, "poll_interval_ms", 50)?;
        at_least(self.reconnect_max_ms, "reconnect_max_ms", 100)?;
        at_least(
            self.fallback_after_failures.into(),
            "fallback_after_failures",
            1,
        )?;
        Ok(())
    }
}

/// `[control]` resolved against the environment and the config file's folder.
#[derive(Clone)]
pub struct ControlSettings {
    pub grpc_url: Option<Uri>,
    pub http_url: Option<Uri>,
    pub token: Option<String>,
    pub node_id: String,
    /// `state_dir/edge-snapshot.json`.
    pub state_file: PathBuf,
    pub ca_file: Option<String>,
    pub poll_interval: Duration,
    pub usage_flush_interval: Duration,
    pub reconnect_max: Duration,
    pub fallback_after: u32,
    /// `default_certificate` of the file, applied to the control service's certificates.
    pub default_certificate: Option<String>,
}

impl fmt::Debug for ControlSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlSettings")
            .field("grpc_url", &self.grpc_url)
            .field("http_url", &self.http_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("node_id", &self.node_id)
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

impl ControlSettings {
    /// Resolves `cfg` for the config file at `config_path`: reads the token from the
    /// environment, makes relative paths relative to the file's folder and creates
    /// `state_dir`.
    pub fn resolve(
        cfg: &ControlConfig,
        config_path: &Path,
        default_certificate: Option<String>,
    ) -> Result<Self, ConfigError> {
        cfg.check()?;
        let base = config_path.parent().unwrap_or(Path::new("."));
        let token =
            match (&cfg.token, &cfg.token_env) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(var)) => Some(std::env::var(var).map_err(|source| {
                    ControlConfigError::TokenEnvUnset {
                        var: var.clone(),
                        source,
                    }
                })?),
                (None, None) => std::env::var(DEFAULT_TOKEN_ENV).ok(),
            };
        if let Some(t) = &token {
            http::HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(ControlConfigError::TokenNotHeaderSafe)?;
        }
        let state_dir = match &cfg.state_dir {
            Some(d) if d.is_relative() => base.join(d),
            Some(d) => d.clone(),
            None => base.to_path_buf(),
        };
        std::fs::create_dir_all(&state_dir).map_err(|source| ConfigError::Read {
            path: state_dir.clone(),
            source,
        })?;
        let ca_file = cfg.ca_file.as_ref().map(|p| {
            let p = if p.is_relative() {
                base.join(p)
            } else {
                p.clone()
            };
            p.to_string_lossy().into_owned()
        });
        let url = |key, u: &Option<String>| u.as_deref().map(|u| parse_url(key, u)).transpose();
        Ok(ControlSettings {
            grpc_url: url("grpc_url", &cfg.grpc_url)?,
            http_url: url("http_url", &cfg.http_url)?,
            token,
            node_id: cfg.node_id.clone().unwrap_or_else(default_node_id),
            state_file: state_dir.join(STATE_FILE),
            ca_file,
            poll_interval: Duration::from_millis(cfg.poll_interval_ms),
            usage_flush_interval: Duration::from_millis(cfg.usage_flush_interval_ms),
            reconnect_max: Duration::from_millis(cfg.reconnect_max_ms),
            fallback_after: cfg.fallback_after_failures,
            default_certificate,
        })
    }

    /// The `authorization` header value, when a token is configured.
    pub fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }
}

fn parse_url(key: &'static str, url: &str) -> Result<Uri, ControlConfigError> {
    let bad = |problem| ControlConfigError::Url {
        key,
        url: url.to_owned(),
        problem,
    };
    let uri: Uri = url.parse().map_err(|e| bad(UrlProblem::NotAUrl(e)))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad(UrlProblem::Scheme)),
    }
    if uri.authority().is_none() {
        return Err(bad(UrlProblem::NoHost));
    }
    if uri.query().is_some() {
        return Err(bad(UrlProblem::Query));
    }
    Ok(uri)
}

/// `<hostname>-<pid>`.
fn default_node_id() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|f| {
            std::fs::read_to_string(f)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "tollgate".into());
    format!("{host}-{}", std::process::id())
}

fn default_usage_flush_ms() -> u64 {
    10_000
}

fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_reconnect_max_ms() -> u64 {
    10_000
}
fn default_fallback_after() -> u32 {
    3
}
