//! Compiled rate windows and the per-request values they count by.

use http::HeaderMap;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tollgate_routing::{RateKey, RateRule};

/// One rate rule ready to enforce: GCRA with `count` per `period` and a bucket of
/// `burst`, counted per value of `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Policy name in headers and Redis keys (`RateRule::id`).
    pub id: Arc<str>,
    pub key: RateKey,
    pub count: u32,
    pub period: Duration,
    pub burst: u32,
}

impl Window {
    /// The window of a valid rule; `None` for a rule that does not validate.
    pub fn from_rule(rule: &RateRule) -> Option<Window> {
        let (count, period) = rule.window()?;
        let burst = rule.burst_size();
        (count > 0 && burst > 0).then(|| Window {
            id: rule.id().into(),
            key: rule.key.clone(),
            count,
            period,
            burst,
        })
    }

    /// The valid rules' windows, shortest period first.
    ///
    /// Order matters locally: `governor` consumes a cell in each window it passes, so a
    /// request refused by a later window has still spent one in the earlier ones. Short
    /// windows refill fast, so checking them first makes that leak cheap.
    pub fn compile(rules: &[RateRule]) -> Vec<Window> {
        let mut out: Vec<Window> = rules.iter().filter_map(Window::from_rule).collect();
        out.sort_by_key(|w| (w.period, w.interval()));
        out
    }

    /// Time to earn one request back (GCRA emission interval), at least 1 ns.
    pub fn interval(&self) -> Duration {
        (self.period / self.count.max(1)).max(Duration::from_nanos(1))
    }

    /// The window a full bucket refills in: `burst` requests per this, as advertised
    /// in `RateLimit-Policy` (`q=burst;w=…`).
    pub fn policy_window(&self) -> Duration {
        self.interval().saturating_mul(self.burst)
    }
}

/// What the request is counted by; a window whose key the request lacks (no API key,
/// no such header) does not apply to it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestKeys<'a> {
    pub app: &'a str,
    /// The API key id (never the secret).
    pub api_key: Option<&'a str>,
    /// The verified token's `sub`.
    pub subject: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub headers: Option<&'a HeaderMap>,
}

impl<'a> RequestKeys<'a> {
    /// Keys for an app-wide check only.
    pub fn app(app: &'a str) -> Self {
        RequestKeys {
            app,
            ..Default::default()
        }
    }

    /// The value `key` counts by for this request, if it has one.
    pub fn value(&self, key: &RateKey) -> Option<Cow<'a, str>> {
        match key {
            RateKey::App => Some(Cow::Borrowed(self.app)),
            RateKey::ApiKey => self.api_key.map(Cow::Borrowed),
            RateKey::Subject => self.subject.map(Cow::Borrowed),
            RateKey::ClientIp => self.client_ip.map(|ip| Cow::Owned(ip.to_string())),
            RateKey::Header(name) => {
                let v = self.headers?.get(name.as_str())?;
                if v.is_empty() {
                    return None;
                }
                Some(match v.to_str() {
                    Ok(s) => Cow::Borrowed(s),
                    Err(_) => Cow::Owned(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(key: RateKey, per_second: Option<u32>, per_minute: Option<u32>) -> RateRule {
        RateRule {
            key,
            per_second,
            per_minute,
            per_hour: None,
            burst: None,
        }
    }

    #[test]
    fn compiles_valid_rules_shortest_first() {
        let rules = [
            rule(RateKey::App, None, Some(600)),
            rule(RateKey::App, Some(0), None),
            rule(RateKey::ApiKey, Some(10), None),
        ];
        let w = Window::compile(&rules);
        assert_eq!(w.len(), 2);
        assert_eq!(&*w[0].id, "api_key.10/1s");
        assert_eq!(w[0].interval(), Duration::from_millis(100));
        assert_eq!(w[1].policy_window(), Duration::from_secs(60));
    }

    #[test]
    fn keys_resolve_or_skip() {
        let mut h = HeaderMap::new();
        h.insert("x-user", "u1".parse().unwrap());
        let keys = RequestKeys {
            app: "a",
            client_ip: Some("10.0.0.1".parse().unwrap()),
            headers: Some(&h),
            ..Default::default()
        };
        assert_eq!(keys.value(&RateKey::App).as_deref(), Some("a"));
        assert_eq!(keys.value(&RateKey::ClientIp).as_deref(), Some("10.0.0.1"));
        assert_eq!(
            keys.value(&RateKey::Header("X-User".into())).as_deref(),
            Some("u1")
        );
        assert_eq!(keys.value(&RateKey::Header("x-other".into())), None);
        assert_eq!(keys.value(&RateKey::ApiKey), None);
    }
}
