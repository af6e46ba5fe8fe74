//! Private keys at rest, on SQLite and on PostgreSQL (see `tests/src/postgres.rs`):
//! certificates uploaded through the API are sealed in the database but plain in
//! the projection, the feed and after a restart; key rotation, tampering and
//! logs written before sealing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use base64::Engine as _;
use common::{ADMIN, Client, PROXY, cert, expect, options};
use serde_json::{Value, json};
use support::{RawSql, unique};
use tollgate_control::store::{AnyBackend, AnyStore, EventStore, Keyring, NewEvent, StoreError};
use tollgate_control::{ControlOptions, Running};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A database and a folder (the SQLite file, the sealing key file).
struct Db {
    dir: tempfile::TempDir,
    pg: Option<support::pg::TestDb>,
}

impl Db {
    async fn new(backend: Backend) -> Db {
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(support::pg::test_db().await),
        };
        Db {
            dir: tempfile::tempdir().unwrap(),
            pg,
        }
    }

    fn url(&self) -> String {
        match &self.pg {
            Some(pg) => pg.url.clone(),
            None => common::db_url(self.dir.path()),
        }
    }

    fn options(&self) -> ControlOptions {
        ControlOptions {
            store: self.url(),
            ..options(self.dir.path())
        }
    }

    /// A store handle with `keys` (none: no keyring).
    async fn store(&self, keys: Option<&str>) -> AnyStore {
        let store = AnyStore::open(&self.url()).await.unwrap();
        match keys {
            Some(k) => store.with_keyring(Keyring::parse(k).unwrap()),
            None => store,
        }
    }
}

/// Every row of `column` in `table`, as text, straight from the database.
async fn raw_texts(store: &AnyStore, table: &str, column: &str) -> Vec<String> {
    let sql = format!("SELECT CAST({column} AS TEXT) FROM {table}");
    match store.inner() {
        AnyBackend::Sqlite(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(s.pool())
            .await
            .unwrap(),
        AnyBackend::Postgres(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(s.pool())
            .await
            .unwrap(),
    }
}

/// Every string value of a `key_pem` field in `v`.
fn key_pems(v: &Value) -> Vec<String> {
    match v {
        Value::Object(m) => m
            .iter()
            .flat_map(|(k, v)| match (k.as_str(), v) {
                ("key_pem", Value::String(s)) => vec![s.clone()],
                _ => key_pems(v),
            })
            .collect(),
        Value::Array(a) => a.iter().flat_map(key_pems).collect(),
        _ => Vec::new(),
    }
}

fn admin(r: &Running) -> Client {
    Client {
        addr: r.http_addr,
        token: Some(ADMIN.into()),
    }
}

fn proxy(r: &Running) -> Client {
    Client {
        addr: r.http_addr,
        token: Some(PROXY.into()),
    }
}

async fn stop(r: Running) {
    r.shutdown();
    r.wait().await.unwrap();
}

/// Uploads (single command), rotates, and uploads in a batch; checks what the
/// database holds and what the service shows, before and after a restart.
async fn certificates_sealed_at_rest(backend: Backend) {
    let db = Db::new(backend).await;
    let running = tollgate_control::start(db.options()).await.unwrap();
    let c = admin(&running);
    let (cert1, key1) = cert(&["shop.example"]);
    expect(
        c.post(
            "/api/v1/certificates",
            json!({ "id": "shop", "cert_pem": cert1, "key_pem": key1 }),
        )
        .await,
        201,
    );
    let (cert2, key2) = cert(&["shop.example"]);
    expect(
        c.put(
            "/api/v1/certificates/shop",
            json!({ "cert_pem": cert2, "key_pem": key2 }),
        )
        .await,
        200,
    );
    let (cert3, key3) = cert(&["batch.example"]);
    let batch = expect(
        c.post(
            "/api/v1/batch",
            json!({ "commands": [{ "op": "upload_certificate",
                "certificate": { "id": "batched", "cert_pem": cert3, "key_pem": key3 } }] }),
        )
        .await,
        200,
    );
    let last = batch["event_id"].as_i64().unwrap();
    assert!(
        running
            .projection()
            .wait_applied(last, std::time::Duration::from_secs(10))
            .await
    );
    for k in [&key1, &key2, &key3] {
        assert!(k.contains("PRIVATE KEY"));
    }

    // The service shows plaintext: projection, snapshot, events feed.
    let check_plain = |running: &Running| {
        let view = running.projection().view();
        assert_eq!(view.config.certificates["shop"].key_pem, key2);
        assert_eq!(view.config.certificates["batched"].key_pem, key3);
    };
    check_plain(&running);
    let snapshot = expect(proxy(&running).get("/v1/snapshot").await, 200);
    let pems = key_pems(&snapshot);
    assert!(pems.contains(&key2) && pems.contains(&key3), "{pems:?}");
    let events = expect(proxy(&running).get("/v1/events?after=0").await, 200);
    let pems = key_pems(&events);
    assert_eq!(pems, [key1.clone(), key2.clone(), key3.clone()]);
    stop(running).await;

    // The database holds none of them.
    let raw = db.store(None).await;
    let payloads = raw_texts(&raw, "events", "payload").await;
    assert!(payloads.len() >= 3);
    let sealed = payloads
        .iter()
        .filter(|p| p.contains("tg-sealed:v1:local-"))
        .count();
    assert_eq!(sealed, 3, "{payloads:#?}");
    for text in payloads
        .iter()
        .chain(&raw_texts(&raw, "projection_checkpoints", "name").await)
        .chain(&raw_texts(&raw, "projection_checkpoints", "last_applied_event_id").await)
    {
        assert!(
            !text.contains("PRIVATE KEY"),
            "plaintext key at rest: {text}"
        );
    }
    // A handle without the keys cannot read them, and says which key it needs.
    let err = raw.read_after(0, 100).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Database(m) if m.contains("sealed with key `local-")),
        "{err}"
    );
    raw.close().await;
    if matches!(backend, Backend::Sqlite) {
        for entry in std::fs::read_dir(db.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == "sealing.key" {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
                "plaintext key in {}",
                path.display()
            );
        }
    }

    // A restart replays the sealed log into plaintext.
    let running = tollgate_control::start(db.options()).await.unwrap();
    check_plain(&running);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_sealed_at_rest_sqlite() {
    certificates_sealed_at_rest(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_sealed_at_rest_postgres() {
    certificates_sealed_at_rest(Backend::Postgres).await;
}

fn key_entry(id: &str, byte: u8) -> String {
    format!(
        "{id}:{}",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

fn uploaded(key_pem: &str) -> NewEvent {
    NewEvent::new(
        "certificate_uploaded",
        json!({ "type": "certificate_uploaded",
                "cert": { "id": "c", "cert_pem": "CERT", "key_pem": key_pem, "names": ["a.example"] } }),
    )
}

fn rotated(key_pem: &str) -> NewEvent {
    NewEvent::new(
        "certificate_rotated",
        json!({ "type": "certificate_rotated", "cert_id": "c", "cert_pem": "CERT2", "key_pem": key_pem }),
    )
}

/// The payload column of one aggregate's events, raw.
async fn raw_payloads(store: &AnyStore, aggregate_id: &str) -> Vec<String> {
    let sql = format!(
        "SELECT CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{aggregate_id}' \
         ORDER BY aggregate_seq"
    );
    match store.inner() {
        AnyBackend::Sqlite(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(s.pool())
            .await
            .unwrap(),
        AnyBackend::Postgres(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(s.pool())
            .await
            .unwrap(),
    }
}

/// Keyring [A] seals; [B, A] reads A's events and seals with B; [B] alone
/// names A in its error.
async fn rotation(backend: Backend) {
    let db = Db::new(backend).await;
    let (a, b) = (key_entry("a", 1), key_entry("b", 2));
    let agg = unique("cert");
    let with_a = db.store(Some(&a)).await;
    let stored = with_a
        .append("certificate", &agg, 0, "t", vec![uploaded("KEY-A")])
        .await
        .unwrap();
    // The caller gets its plaintext back.
    assert_eq!(stored[0].payload["cert"]["key_pem"], "KEY-A");
    assert!(raw_payloads(&with_a, &agg).await[0].contains("tg-sealed:v1:a:"));

    let with_ba = db.store(Some(&format!("{b},{a}"))).await;
    let read = with_ba.read_aggregate("certificate", &agg).await.unwrap();
    assert_eq!(read[0].payload["cert"]["key_pem"], "KEY-A");
    with_ba
        .append("certificate", &agg, 1, "t", vec![rotated("KEY-B")])
        .await
        .unwrap();
    let raw = raw_payloads(&with_ba, &agg).await;
    assert!(raw[1].contains("tg-sealed:v1:b:") && !raw[1].contains("KEY-B"));
    let read = with_ba.read_after(0, 1000).await.unwrap();
    let mine: Vec<_> = read.iter().filter(|e| e.aggregate_id == agg).collect();
    assert_eq!(mine[1].payload["key_pem"], "KEY-B");

    let with_b = db.store(Some(&b)).await;
    let err = with_b
        .read_aggregate("certificate", &agg)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("key `a`") && text.contains("not in the keyring"),
        "{text}"
    );
    for s in [with_a, with_ba, with_b] {
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_sqlite() {
    rotation(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_postgres() {
    rotation(Backend::Postgres).await;
}

/// A row inserted behind the store's back with a flipped ciphertext byte fails
/// authentication, naming the key; a plaintext (pre-sealing) row reads as is
/// and the next write of that key is sealed.
async fn tampered_and_legacy(backend: Backend) {
    let db = Db::new(backend).await;
    let keys = key_entry("k1", 7);
    let store = db.store(Some(&keys)).await;

    // Legacy: written before sealing (a store without a keyring).
    let legacy = unique("legacy");
    let plain = db.store(None).await;
    plain
        .append("certificate", &legacy, 0, "t", vec![uploaded("OLD-PLAIN")])
        .await
        .unwrap();
    assert!(raw_payloads(&store, &legacy).await[0].contains("OLD-PLAIN"));
    let read = store.read_aggregate("certificate", &legacy).await.unwrap();
    assert_eq!(read[0].payload["cert"]["key_pem"], "OLD-PLAIN");
    store
        .append("certificate", &legacy, 1, "t", vec![rotated("NEW")])
        .await
        .unwrap();
    let raw = raw_payloads(&store, &legacy).await;
    assert!(raw[0].contains("OLD-PLAIN"), "the log is append-only");
    assert!(raw[1].contains("tg-sealed:v1:k1:") && !raw[1].contains("NEW"));
    plain.close().await;

    // Tampered: copy a sealed payload with one ciphertext byte flipped.
    let agg = unique("tamper");
    store
        .append("certificate", &agg, 0, "t", vec![uploaded("SECRET")])
        .await
        .unwrap();
    let payload: Value = serde_json::from_str(&raw_payloads(&store, &agg).await[0]).unwrap();
    let sealed = payload["cert"]["key_pem"].as_str().unwrap();
    let (head, b64) = sealed.rsplit_once(':').unwrap();
    let engine = base64::engine::general_purpose::STANDARD;
    let mut blob = engine.decode(b64).unwrap();
    blob[20] ^= 0x40;
    let mut forged = payload.clone();
    forged["cert"]["key_pem"] = json!(format!("{head}:{}", engine.encode(blob)));
    let literal = forged.to_string().replace('\'', "''");
    let json_type = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => "::jsonb",
    };
    store
        .raw_execute(format!(
            "INSERT INTO events (occurred_at, aggregate_type, aggregate_id, aggregate_seq, \
             event_type, actor_id, payload) VALUES (0, 'certificate', '{agg}', 2, \
             'certificate_uploaded', 'mallory', '{literal}'{json_type})"
        ))
        .await
        .unwrap();
    let err = store.read_aggregate("certificate", &agg).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("fails authentication") && text.contains("`k1`"),
        "{text}"
    );
    let err = store.read_after(0, 1000).await.unwrap_err();
    assert!(err.to_string().contains("fails authentication"), "{err}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampered_and_legacy_sqlite() {
    tampered_and_legacy(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampered_and_legacy_postgres() {
    tampered_and_legacy(Backend::Postgres).await;
}

/// PostgreSQL without `TOLLGATE_SEALING_KEYS` or `--sealing-key-file` does not
/// start (each replica would invent its own key).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_without_keys_refuses_to_start() {
    if std::env::var_os(tollgate_control::store::SEALING_KEYS_ENV).is_some() {
        return;
    }
    let db = Db::new(Backend::Postgres).await;
    let opts = ControlOptions {
        sealing_key_file: None,
        ..db.options()
    };
    let err = tollgate_control::start(opts).await.err().unwrap();
    assert!(err.to_string().contains("TOLLGATE_SEALING_KEYS"), "{err}");
}
