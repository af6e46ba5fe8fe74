//! Usage records end to end through the HTTP API: `POST /v1/usage` batches from
//! two "proxies", totals from `GET /api/v1/apps/{app}/usage`. Every test runs on
//! SQLite and on PostgreSQL (see `tests/src/postgres.rs` for where the server comes from).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use common::{ADMIN, Answer, Client, PROXY, expect, options};
use serde_json::{Value, json};
// Names no other test (or earlier run on a shared database) uses; valid app ids.
use support::unique;
use tollgate_control::{ControlOptions, Running};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Keeps the database of a service alive across restarts.
enum Db {
    Sqlite(tempfile::TempDir),
    /// The database and a folder for the sealing key file.
    Postgres(support::pg::TestDb, tempfile::TempDir),
}

struct Service {
    running: Running,
    db: Db,
}

impl Service {
    async fn start(backend: Backend) -> Service {
        let db = match backend {
            Backend::Sqlite => Db::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres => {
                Db::Postgres(support::pg::test_db().await, tempfile::tempdir().unwrap())
            }
        };
        let running = tollgate_control::start(Self::options(&db)).await.unwrap();
        Service { running, db }
    }

    fn options(db: &Db) -> ControlOptions {
        match db {
            Db::Sqlite(dir) => options(dir.path()),
            Db::Postgres(pg, keys) => ControlOptions {
                store: pg.url.clone(),
                ..options(keys.path())
            },
        }
    }

    /// Stops the service and starts a new one on the same database.
    async fn restart(self) -> Service {
        self.running.shutdown();
        self.running.wait().await.unwrap();
        let running = tollgate_control::start(Self::options(&self.db))
            .await
            .unwrap();
        Service {
            running,
            db: self.db,
        }
    }

    fn client(&self, token: Option<&str>) -> Client {
        Client {
            addr: self.running.http_addr,
            token: token.map(str::to_string),
        }
    }

    fn admin(&self) -> Client {
        self.client(Some(ADMIN))
    }

    fn proxy(&self) -> Client {
        self.client(Some(PROXY))
    }

    async fn stop(self) {
        self.running.shutdown();
        self.running.wait().await.unwrap();
    }
}

/// A batch body; each record is `(app, period, [requests, bytes_in, bytes_out, units])`.
fn batch(node: &str, seq: i64, records: &[(&str, &str, [i64; 4])]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|(app, period, [r, i, o, u])| {
            json!({ "app_id": app, "period": period, "requests": r, "bytes_in": i,
                    "bytes_out": o, "units": u })
        })
        .collect();
    json!({ "node_id": node, "batch_seq": seq, "records": records })
}

async fn send(c: &Client, body: &Value) -> Answer {
    c.post("/v1/usage", body.clone()).await
}

/// `GET /api/v1/apps/{app}/usage?{query}` as admin, expecting 200.
async fn usage(svc: &Service, app: &str, query: &str) -> Value {
    expect(
        svc.admin()
            .get(&format!("/api/v1/apps/{app}/usage?{query}"))
            .await,
        200,
    )
}

/// The four totals of an answer.
fn totals(answer: &Value) -> [i64; 4] {
    let t = &answer["totals"];
    ["requests", "bytes_in", "bytes_out", "units"].map(|k| t[k].as_i64().unwrap())
}

async fn batches_sum_across_nodes(backend: Backend) {
    let svc = Service::start(backend).await;
    let p = svc.proxy();
    let (acme, globex) = (unique("acme"), unique("globex"));
    let (a, b) = (unique("node-a"), unique("node-b"));
    let first = batch(
        &a,
        1,
        &[
            (&acme, "2026-11-23", [10, 100, 2000, 5]),
            (&globex, "2026-11-23", [1, 1, 1, 1]),
        ],
    );
    let stored = expect(send(&p, &first).await, 200);
    assert_eq!(stored, json!({ "duplicate": false, "records": 2 }));
    expect(
        send(&p, &batch(&a, 2, &[(&acme, "2026-11-24", [3, 30, 300, 0])])).await,
        200,
    );
    // Another node may use the same batch_seq: batches are named per node.
    expect(
        send(&p, &batch(&b, 1, &[(&acme, "2026-11-23", [7, 70, 700, 2])])).await,
        200,
    );

    let day = usage(&svc, &acme, "period=2026-11-23").await;
    assert_eq!(totals(&day), [17, 170, 2700, 7]);
    assert_eq!(day["from"], "2026-11-23");
    assert_eq!(day["to"], "2026-11-23");
    assert_eq!(day["app"], acme.as_str());

    let range = usage(&svc, &acme, "from=2026-11-01&to=2026-11-30").await;
    assert_eq!(totals(&range), [20, 200, 3000, 7]);
    assert_eq!(
        range["periods"],
        json!([
            { "period": "2026-11-23", "requests": 17, "bytes_in": 170, "bytes_out": 2700, "units": 7 },
            { "period": "2026-11-24", "requests": 3, "bytes_in": 30, "bytes_out": 300, "units": 0 },
        ])
    );
    assert_eq!(
        totals(&usage(&svc, &globex, "period=2026-11-23").await),
        [1, 1, 1, 1]
    );
    // No usage is zero, not an error.
    let none = usage(&svc, &unique("idle"), "period=2026-11-23").await;
    assert_eq!(totals(&none), [0, 0, 0, 0]);
    assert_eq!(none["periods"], json!([]));
    svc.stop().await;
}

async fn replays_are_stored_once(backend: Backend) {
    let svc = Service::start(backend).await;
    let p = svc.proxy();
    let app = unique("acme");
    let node = unique("node");
    let body = batch(&node, 17, &[(&app, "2026-11-23", [10, 100, 2000, 5])]);
    expect(send(&p, &body).await, 200);
    let again = expect(send(&p, &body).await, 200);
    assert_eq!(again, json!({ "duplicate": true }));
    // The same records in another order are the same batch.
    let two = batch(
        &node,
        18,
        &[
            (&app, "2026-11-23", [1, 0, 0, 0]),
            (&app, "2026-11-24", [2, 0, 0, 0]),
        ],
    );
    expect(send(&p, &two).await, 200);
    let mut reordered = two.clone();
    reordered["records"].as_array_mut().unwrap().reverse();
    assert_eq!(
        expect(send(&p, &reordered).await, 200),
        json!({ "duplicate": true })
    );

    // Other records under a used (node_id, batch_seq): refused, nothing changes.
    let other = batch(&node, 17, &[(&app, "2026-11-23", [999, 0, 0, 0])]);
    let refused = expect(send(&p, &other).await, 409);
    assert_eq!(refused["error"]["code"], "batch_conflict");

    // Concurrent replays of a new batch: exactly one stores it.
    let racing = batch(&node, 19, &[(&app, "2026-11-23", [100, 0, 0, 0])]);
    let answers = futures_join_all((0..8).map(|_| {
        let p = p.clone();
        let racing = racing.clone();
        async move { expect(send(&p, &racing).await, 200) }
    }))
    .await;
    let stored = answers
        .iter()
        .filter(|a| a["duplicate"] == json!(false))
        .count();
    assert_eq!(stored, 1, "{answers:?}");

    let expected = [10 + 1 + 100, 100, 2000, 5];
    assert_eq!(
        totals(&usage(&svc, &app, "period=2026-11-23").await),
        expected
    );

    // Idempotency survives a restart of the service.
    let svc = svc.restart().await;
    let p = svc.proxy();
    assert_eq!(
        expect(send(&p, &body).await, 200),
        json!({ "duplicate": true })
    );
    assert_eq!(
        totals(&usage(&svc, &app, "period=2026-11-23").await),
        expected
    );
    svc.stop().await;
}

/// Runs futures concurrently on the runtime and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn malformed_batches_are_refused(backend: Backend) {
    let svc = Service::start(backend).await;
    let p = svc.proxy();
    let app = unique("acme");
    let node = unique("node");
    let ok = [(app.as_str(), "2026-11-23", [1, 1, 1, 1])];

    let not_json = p
        .send_raw("POST", "/v1/usage", Some("{\"node_id\":"), &[])
        .await;
    assert_eq!(expect(not_json, 400)["error"]["code"], "bad_request");
    let missing = json!({ "node_id": node, "batch_seq": 1 });
    expect(send(&p, &missing).await, 400);
    let mut no_units = batch(&node, 1, &ok);
    no_units["records"][0]
        .as_object_mut()
        .unwrap()
        .remove("units");
    expect(send(&p, &no_units).await, 400);

    // Each case: the body and the `at` of its first problem.
    let mut cases = vec![
        (
            batch(&node, 1, &[(&app, "2026-11-23", [1, -5, 1, 1])]),
            "records[0].bytes_in",
        ),
        (
            batch(&node, 1, &[(&app, "2026-02-30", [1, 1, 1, 1])]),
            "records[0].period",
        ),
        (
            batch(&node, 1, &[(&app, "23.11.2026", [1, 1, 1, 1])]),
            "records[0].period",
        ),
        (
            batch(&node, 1, &[("Not An App", "2026-11-23", [1, 1, 1, 1])]),
            "records[0].app_id",
        ),
        (batch(&node, -1, &ok), "batch_seq"),
        (batch("", 1, &ok), "node_id"),
        (batch(&node, 1, &[]), "records"),
        (
            batch(
                &node,
                1,
                &[
                    (&app, "2026-11-23", [1, 1, 1, 1]),
                    (&app, "2026-11-23", [2, 2, 2, 2]),
                ],
            ),
            "records[1]",
        ),
    ];
    let too_many: Vec<(String, &str, [i64; 4])> = (0..=5000)
        .map(|i| (format!("a{i}"), "2026-11-23", [1, 1, 1, 1]))
        .collect();
    let too_many: Vec<(&str, &str, [i64; 4])> = too_many
        .iter()
        .map(|(a, p, c)| (a.as_str(), *p, *c))
        .collect();
    cases.push((batch(&node, 1, &too_many), "records"));
    for (body, at) in cases {
        let refused = expect(send(&p, &body).await, 422);
        assert_eq!(refused["error"]["code"], "validation_failed", "{refused}");
        assert_eq!(refused["error"]["problems"][0]["at"], at, "{refused}");
    }

    // Nothing was stored: no totals, and the batch's name is still free.
    assert_eq!(
        totals(&usage(&svc, &app, "period=2026-11-23").await),
        [0, 0, 0, 0]
    );
    assert_eq!(
        expect(send(&p, &batch(&node, 1, &ok)).await, 200),
        json!({ "duplicate": false, "records": 1 })
    );

    // Queries are checked too.
    let a = svc.admin();
    for query in [
        "",
        "from=2026-11-01",
        "period=2026-11-31",
        "from=2026-11-02&to=2026-11-01",
        "from=2025-01-01&to=2026-01-02",
        "period=2026-11-23&from=2026-11-23&to=2026-11-23",
    ] {
        let answer = a.get(&format!("/api/v1/apps/{app}/usage?{query}")).await;
        expect(answer, 400);
    }
    expect(
        a.get("/api/v1/apps/Not%20An%20App/usage?period=2026-11-23")
            .await,
        400,
    );
    svc.stop().await;
}

async fn auth_is_required(backend: Backend) {
    let svc = Service::start(backend).await;
    let app = unique("acme");
    let node = unique("node");
    let body = batch(&node, 1, &[(&app, "2026-11-23", [1, 2, 3, 4])]);
    for token in [None, Some("wrong-token-0123456789")] {
        let refused = send(&svc.client(token), &body).await;
        assert_eq!(refused.status, 401, "{:?}", refused.body);
        assert!(
            refused
                .headers
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{}",
            refused.headers
        );
    }
    assert_eq!(
        totals(&usage(&svc, &app, "period=2026-11-23").await),
        [0, 0, 0, 0]
    );
    // The proxy token (or the admin token) may report usage...
    expect(send(&svc.proxy(), &body).await, 200);
    expect(
        send(
            &svc.admin(),
            &batch(&node, 2, &[(&app, "2026-11-23", [1, 0, 0, 0])]),
        )
        .await,
        200,
    );
    // ...but reading it takes the admin token.
    let path = format!("/api/v1/apps/{app}/usage?period=2026-11-23");
    for token in [None, Some(PROXY)] {
        assert_eq!(svc.client(token).get(&path).await.status, 401);
    }
    assert_eq!(
        totals(&usage(&svc, &app, "period=2026-11-23").await),
        [2, 2, 3, 4]
    );
    svc.stop().await;
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_backends!(
    batches_sum_across_nodes,
    replays_are_stored_once,
    malformed_batches_are_refused,
    auth_is_required,
);
