//! Budget counters in Redis, shared by the fleet: one atomic script per call.
//!
//! The counter `<prefix>:budget:{<app>}:<period>` holds units used (consumed or
//! leased). A grant reads it, grants what is left up to the request, `INCRBY`s the
//! grant and sets `EXPIREAT` to the period's end, all in one script, so concurrent
//! proxies never grant more than the limit between them.

use super::{BudgetError, PeriodWindow};
use crate::limit::{BackendError, RedisBackend};
use redis::Script;
use std::sync::LazyLock;

/// KEYS[1] counter; ARGV limit, want, expire-at (unix s). Returns {granted, used}.
const TAKE: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local left = tonumber(ARGV[1]) - used
if left <= 0 then return {0, used} end
local grant = math.min(left, tonumber(ARGV[2]))
used = redis.call('INCRBY', KEYS[1], grant)
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return {grant, used}
"#;

/// KEYS[1] counter; ARGV units. Lowers the counter, never below 0 nor recreating it.
const GIVE_BACK: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local n = math.min(tonumber(v), tonumber(ARGV[1]))
if n > 0 then redis.call('DECRBY', KEYS[1], n) end
return n
"#;

/// KEYS[1] counter. Returns units used (0 when absent).
const USED: &str = "return tonumber(redis.call('GET', KEYS[1]) or '0')";

static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE));
static GIVE_BACK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GIVE_BACK));
static USED_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(USED));

/// Budget counters in Redis; cheap to clone.
#[derive(Clone, Debug)]
pub struct RedisBudgetStore {
    backend: RedisBackend,
}

impl RedisBudgetStore {
    pub fn new(backend: RedisBackend) -> Self {
        RedisBudgetStore { backend }
    }

    pub(crate) async fn take(
        &self,
        app: &str,
        period: &PeriodWindow,
        limit: u64,
        want: u64,
    ) -> Result<u64, BudgetError> {
        let mut call = TAKE_SCRIPT.prepare_invoke();
        call.key(self.key(app, &period.key))
            .arg(limit)
            .arg(want)
            .arg(period.ends_at);
        let reply: Vec<i64> = self.backend.invoke(&call).await?;
        match reply.first() {
            Some(&g) => Ok(u64::try_from(g).unwrap_or(0)),
            None => Err(BackendError::Protocol("empty budget reply".into()).into()),
        }
    }

    pub(crate) async fn give_back(
        &self,
        app: &str,
        period_key: &str,
        units: u64,
    ) -> Result<(), BudgetError> {
        let mut call = GIVE_BACK_SCRIPT.prepare_invoke();
        call.key(self.key(app, period_key)).arg(units);
        let _: i64 = self.backend.invoke(&call).await?;
        Ok(())
    }

    pub(crate) async fn used(&self, app: &str, period_key: &str) -> Result<u64, BudgetError> {
        let mut call = USED_SCRIPT.prepare_invoke();
        call.key(self.key(app, period_key));
        let used: i64 = self.backend.invoke(&call).await?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    fn key(&self, app: &str, period_key: &str) -> String {
        self.backend.key("budget", app, &[period_key])
    }
}
