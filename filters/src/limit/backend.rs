//! The Redis connection shared by the cluster limiter and the Redis budget store.
//!
//! One `redis::aio::ConnectionManager` (a multiplexed connection that reconnects with
//! exponential backoff after an I/O error, e.g. a Redis restart) per backend; clones
//! share it. Every call is bounded by `timeout`, whatever the connection is doing: a
//! check never waits longer for Redis than that. Scripts are sent as `EVALSHA`; after
//! a Redis restart the first call per script also loads it (`NOSCRIPT`, then retry).

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, ScriptInvocation};
use ring::digest;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// Where Redis is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`.
    pub url: String,
    /// First segment of every key, e.g. `tollgate` → `tollgate:rl:…`.
    pub prefix: String,
    /// Bound on each call, connecting included.
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "tollgate".into(),
            timeout: Duration::from_millis(50),
        }
    }
}

/// Why Redis did not answer usefully. The caller applies its `on_backend_error` policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis answered something unexpected: {0}")]
    Protocol(String),
    #[error("redis backend misconfigured: {0}")]
    Config(String),
}

/// A shared, self-reconnecting Redis connection with a per-call timeout.
#[derive(Clone)]
pub struct RedisBackend {
    conn: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisBackend {
    /// Prepares the connection without connecting: Redis may be down at start; the
    /// first call connects. Must run inside a Tokio runtime.
    pub fn connect(cfg: &RedisConfig) -> Result<Self, BackendError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BackendError::Config("no Tokio runtime".into()));
        }
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| BackendError::Config(e.to_string()))?;
        let timeout = cfg.timeout.max(Duration::from_millis(1));
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| BackendError::Config(e.to_string()))?;
        Ok(RedisBackend {
            conn,
            prefix: cfg.prefix.as_str().into(),
            timeout,
        })
    }

    /// The per-call bound.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs a script invocation, bounded by the timeout.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        call: &ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
            Err(_) => Err(BackendError::Timeout(self.timeout)),
            Ok(Err(e)) if e.is_timeout() => Err(BackendError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(BackendError::Redis(e.to_string())),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// `<prefix>:<kind>:{<app>}:<rest…>`, each part made key-safe. The braces make the
    /// app a Redis Cluster hash tag, so one check's keys share a slot.
    pub(crate) fn key(&self, kind: &str, app: &str, rest: &[&str]) -> String {
        let mut k = format!("{}:{kind}:{{{}}}", self.prefix, key_part(app));
        for p in rest {
            k.push(':');
            k.push_str(&key_part(p));
        }
        k
    }
}

/// A value as a key segment: itself when short and plain, else `#` and 32 hex digits
/// of its SHA-256 (no raw segment contains `#`, so the two never meet).
fn key_part(s: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_graphic() && !b"{}:#".contains(&b);
    if !s.is_empty() && s.len() <= 64 && s.bytes().all(plain) {
        return Cow::Borrowed(s);
    }
    let d = digest::digest(&digest::SHA256, s.as_bytes());
    let mut out = String::with_capacity(33);
    out.push('#');
    for b in &d.as_ref()[..16] {
        let _ = write!(out, "{b:02x}");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_or_odd_parts_are_hashed() {
        assert_eq!(key_part("sk_123"), "sk_123");
        assert_eq!(key_part("10.0.0.1"), "10.0.0.1");
        for odd in ["", "a:b", "{x}", "#1", "with space", &"x".repeat(65)] {
            let k = key_part(odd);
            assert!(k.starts_with('#') && k.len() == 33, "{odd} → {k}");
        }
        assert_ne!(key_part("a:b"), key_part("a:c"));
    }
}
