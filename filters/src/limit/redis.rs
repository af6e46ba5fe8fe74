//! Cluster-wide GCRA in Redis: one atomic Lua script, one round trip per check.
//!
//! Each window keeps its theoretical arrival time (TAT, µs) under
//! `<prefix>:rl:{<app>}:<rule id>:<key value>`, expiring when the bucket is full
//! again. The script reads Redis's own clock (`TIME`), so proxies with skewed clocks
//! still share one limit; it tests every window first and updates them only if all
//! allow, so a refused request costs nothing in any window (unlike the local limiter).
//! Because the script is atomic, N proxies together admit exactly what one would,
//! give or take requests in flight when a window refills.

use super::{BackendError, Decision, RedisBackend, RequestKeys, Window};
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// KEYS: one per window. ARGV: per window, interval µs and burst.
/// Returns: allowed (0/1), then per window: remaining, reset µs, wait µs.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {1}
local tats = {}
local refused = false
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = now
  local stored = redis.call('GET', KEYS[i])
  if stored then tat = math.max(tonumber(stored), now) end
  local new_tat = tat + interval
  local allow_at = new_tat - interval * burst
  if now < allow_at then
    refused = true
    out[#out + 1] = 0
    out[#out + 1] = tat - now
    out[#out + 1] = allow_at - now
  else
    out[#out + 1] = math.floor((now - allow_at) / interval)
    out[#out + 1] = new_tat - now
    out[#out + 1] = 0
  end
  tats[i] = new_tat
end
if refused then
  out[1] = 0
  return out
end
for i = 1, #KEYS do
  local ttl = math.ceil((tats[i] - now) / 1000) + 1
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl)
end
return out
"#;

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA));

/// Rate checks against Redis; cheap to clone (shares the backend's connection).
#[derive(Clone, Debug)]
pub struct ClusterLimiter {
    backend: RedisBackend,
}

impl ClusterLimiter {
    pub fn new(backend: RedisBackend) -> Self {
        ClusterLimiter { backend }
    }

    /// Counts the request in every window whose key it has, for `app`, atomically:
    /// all windows are charged, or (refused) none.
    pub async fn check(
        &self,
        app: &str,
        windows: &[Window],
        keys: &RequestKeys<'_>,
    ) -> Result<Decision, BackendError> {
        let mut call = SCRIPT.prepare_invoke();
        let mut applied = Vec::with_capacity(windows.len());
        for w in windows {
            let Some(value) = keys.value(&w.key) else {
                continue;
            };
            let interval = w.interval().as_micros().max(1);
            call.key(self.backend.key("rl", app, &[&w.id, &value]))
                .arg(u64::try_from(interval).unwrap_or(u64::MAX))
                .arg(w.burst);
            applied.push(w);
        }
        if applied.is_empty() {
            return Ok(Decision::unlimited());
        }
        let reply: Vec<i64> = self.backend.invoke(&call).await?;
        decide(&applied, &reply)
    }
}

fn decide(windows: &[&Window], reply: &[i64]) -> Result<Decision, BackendError> {
    if reply.len() != 1 + 3 * windows.len() {
        return Err(BackendError::Protocol(format!(
            "{} values for {} windows",
            reply.len(),
            windows.len()
        )));
    }
    let allowed = reply[0] == 1;
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    let mut out = Decision::unlimited();
    for (w, r) in windows.iter().zip(reply[1..].chunks_exact(3)) {
        let wait = (r[2] > 0).then(|| micros(r[2]));
        if !allowed && wait.is_none() {
            // Another window refused; this one was not charged and does not bind.
            continue;
        }
        out = out.merge(Decision {
            allowed: wait.is_none(),
            limit: w.burst,
            remaining: u32::try_from(r[0].max(0)).unwrap_or(u32::MAX),
            reset: micros(r[1]),
            retry_after: wait,
            window: w.policy_window(),
            policy: Some(w.id.clone()),
        });
    }
    Ok(out)
}
