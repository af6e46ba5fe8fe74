//! `POST /api/v1/batch` end to end, on SQLite and on PostgreSQL: items refer to
//! what earlier items created, a failing item fails the batch with a 422 naming
//! it and nothing written, the size caps, concurrent batches in disjoint
//! contiguous id ranges, and the feed carrying a batch's events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use tollgate_control::commands::{MAX_BATCH_BYTES, MAX_BATCH_ITEMS};
use tollgate_control::store::{EventStore, StoredEvent};
use tollgate_control::{ControlOptions, Running};

/// A service on a fresh database of either backend.
struct Service {
    running: Running,
    _tmp: tempfile::TempDir,
    _pg: Option<support::pg::TestDb>,
}

impl Service {
    async fn sqlite() -> Service {
        let tmp = tempfile::tempdir().unwrap();
        let running = tollgate_control::start(options(tmp.path())).await.unwrap();
        Service {
            running,
            _tmp: tmp,
            _pg: None,
        }
    }

    async fn postgres() -> Service {
        let db = support::pg::test_db().await;
        let tmp = tempfile::tempdir().unwrap();
        let opts = ControlOptions {
            store: db.url.clone(),
            ..options(tmp.path())
        };
        let running = tollgate_control::start(opts).await.unwrap();
        Service {
            running,
            _tmp: tmp,
            _pg: Some(db),
        }
    }

    fn http(&self) -> Client {
        Client {
            addr: self.running.http_addr,
            token: Some(ADMIN.into()),
        }
    }

    async fn events_after(&self, after: i64) -> Vec<StoredEvent> {
        self.running
            .commands
            .store()
            .read_after(after, 100_000)
            .await
            .unwrap()
    }

    async fn last_event_id(&self) -> i64 {
        self.running.commands.store().last_event_id().await.unwrap()
    }

    async fn stop(self) {
        self.running.shutdown();
        self.running.wait().await.unwrap();
    }
}

async fn batch(c: &Client, commands: Value) -> Answer {
    c.post("/api/v1/batch", json!({ "commands": commands }))
        .await
}

/// Items use what earlier items created; ids are one contiguous range.
async fn cross_references(s: &Service) {
    let c = s.http();
    let before = s.last_event_id().await;
    let body = expect(
        batch(
            &c,
            json!([
                { "op": "create_app", "id": "acme" },
                { "op": "configure_upstream", "app": "acme", "name": "default",
                  "cluster": { "protocol": "h2c" } },
                { "op": "add_instance", "app": "acme", "upstream": "default",
                  "instance": { "address": "127.0.0.1:9000" } },
                { "op": "bind_hostname", "hostname": "Acme.Example", "app": "acme" },
                { "op": "create_route", "route": { "id": "r-acme", "hostname": "api.acme.example",
                  "path_prefix": "/v1", "app": "acme" } },
                { "op": "create_key", "app": "acme", "key": { "key_id": "k-acme" } },
                { "op": "create_key", "app": "acme" },
                { "op": "set_limits", "app": "acme", "limits": {} },
                { "op": "suspend_app", "app": "acme", "if_match": 4 },
                { "op": "resume_app", "app": "acme" }
            ]),
        )
        .await,
        200,
    );
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 10);
    assert_eq!(items[0]["status"], 201);
    assert_eq!(items[0]["app"]["id"], "acme");
    assert_eq!(items[3]["hostname"]["hostname"], "acme.example");
    assert_eq!(items[4]["route"]["id"], "r-acme");
    assert_eq!(items[5]["key"]["key_id"], "k-acme");
    assert!(
        items[5]["key"]["key"]
            .as_str()
            .unwrap()
            .starts_with("sk_live_acme_")
    );
    assert!(
        items[6]["key"]["key_id"]
            .as_str()
            .unwrap()
            .starts_with("k_")
    );
    // The app aggregate's versions go on across items: create, upstream,
    // instance, limits; the suspend was conditional on version 4.
    assert_eq!(items[8]["version"], 5);
    assert_eq!(items[9]["app"]["status"], "active");

    let [first, last] = [
        body["event_ids"][0].as_i64().unwrap(),
        body["event_ids"][1].as_i64().unwrap(),
    ];
    assert_eq!(body["event_id"], last);
    assert!(first > before);
    let events = s.events_after(before).await;
    let ids: Vec<i64> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids,
        (first..=last).collect::<Vec<_>>(),
        "one contiguous range"
    );
    assert_eq!(events.len(), 10, "one event per item");
    let mut next = first;
    for item in items {
        let range = item["event_ids"].as_array().unwrap();
        assert_eq!(range[0], next);
        next = range[1].as_i64().unwrap() + 1;
    }
    assert!(events.iter().all(|e| e.actor_id == "admin"));

    // Read-your-writes: the projection shows the batch.
    let app = expect(c.get("/api/v1/apps/acme").await, 200);
    assert_eq!(app["app"]["hostnames"], json!(["acme.example"]));
    assert_eq!(app["app"]["api_keys"].as_array().unwrap().len(), 2);
    assert_eq!(app["app"]["routes"], json!(["r-acme"]));

    // A batch of no-ops appends nothing.
    let noop = expect(
        batch(&c, json!([{ "op": "resume_app", "app": "acme" }])).await,
        200,
    );
    assert_eq!(noop["changed"], false);
    assert_eq!(noop["event_ids"], Value::Null);
    assert_eq!(noop["event_id"], last);
    assert_eq!(s.last_event_id().await, last);
}

/// Item 3 of 5 fails: 422 naming it, nothing written, cursor unchanged.
async fn atomic_failure(s: &Service) {
    let c = s.http();
    let before = s.last_event_id().await;
    let cursor = expect(c.get("/healthz").await, 200)["event_id"].clone();
    let commands = |third: Value| {
        json!([
            { "op": "create_app", "id": "beta" },
            { "op": "bind_hostname", "hostname": "beta.example", "app": "beta" },
            { "op": "create_key", "app": "beta" },
            third,
            { "op": "create_app", "id": "gamma" }
        ])
    };
    // Structural: the app does not exist (what the single endpoint answers 404).
    let e = expect(
        batch(
            &c,
            commands(json!({ "op": "bind_hostname", "hostname": "x.example", "app": "ghost" })),
        )
        .await,
        422,
    );
    assert_eq!(e["error"]["code"], "batch_item_failed");
    assert_eq!(e["error"]["index"], 3);
    assert_eq!(e["error"]["op"], "bind_hostname");
    assert_eq!(e["error"]["item"]["status"], 404);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("ghost"),
        "{e}"
    );

    // Validation of the result: blamed on the item that broke it.
    let e = expect(
        batch(
            &c,
            commands(
                json!({ "op": "create_route", "route": { "hostname": "beta.example",
                              "path_prefix": "nope", "app": "beta" } }),
            ),
        )
        .await,
        422,
    );
    assert_eq!(e["error"]["index"], 3, "{e}");
    assert_eq!(e["error"]["item"]["status"], 422);
    assert!(
        e["error"]["item"]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["at"].as_str().unwrap().ends_with(".path_prefix")),
        "{e}"
    );

    // Malformed item: named too.
    let e = expect(
        batch(
            &c,
            commands(json!({ "op": "launch_rocket", "app": "beta" })),
        )
        .await,
        422,
    );
    assert_eq!(e["error"]["index"], 3);
    assert_eq!(e["error"]["item"]["status"], 400);

    // A conflict with an earlier item of the same batch.
    let e = expect(
        batch(&c, commands(json!({ "op": "create_app", "id": "beta" }))).await,
        422,
    );
    assert_eq!(e["error"]["index"], 3);
    assert_eq!(e["error"]["item"]["status"], 409);

    assert_eq!(s.last_event_id().await, before, "nothing written");
    assert_eq!(expect(c.get("/healthz").await, 200)["event_id"], cursor);
    expect(c.get("/api/v1/apps/beta").await, 404);
}

/// POSTs `body` as a batch, tolerating a server that answers before reading it
/// all; the raw answer.
async fn post_unread(c: &Client, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/batch HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         authorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(body.as_bytes()).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// More than the cap of commands or bytes is a 413; an empty batch a 400.
async fn size_caps(s: &Service) {
    let c = s.http();
    let before = s.last_event_id().await;
    let many: Vec<Value> = (0..=MAX_BATCH_ITEMS)
        .map(|i| json!({ "op": "create_app", "id": format!("cap{i}") }))
        .collect();
    let e = expect(batch(&c, Value::Array(many)).await, 413);
    assert_eq!(e["error"]["code"], "payload_too_large");
    let big = format!(
        "{{\"commands\": [{{\"op\": \"create_app\", \"id\": \"{}\"}}]}}",
        "x".repeat(MAX_BATCH_BYTES)
    );
    let answer = post_unread(&c, &big).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    expect(batch(&c, json!([])).await, 400);
    assert_eq!(s.last_event_id().await, before);
    // Exactly the cap is fine.
    let full: Vec<Value> = (0..MAX_BATCH_ITEMS)
        .map(|i| json!({ "op": "create_app", "id": format!("cap{i}") }))
        .collect();
    let body = expect(batch(&c, Value::Array(full)).await, 200);
    let range = &body["event_ids"];
    assert_eq!(
        range[1].as_i64().unwrap() - range[0].as_i64().unwrap() + 1,
        MAX_BATCH_ITEMS as i64
    );
}

/// Concurrent batches each get one contiguous range holding only their events.
async fn concurrent_batches(s: &Service) {
    let c = s.http();
    let answers = futures_util::future::join_all((0..4).map(|b| {
        let c = c.clone();
        async move {
            let commands: Vec<Value> = (0..40)
                .flat_map(|i| {
                    [
                        json!({ "op": "create_app", "id": format!("cb{b}-{i}") }),
                        json!({ "op": "bind_hostname", "hostname": format!("cb{b}-{i}.example"),
                                "app": format!("cb{b}-{i}") }),
                    ]
                })
                .collect();
            (b, expect(batch(&c, Value::Array(commands)).await, 200))
        }
    }))
    .await;
    let all = s.events_after(0).await;
    let mut seen = BTreeSet::new();
    for (b, body) in answers {
        let first = body["event_ids"][0].as_i64().unwrap();
        let last = body["event_ids"][1].as_i64().unwrap();
        assert_eq!(last - first + 1, 80);
        let mine: Vec<&StoredEvent> = all
            .iter()
            .filter(|e| e.event_id >= first && e.event_id <= last)
            .collect();
        assert_eq!(
            mine.len(),
            80,
            "batch {b}: a gap or a stranger in its range"
        );
        let prefix = format!("cb{b}-");
        assert!(
            mine.iter().all(|e| e.aggregate_id.starts_with(&prefix)),
            "batch {b}'s range holds another batch's events"
        );
        for e in mine {
            assert!(seen.insert(e.event_id));
        }
    }
}

/// Batches and single commands racing for the same names: each name has one
/// creator, a batch lands whole or not at all, and no single command fails
/// because a batch committed beside it.
async fn batches_race_single_commands(s: &Service) {
    let c = s.http();
    let before = s.last_event_id().await;
    // Batch b creates r{10b}..r{10b+19}: each overlaps the next one's range.
    let batches = (0..4).map(|b| {
        let c = c.clone();
        async move {
            let commands: Vec<Value> = (10 * b..10 * b + 20)
                .map(|i| json!({ "op": "create_app", "id": format!("r{i}") }))
                .collect();
            (b, batch(&c, Value::Array(commands)).await)
        }
    });
    // Singles create every fifth name, and suspend an app no batch touches.
    let singles = (0..50).filter(|i| i % 5 == 0).map(|i| {
        let c = c.clone();
        async move {
            let a = c
                .post("/api/v1/apps", json!({ "id": format!("r{i}") }))
                .await;
            (i, a)
        }
    });
    expect(
        c.post("/api/v1/apps", json!({ "id": "bystander" })).await,
        201,
    );
    let bystander = async {
        for _ in 0..10 {
            expect(
                c.post("/api/v1/apps/bystander/suspend", json!({})).await,
                200,
            );
            expect(
                c.post("/api/v1/apps/bystander/resume", json!({})).await,
                200,
            );
        }
    };
    let (batches, singles, ()) = tokio::join!(
        futures_util::future::join_all(batches),
        futures_util::future::join_all(singles),
        bystander
    );
    let events = s.events_after(before).await;
    let mut created: std::collections::BTreeMap<String, i64> = Default::default();
    for e in events.iter().filter(|e| e.event_type == "app_created") {
        assert!(
            created.insert(e.aggregate_id.clone(), e.event_id).is_none(),
            "{} created twice",
            e.aggregate_id
        );
    }
    // Every creation is owned by exactly one successful answer.
    let mut owned = BTreeSet::new();
    for (i, a) in singles {
        let id = format!("r{i}");
        match a.status {
            201 => assert!(owned.insert(id), "r{i} claimed twice"),
            // Someone else created it first; never a version conflict.
            409 => assert!(
                created.contains_key(&id) && !a.body.to_string().contains("version conflict"),
                "{:#}",
                a.body
            ),
            other => panic!("single create r{i}: {other} {:#}", a.body),
        }
    }
    for (b, a) in batches {
        let ids: Vec<String> = (10 * b..10 * b + 20).map(|i| format!("r{i}")).collect();
        match a.status {
            200 => {
                let first = a.body["event_ids"][0].as_i64().unwrap();
                let last = a.body["event_ids"][1].as_i64().unwrap();
                assert_eq!(last - first + 1, 20, "batch {b}");
                for id in ids {
                    assert!((first..=last).contains(&created[&id]), "batch {b}: {id}");
                    assert!(owned.insert(id), "batch {b}: a name claimed twice");
                }
            }
            // The item it blames names an app someone else created.
            422 => {
                let index = a.body["error"]["index"].as_u64().unwrap() as usize;
                assert_eq!(a.body["error"]["item"]["status"], 409, "{:#}", a.body);
                assert!(created.contains_key(&ids[index]), "{:#}", a.body);
            }
            other => panic!("batch {b}: {other} {:#}", a.body),
        }
    }
    owned.insert("bystander".to_string());
    let created: BTreeSet<String> = created.into_keys().collect();
    assert_eq!(
        created, owned,
        "a creation no answer owns, or an answer without one"
    );
}

/// Proxies following the feed see a batch's events like any others.
async fn feed_carries_batches(s: &Service) {
    let c = s.http();
    let before = expect(c.get("/healthz").await, 200)["event_id"]
        .as_i64()
        .unwrap();
    let body = expect(
        batch(
            &c,
            json!([
                { "op": "create_app", "id": "fed" },
                { "op": "bind_hostname", "hostname": "fed.example", "app": "fed" }
            ]),
        )
        .await,
        200,
    );
    let page = expect(c.get(&format!("/v1/events?after={before}")).await, 200);
    let types: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["app_created", "hostname_bound"]);
    assert_eq!(page["last_event_id"], body["event_id"]);
    let snap = expect(c.get("/v1/snapshot").await, 200);
    assert_eq!(snap["config"]["hostnames"]["fed.example"], "fed");
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let s = super::Service::sqlite().await;
                    super::$name(&s).await;
                    s.stop().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let s = super::Service::postgres().await;
                    super::$name(&s).await;
                    s.stop().await;
                }
            )*
        }
    };
}

both_stores!(
    cross_references,
    atomic_failure,
    size_caps,
    concurrent_batches,
    batches_race_single_commands,
    feed_carries_batches,
);
