//! Per-app limits as a tenant writes them: rate rules, concurrent-stream quota and a
//! usage budget.
//!
//! The control service stores these as opaque JSON; the proxy parses them with
//! [`LimitsSpec::from_json`], which also validates. Enforcement lives in the
//! `filters` crate (`limit`, `budget`); this module only says what the limits are.
//!
//! ```json
//! { "rate": [ {"key": "api_key", "per_second": 10, "burst": 20},
//!             {"key": "client_ip", "per_minute": 600},
//!             {"key": {"header": "x-user"}, "per_second": 5} ],
//!   "scope": "cluster",
//!   "on_backend_error": "local",
//!   "max_concurrent_streams": 100,
//!   "budget": { "period": "day", "limit": 100000, "unit": {"field": "usage_tokens"} } }
//! ```

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

/// Most rate rules one app may have (bounds the work of one cluster-wide check).
pub const MAX_RATE_RULES: usize = 16;

/// Everything an app is limited by; every section is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Rate rules; a request must pass all that apply to it.
    #[serde(default)]
    pub rate: Vec<RateRule>,
    /// Where rate state lives: this proxy only, or shared by the fleet through Redis.
    #[serde(default)]
    pub scope: LimitScope,
    /// What a cluster-scoped check does when Redis cannot answer in time.
    #[serde(default)]
    pub on_backend_error: OnBackendError,
    /// Most streams (requests in flight) the app may hold open on one proxy.
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// Units the app may consume per period.
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
}

/// One rate: `count` requests per window for each distinct value of `key`.
///
/// Exactly one of `per_second`, `per_minute`, `per_hour` is set; several windows on the
/// same key are several rules. `burst` (default: the count) is how many requests may
/// arrive at once from an idle key (GCRA bucket size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    pub key: RateKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// What a rate rule counts requests by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    /// The whole app, all callers together.
    App,
    /// The API key id the request authenticated with.
    ApiKey,
    /// The `sub` of the verified access token.
    Subject,
    /// The client's IP address (after PROXY protocol, if any).
    ClientIp,
    /// The value of a request header (case-insensitive name).
    Header(String),
}

/// Where rate-limit state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// Each proxy enforces the limits on its own traffic.
    #[default]
    Local,
    /// The fleet enforces one limit together through Redis.
    Cluster,
}

/// Policy for a cluster-scoped check whose backend fails or times out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendError {
    /// Enforce the same rules on this proxy alone (the fleet may then admit up to N×).
    #[default]
    Local,
    /// Refuse the request (fail closed).
    Deny,
    /// Admit the request unchecked (fail open).
    Allow,
}

/// A usage budget per app per calendar period (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    pub period: BudgetPeriod,
    /// Units allowed per period.
    pub limit: u64,
    #[serde(default)]
    pub unit: BudgetUnit,
}

/// The calendar period a budget resets on, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    Day,
    Month,
}

/// What one budget unit is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetUnit {
    /// One per request.
    #[default]
    Requests,
    /// Response body bytes.
    Bytes,
    /// Streamed messages (one per message in either direction the proxy meters).
    Messages,
    /// A numeric field of each streamed message, by dotted path (e.g. `usage.tokens`).
    Field(String),
}

impl LimitsSpec {
    /// Parses and validates; the error lists every problem found.
    pub fn from_json(value: &serde_json::Value) -> Result<LimitsSpec, String> {
        let spec = LimitsSpec::deserialize(value).map_err(|e| format!("limits: {e}"))?;
        let problems = spec.validate();
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(format!("limits: {}", problems.join("; ")))
        }
    }

    /// Every problem with this spec; empty when it is valid.
    pub fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.rate.len() > MAX_RATE_RULES {
            out.push(format!("at most {MAX_RATE_RULES} rate rules"));
        }
        let mut seen = HashSet::new();
        for (i, rule) in self.rate.iter().enumerate() {
            rule.check(i, &mut out);
            if rule.window().is_some() && !seen.insert(rule.id()) {
                out.push(format!("rate[{i}]: duplicate rule `{}`", rule.id()));
            }
        }
        if self.max_concurrent_streams == Some(0) {
            out.push("max_concurrent_streams must be at least 1".into());
        }
        if let Some(b) = &self.budget {
            if b.limit == 0 {
                out.push("budget.limit must be at least 1".into());
            }
            if let BudgetUnit::Field(path) = &b.unit
                && (path.is_empty() || path.split('.').any(str::is_empty))
            {
                out.push(format!("budget.unit.field `{path}` is not a dotted path"));
            }
        }
        out
    }
}

impl RateRule {
    /// The window as (count, length), if exactly one window is set.
    pub fn window(&self) -> Option<(u32, Duration)> {
        let set: Vec<(u32, u64)> = [
            (self.per_second, 1),
            (self.per_minute, 60),
            (self.per_hour, 3600),
        ]
        .into_iter()
        .filter_map(|(n, secs)| n.map(|n| (n, secs)))
        .collect();
        match set.as_slice() {
            [(n, secs)] => Some((*n, Duration::from_secs(*secs))),
            _ => None,
        }
    }

    /// Requests that may arrive at once from an idle key.
    pub fn burst_size(&self) -> u32 {
        self.burst
            .or_else(|| self.window().map(|(n, _)| n))
            .unwrap_or(1)
    }

    /// A stable name, e.g. `api_key.10/1s`: the policy name in `RateLimit` headers and
    /// part of the Redis key (a changed count or window starts fresh state).
    pub fn id(&self) -> String {
        match self.window() {
            Some((n, w)) => format!("{}.{n}/{}s", self.key, w.as_secs()),
            None => format!("{}.invalid", self.key),
        }
    }

    fn check(&self, i: usize, out: &mut Vec<String>) {
        match self.window() {
            None => out.push(format!(
                "rate[{i}]: set exactly one of per_second, per_minute, per_hour"
            )),
            Some((0, _)) => out.push(format!("rate[{i}]: the rate must be at least 1")),
            Some(_) => {}
        }
        if self.burst == Some(0) {
            out.push(format!("rate[{i}]: burst must be at least 1"));
        }
        if let RateKey::Header(name) = &self.key
            && !is_header_name(name)
        {
            out.push(format!("rate[{i}]: `{name}` is not a header name"));
        }
    }
}

impl fmt::Display for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateKey::App => f.write_str("app"),
            RateKey::ApiKey => f.write_str("api_key"),
            RateKey::Subject => f.write_str("subject"),
            RateKey::ClientIp => f.write_str("client_ip"),
            RateKey::Header(h) => write!(f, "header:{}", h.to_ascii_lowercase()),
        }
    }
}

/// An RFC 9110 token (what a field name may be).
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_documented_shape() {
        let v = json!({
            "rate": [ {"key": "api_key", "per_second": 10, "burst": 20},
                      {"key": "client_ip", "per_minute": 600},
                      {"key": {"header": "X-User"}, "per_second": 5} ],
            "scope": "cluster",
            "on_backend_error": "deny",
            "max_concurrent_streams": 100,
            "budget": { "period": "day", "limit": 100000, "unit": {"field": "usage_tokens"} }
        });
        let spec = LimitsSpec::from_json(&v).unwrap();
        assert_eq!(spec.scope, LimitScope::Cluster);
        assert_eq!(spec.on_backend_error, OnBackendError::Deny);
        assert_eq!(spec.rate[0].burst_size(), 20);
        assert_eq!(spec.rate[1].burst_size(), 600);
        assert_eq!(spec.rate[1].window(), Some((600, Duration::from_secs(60))));
        assert_eq!(spec.rate[2].id(), "header:x-user.5/1s");
        let b = spec.budget.unwrap();
        assert_eq!(b.unit, BudgetUnit::Field("usage_tokens".into()));
        assert_eq!(b.period, BudgetPeriod::Day);
        let units = ["requests", "bytes", "messages"];
        for u in units {
            let v = json!({"budget": {"period": "month", "limit": 1, "unit": u}});
            assert!(LimitsSpec::from_json(&v).is_ok(), "{u}");
        }
    }

    #[test]
    fn defaults_are_local_and_fall_back_locally() {
        let spec = LimitsSpec::from_json(&json!({})).unwrap();
        assert_eq!(spec.scope, LimitScope::Local);
        assert_eq!(spec.on_backend_error, OnBackendError::Local);
        assert!(spec.rate.is_empty() && spec.budget.is_none());
    }

    #[test]
    fn reports_every_problem() {
        let v = json!({
            "rate": [ {"key": "app", "per_second": 0},
                      {"key": "app", "per_second": 1, "per_minute": 5},
                      {"key": "app"},
                      {"key": {"header": ""}, "per_second": 1},
                      {"key": {"header": "bad name"}, "per_second": 1, "burst": 0},
                      {"key": "subject", "per_hour": 3},
                      {"key": "subject", "per_hour": 3} ],
            "max_concurrent_streams": 0,
            "budget": { "period": "day", "limit": 0, "unit": {"field": "a..b"} }
        });
        let spec: LimitsSpec = serde_json::from_value(v.clone()).unwrap();
        let problems = spec.validate();
        assert_eq!(problems.len(), 10, "{problems:#?}");
        assert!(LimitsSpec::from_json(&v).is_err());
    }

    #[test]
    fn unknown_fields_and_keys_are_refused() {
        for v in [
            json!({"rates": []}),
            json!({"rate": [{"key": "user", "per_second": 1}]}),
            json!({"rate": [{"key": "app", "per_second": 1, "per_day": 1}]}),
            json!({"budget": {"period": "week", "limit": 1}}),
            json!({"scope": "global"}),
        ] {
            assert!(LimitsSpec::from_json(&v).is_err(), "{v}");
        }
    }
}
