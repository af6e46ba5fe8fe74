//! Resumable streams in Redis, so a client can resume through any proxy.
//!
//! Per stream (the token is a Redis Cluster hash tag, so both keys share a slot):
//! - `<prefix>:rs:{<token>}:m`, a hash: `owner`, `wire`, `head`, the producing proxy's
//!   `instance`, and `broken` once the copy here is known to be incomplete;
//! - `<prefix>:rs:{<token>}:s`, a stream capped at the buffer size: entry `<n>-0` holds
//!   message `n` in field `d`; the final frame is the entry after the last message,
//!   in field `e`.
//!
//! Both expire `ttl_secs` after the last write. `<prefix>:rs:live:<instance>` exists
//! while the producing proxy runs (refreshed every 2 s, 6 s to live): a reader that
//! finds no new entries and no live producer reports the stream lost.
//!
//! Writes are write-behind: producers queue them and one writer task sends them in
//! pipelines, so a message costs one `XADD` and no round trip of its own; a slow or
//! absent Redis never holds a stream up. Whatever a failed write leaves out marks the
//! stream `broken`, never a silent gap.

use super::token::{Owner, Wire, decode_head, encode_head};
use bytes::Bytes;
use http::HeaderMap;
use prometheus::IntCounter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Writes queued at most; beyond this a producer waits (bounded by the writer's own
/// timeout, so never for long).
const QUEUE: usize = 16_384;
/// Operations per pipeline at most.
const BATCH: usize = 512;
/// Buffers smaller than this are trimmed exactly in Redis.
const EXACT_TRIM_BELOW: u32 = 200;
const LIVE_EVERY: Duration = Duration::from_secs(2);
const LIVE_TTL_MS: u64 = 6_000;
/// How long a reader blocks for new entries before it checks the producer is alive.
pub const TAIL_BLOCK_MS: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// One write, queued for the writer task.
#[derive(Debug)]
pub enum Op {
    Open {
        token: Arc<str>,
        owner: Owner,
        wire: Wire,
        head: HeaderMap,
        cap: u32,
        ttl_ms: u64,
    },
    Append {
        token: Arc<str>,
        index: u64,
        data: Bytes,
    },
    End {
        token: Arc<str>,
        index: u64,
        data: Bytes,
    },
    /// Answered once everything queued before it was sent.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// What a reader needs to know of a stream.
#[derive(Debug)]
pub struct Meta {
    pub owner: Owner,
    pub wire: Wire,
    pub head: HeaderMap,
    pub instance: String,
}

/// An entry read back.
#[derive(Debug, PartialEq)]
pub enum Entry {
    Message(u64, Bytes),
    End(u64, Bytes),
}

/// The Redis side of resumable streams.
#[derive(Clone)]
pub struct Store {
    client: Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    /// This proxy process, as named in the streams it produces.
    pub instance: Arc<str>,
    tx: mpsc::Sender<Op>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .finish()
    }
}

/// Counters the writer keeps.
#[derive(Clone)]
pub struct WriterMetrics {
    pub errors: IntCounter,
    pub commands: IntCounter,
}

impl Store {
    /// Prepares the connection (lazily: Redis may be down at start) and starts the
    /// writer and the liveness beacon. Must run on the runtime.
    pub fn start(
        url: &str,
        prefix: &str,
        timeout: Duration,
        instance: Arc<str>,
        metrics: WriterMetrics,
    ) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| StoreError::Redis(e.to_string()))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|e| StoreError::Redis(e.to_string()))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let store = Store {
            client,
            conn,
            prefix: Arc::from(prefix),
            timeout,
            instance,
            tx,
        };
        tokio::spawn(writer(store.clone(), rx, metrics));
        tokio::spawn(beacon(store.clone()));
        Ok(store)
    }

    fn meta_key(&self, token: &str) -> String {
        format!("{}:rs:{{{token}}}:m", self.prefix)
    }
    fn stream_key(&self, token: &str) -> String {
        format!("{}:rs:{{{token}}}:s", self.prefix)
    }
    fn live_key(&self, instance: &str) -> String {
        format!("{}:rs:live:{instance}", self.prefix)
    }

    /// Waits (until `deadline` at most) for the writes queued so far to be sent.
    pub async fn flush(&self, deadline: Instant) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = async {
            if self.tx.send(Op::Flush(tx)).await.is_ok() {
                let _ = rx.await;
            }
        };
        let _ = tokio::time::timeout_at(deadline, sent).await;
    }

    /// Queues a write if there is room; the write back if not.
    pub fn try_queue(&self, op: Op) -> Result<(), Box<Op>> {
        match self.tx.try_send(op) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(op)) => Err(Box::new(op)),
            // The writer is gone (shutdown): nothing more reaches Redis.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// Queues a write; waits only while the queue is full.
    pub async fn queue(&self, op: Op) {
        let _ = self.tx.send(op).await;
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, cmd.query_async(conn)).await {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            Ok(r) => r.map_err(|e| StoreError::Redis(e.to_string())),
        }
    }

    /// The stream's record, or `None` when no stream has that token (any more).
    pub async fn meta(&self, token: &str) -> Result<Option<Meta>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, Vec<u8>> = self
            .run(&mut conn, redis::cmd("HGETALL").arg(self.meta_key(token)))
            .await?;
        Ok(meta_from_fields(&fields))
    }

    /// The index of the oldest entry kept, and of the final entry if the stream ended.
    pub async fn bounds(&self, token: &str) -> Result<(Option<u64>, Option<u64>), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.stream_key(token);
        let mut pipe = redis::pipe();
        pipe.cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
        pipe.cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let (oldest, newest): (Value, Value) =
            match tokio::time::timeout(self.timeout, pipe.query_async(&mut conn)).await {
                Err(_) => return Err(StoreError::Timeout(self.timeout)),
                Ok(r) => r.map_err(|e| StoreError::Redis(e.to_string()))?,
            };
        let first = parse_entries(&oldest).first().map(|e| match e {
            Entry::Message(i, _) | Entry::End(i, _) => *i,
        });
        let end = parse_entries(&newest).into_iter().find_map(|e| match e {
            Entry::End(i, _) => Some(i),
            Entry::Message(..) => None,
        });
        Ok((first, end))
    }

    /// Whether the stream's producer still runs and its copy here is whole.
    pub async fn producer_alive(&self, token: &str, instance: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS")
            .arg(self.live_key(instance))
            .cmd("HEXISTS")
            .arg(self.meta_key(token))
            .arg("broken");
        let (live, broken): (bool, bool) =
            match tokio::time::timeout(self.timeout, pipe.query_async(&mut conn)).await {
                Err(_) => return Err(StoreError::Timeout(self.timeout)),
                Ok(r) => r.map_err(|e| StoreError::Redis(e.to_string()))?,
            };
        Ok(live && !broken)
    }

    /// A connection of the reader's own: `XREAD BLOCK` would hold a shared one up.
    pub async fn reader(&self) -> Result<MultiplexedConnection, StoreError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout + Duration::from_millis(TAIL_BLOCK_MS)));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| StoreError::Redis(e.to_string()))
    }

    /// Entries after message `after`, waiting up to [`TAIL_BLOCK_MS`] for some.
    pub async fn read_after(
        &self,
        conn: &mut MultiplexedConnection,
        token: &str,
        after: u64,
    ) -> Result<Vec<Entry>, StoreError> {
        let wait = self.timeout + Duration::from_millis(TAIL_BLOCK_MS);
        let cmd = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(256)
            .arg("BLOCK")
            .arg(TAIL_BLOCK_MS)
            .arg("STREAMS")
            .arg(self.stream_key(token))
            .arg(format!("{after}-0"))
            .clone();
        let v: Value = match tokio::time::timeout(wait, cmd.query_async(conn)).await {
            Err(_) => return Err(StoreError::Timeout(wait)),
            Ok(r) => r.map_err(|e| StoreError::Redis(e.to_string()))?,
        };
        Ok(parse_entries(&v))
    }
}

/// Sends queued writes in pipelines. After a failure it stops calling Redis for a
/// second (writes in that time are dropped and their streams marked broken), so a
/// dead Redis costs producers nothing.
async fn writer(store: Store, mut rx: mpsc::Receiver<Op>, metrics: WriterMetrics) {
    struct Stream {
        cap: u32,
        ttl_ms: u64,
        refreshed: Instant,
        key: String,
    }
    let mut streams: HashMap<Arc<str>, Stream> = HashMap::new();
    let mut broken: HashSet<Arc<str>> = HashSet::new();
    let mut unmarked: Vec<Arc<str>> = Vec::new();
    let mut paused_until: Option<Instant> = None;
    let mut conn = store.conn.clone();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // Marks owed to streams that went quiet are sent without waiting for a write.
        let owed = !unmarked.is_empty();
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
            _ = tokio::time::sleep(Duration::from_secs(1)), if owed => {}
        }
        let now = Instant::now();
        let paused = paused_until.is_some_and(|t| now < t);
        let mut pipe = redis::pipe();
        let mut commands = 0u64;
        let mut touched: Vec<Arc<str>> = Vec::new();
        let mut flushed = Vec::new();
        for op in batch.drain(..) {
            let token = match &op {
                Op::Flush(_) => {
                    if let Op::Flush(done) = op {
                        flushed.push(done);
                    }
                    continue;
                }
                Op::Open { token, .. } | Op::Append { token, .. } | Op::End { token, .. } => {
                    token.clone()
                }
            };
            if paused {
                if broken.insert(token.clone()) {
                    unmarked.push(token.clone());
                }
                match op {
                    Op::Open { cap, ttl_ms, .. } => {
                        let (refreshed, key) = (now, store.stream_key(&token));
                        let s = Stream {
                            cap,
                            ttl_ms,
                            refreshed,
                            key,
                        };
                        streams.insert(token, s);
                    }
                    Op::End { .. } => {
                        streams.remove(&token);
                    }
                    _ => {}
                }
                continue;
            }
            let (token, index, data, end) = match op {
                Op::Open {
                    token,
                    owner,
                    wire,
                    head,
                    cap,
                    ttl_ms,
                } => {
                    let m = store.meta_key(&token);
                    pipe.cmd("HSET")
                        .arg(&m)
                        .arg("owner")
                        .arg(owner.as_str())
                        .arg("wire")
                        .arg(wire.name())
                        .arg("head")
                        .arg(encode_head(&head).as_ref())
                        .arg("instance")
                        .arg(&*store.instance)
                        .ignore();
                    pipe.cmd("PEXPIRE").arg(&m).arg(ttl_ms).ignore();
                    commands += 2;
                    let refreshed = now;
                    touched.push(token.clone());
                    let key = store.stream_key(&token);
                    streams.insert(
                        token,
                        Stream {
                            cap,
                            ttl_ms,
                            refreshed,
                            key,
                        },
                    );
                    continue;
                }
                Op::Append { token, index, data } => (token, index, data, false),
                Op::End { token, index, data } => (token, index, data, true),
                Op::Flush(_) => continue,
            };
            // A stream whose copy here is already incomplete gets nothing more.
            let Some(s) = streams.get_mut(&token).filter(|_| !broken.contains(&token)) else {
                if end {
                    streams.remove(&token);
                }
                continue;
            };
            // Exact trimming for small buffers; large ones trim whole nodes (Redis keeps
            // at least the cap, at most about a hundred more), which is far cheaper.
            let trim = if s.cap < EXACT_TRIM_BELOW { "=" } else { "~" };
            pipe.cmd("XADD")
                .arg(&s.key)
                .arg("MAXLEN")
                .arg(trim)
                .arg(u64::from(s.cap) + 1)
                .arg(format!("{index}-0"))
                .arg(if end { "e" } else { "d" })
                .arg(data.as_ref())
                .ignore();
            commands += 1;
            // The TTL counts from the last write: refreshed on the first message and
            // the end, and otherwise every tenth of it.
            let due = now.duration_since(s.refreshed).as_millis() as u64 >= s.ttl_ms / 10;
            if end || due || index == 1 {
                pipe.cmd("PEXPIRE").arg(&s.key).arg(s.ttl_ms).ignore();
                pipe.cmd("PEXPIRE")
                    .arg(store.meta_key(&token))
                    .arg(s.ttl_ms)
                    .ignore();
                commands += 2;
                s.refreshed = now;
            }
            if end {
                streams.remove(&token);
            }
            touched.push(token);
        }
        if paused {
            for f in flushed {
                let _ = f.send(());
            }
            continue;
        }
        // Streams left incomplete by an earlier failure say so (and the mark expires
        // like the stream; an hour when the stream is already forgotten here).
        for token in unmarked.drain(..) {
            let m = store.meta_key(&token);
            let ttl_ms = streams.get(&token).map_or(3_600_000, |s| s.ttl_ms);
            pipe.cmd("HSET").arg(&m).arg("broken").arg(1).ignore();
            pipe.cmd("PEXPIRE").arg(&m).arg(ttl_ms).ignore();
            commands += 2;
        }
        if commands == 0 {
            for f in flushed {
                let _ = f.send(());
            }
            continue;
        }
        let sent: Result<Result<(), _>, _> =
            tokio::time::timeout(store.timeout, pipe.query_async::<()>(&mut conn)).await;
        metrics.commands.inc_by(commands);
        match sent {
            Ok(Ok(())) => paused_until = None,
            Ok(Err(e)) => {
                fail(&metrics, &e.to_string(), &mut paused_until, now);
                for t in touched {
                    if broken.insert(t.clone()) {
                        unmarked.push(t);
                    }
                }
            }
            Err(_) => {
                fail(&metrics, "timed out", &mut paused_until, now);
                for t in touched {
                    if broken.insert(t.clone()) {
                        unmarked.push(t);
                    }
                }
            }
        }
        for f in flushed {
            let _ = f.send(());
        }
        // Ended streams need no broken mark kept beyond their last write.
        broken.retain(|t| streams.contains_key(t) || unmarked.contains(t));
    }
}

fn fail(metrics: &WriterMetrics, why: &str, paused_until: &mut Option<Instant>, now: Instant) {
    metrics.errors.inc();
    tracing::warn!(
        error = why,
        "resume buffer: redis write failed; streams written meanwhile are marked incomplete"
    );
    *paused_until = Some(now + Duration::from_secs(1));
}

/// Keeps `<prefix>:rs:live:<instance>` present while this process runs.
async fn beacon(store: Store) {
    let mut conn = store.conn.clone();
    let key = store.live_key(&store.instance);
    loop {
        let cmd = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("PX")
            .arg(LIVE_TTL_MS)
            .clone();
        if let Err(e) = store.run::<()>(&mut conn, &cmd).await {
            tracing::debug!(error = %e, "resume liveness beacon failed");
        }
        tokio::time::sleep(LIVE_EVERY).await;
    }
}

/// A stream's record from the fields of its hash (`HGETALL`); `None` without an owner
/// or a known wire.
#[doc(hidden)]
pub fn meta_from_fields(fields: &HashMap<String, Vec<u8>>) -> Option<Meta> {
    let text = |k: &str| {
        fields
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let (Some(owner), Some(wire)) = (
        text("owner"),
        text("wire").and_then(|w| Wire::from_name(&w)),
    ) else {
        return None;
    };
    Some(Meta {
        owner: Owner::from_stored(owner),
        wire,
        head: fields
            .get("head")
            .map(|h| decode_head(h))
            .unwrap_or_default(),
        instance: text("instance").unwrap_or_default(),
    })
}

/// Entries of an `XRANGE`/`XREVRANGE`/`XREAD` reply (RESP2 or RESP3), in order.
#[doc(hidden)]
pub fn parse_entries(v: &Value) -> Vec<Entry> {
    let mut out = Vec::new();
    collect(v, &mut out);
    out
}

fn collect(v: &Value, out: &mut Vec<Entry>) {
    match v {
        // An entry: [id, [field, value, ...]].
        Value::Array(items) if is_entry(items) => {
            if let Some(e) = entry(items) {
                out.push(e);
            }
        }
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| collect(i, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(_, v)| collect(v, out)),
        _ => {}
    }
}

fn is_entry(items: &[Value]) -> bool {
    matches!(
        items,
        [Value::BulkString(id), Value::Array(_) | Value::Map(_)] if id.ends_with(b"-0")
    )
}

fn entry(items: &[Value]) -> Option<Entry> {
    let [Value::BulkString(id), fields] = items else {
        return None;
    };
    let id = std::str::from_utf8(id)
        .ok()?
        .strip_suffix("-0")?
        .parse()
        .ok()?;
    let pairs: Vec<(&Value, &Value)> = match fields {
        Value::Array(f) => f
            .chunks(2)
            .filter_map(|c| Some((c.first()?, c.get(1)?)))
            .collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    for (k, v) in pairs {
        let (Value::BulkString(k), Value::BulkString(v)) = (k, v) else {
            continue;
        };
        match &k[..] {
            b"d" => return Some(Entry::Message(id, Bytes::copy_from_slice(v))),
            b"e" => return Some(Entry::End(id, Bytes::copy_from_slice(v))),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn xread_and_xrange_replies_parse_to_entries_in_order() {
        let entries = Value::Array(vec![
            Value::Array(vec![
                bulk(b"1-0"),
                Value::Array(vec![bulk(b"d"), bulk(b"one")]),
            ]),
            Value::Array(vec![
                bulk(b"2-0"),
                Value::Array(vec![bulk(b"e"), bulk(b"end")]),
            ]),
        ]);
        let want = vec![
            Entry::Message(1, Bytes::from_static(b"one")),
            Entry::End(2, Bytes::from_static(b"end")),
        ];
        assert_eq!(parse_entries(&entries), want);
        let xread = Value::Array(vec![Value::Array(vec![bulk(b"k"), entries.clone()])]);
        assert_eq!(parse_entries(&xread), want);
        let resp3 = Value::Map(vec![(bulk(b"k"), entries)]);
        assert_eq!(parse_entries(&resp3), want);
        assert!(parse_entries(&Value::Nil).is_empty());
    }
}
