//! The control service's own `/metrics`: appends by event type and refusals by
//! reason, log head and projection gauges, API latency by route template (never
//! a concrete path), and the feed (gRPC watchers, polls, snapshots, cursor lag).
//! Counters are compared before and after, so only what the test did counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_control::store::EventStore;
use tollgate_proto::control::v1::WatchResponse;
use tollgate_proto::control::v1::watch_response::Kind;
use tonic::Streaming;

const APP: &str = "tenant-4711";

/// One scrape: the exposition text and every series (`name{labels}`) with its value.
struct Scrape {
    text: String,
    series: HashMap<String, f64>,
}

impl Scrape {
    /// The value of a series, 0 when absent (a labelled series appears once used).
    fn get(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }
}

/// `GET /metrics` with the admin token (the shared client only keeps JSON bodies).
async fn scrape(svc: &Svc) -> Scrape {
    let mut s = TcpStream::connect(svc.running.http_addr).await.unwrap();
    let req = format!(
        "GET /metrics HTTP/1.1\r\nhost: control\r\nauthorization: Bearer {ADMIN}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    let series = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect();
    Scrape {
        text: body.to_string(),
        series,
    }
}

fn appended(kind: &str) -> String {
    format!("tollgate_control_events_appended_total{{kind=\"{kind}\"}}")
}

fn failures(reason: &str) -> String {
    format!("tollgate_control_append_failures_total{{reason=\"{reason}\"}}")
}

fn requests(route: &str, method: &str, class: &str) -> String {
    format!(
        "tollgate_control_http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\",status_class=\"{class}\"}}"
    )
}

/// Waits (without a deadline of its own) until the projection has applied `event_id`.
async fn projection_at(svc: &Svc, event_id: i64) {
    while svc.running.projection().event_id() < event_id {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next(stream: &mut Streaming<WatchResponse>) -> Kind {
    stream.message().await.unwrap().unwrap().kind.unwrap()
}

#[tokio::test]
async fn writes_refusals_latency_and_log_gauges() {
    let svc = start().await;
    let c = svc.http();
    let before = scrape(&svc).await;
    let head_before = svc.running.commands.store().last_event_id().await.unwrap();

    let created = expect(c.post("/api/v1/apps", json!({ "id": APP })).await, 201);
    let instance = expect(
        c.post(
            &format!("/api/v1/apps/{APP}/upstreams/default/instances"),
            json!({ "address": "10.0.0.1:8080" }),
        )
        .await,
        201,
    );
    let last = instance["event_id"].as_i64().unwrap();
    assert!(last > created["event_id"].as_i64().unwrap());

    // Refused: the app exists (409), a stale If-Match (409), an invalid route (422).
    expect(c.post("/api/v1/apps", json!({ "id": APP })).await, 409);
    expect(
        c.send(
            "POST",
            &format!("/api/v1/apps/{APP}/suspend"),
            Some(&json!({})),
            &[("if-match", "99")],
        )
        .await,
        409,
    );
    let invalid = expect(
        c.post(
            "/api/v1/routes",
            json!({ "hostname": "Bad Host!", "app": APP }),
        )
        .await,
        422,
    );
    assert_eq!(invalid["error"]["code"], "validation_failed");

    expect(c.get(&format!("/api/v1/apps/{APP}")).await, 200);
    expect(c.get(&format!("/api/v1/nothing/{APP}")).await, 404);

    projection_at(&svc, last).await;
    let after = scrape(&svc).await;

    // Appends: exactly the events the log got, by type.
    let mut written: BTreeMap<String, f64> = BTreeMap::new();
    for e in svc
        .running
        .commands
        .store()
        .read_after(head_before, 1000)
        .await
        .unwrap()
    {
        *written.entry(e.event_type).or_default() += 1.0;
    }
    assert_eq!(written.get("app_created"), Some(&1.0), "{written:?}");
    assert_eq!(written.get("instance_added"), Some(&1.0), "{written:?}");
    for (kind, n) in &written {
        let s = appended(kind);
        assert_eq!(after.get(&s) - before.get(&s), *n, "{s}");
    }
    let total = |s: &Scrape| -> f64 {
        s.series
            .iter()
            .filter(|(k, _)| k.starts_with("tollgate_control_events_appended_total{"))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(
        total(&after) - total(&before),
        written.values().sum::<f64>()
    );

    // Refusals by reason.
    for (reason, n) in [
        ("conflict", 1.0),
        ("version_conflict", 1.0),
        ("validation", 1.0),
        ("not_found", 0.0),
        ("store_unavailable", 0.0),
    ] {
        let s = failures(reason);
        assert_eq!(after.get(&s) - before.get(&s), n, "{s}");
    }

    // Latency by route template; the app id is never a label value.
    assert_eq!(
        after.get(&requests("/api/v1/apps/{app}", "GET", "2xx")),
        1.0
    );
    assert_eq!(after.get(&requests("/api/v1/apps", "POST", "2xx")), 1.0);
    assert_eq!(after.get(&requests("/api/v1/apps", "POST", "4xx")), 1.0);
    assert_eq!(
        after.get(&requests("/api/v1/apps/{app}/suspend", "POST", "4xx")),
        1.0
    );
    assert_eq!(after.get(&requests("/api/v1/routes", "POST", "4xx")), 1.0);
    assert_eq!(after.get(&requests("_unmatched", "GET", "4xx")), 1.0);
    // Every scrape before this one is a request too.
    assert_eq!(after.get(&requests("/metrics", "GET", "2xx")), 1.0);
    assert!(!after.text.contains(APP), "{}", after.text);

    // The log and the projection both end at the last write.
    assert_eq!(after.get("tollgate_control_log_head_event_id"), last as f64);
    assert_eq!(
        after.get("tollgate_control_projection_event_id"),
        last as f64
    );
    assert_eq!(after.get("tollgate_control_projection_lag_events"), 0.0);

    // The ACME metrics share the registry and the endpoint.
    assert!(
        after
            .text
            .contains("tollgate_control_managed_certificates{state=\"issued\"} 0"),
        "{}",
        after.text
    );
    svc.stop().await;
}

#[tokio::test]
async fn batch_appends_and_refusals_count_once() {
    let svc = start().await;
    let c = svc.http();
    let before = scrape(&svc).await;
    let ok = expect(
        c.post(
            "/api/v1/batch",
            json!({ "commands": [
                { "op": "create_app", "id": "b1" },
                { "op": "create_app", "id": "b2" },
            ]}),
        )
        .await,
        200,
    );
    // The second item fails (422 naming it): nothing is written, one refusal counted
    // by the item's reason.
    expect(
        c.post(
            "/api/v1/batch",
            json!({ "commands": [
                { "op": "create_app", "id": "b3" },
                { "op": "create_app", "id": "b1" },
            ]}),
        )
        .await,
        422,
    );
    projection_at(&svc, ok["event_id"].as_i64().unwrap()).await;
    let after = scrape(&svc).await;
    let s = appended("app_created");
    assert_eq!(after.get(&s) - before.get(&s), 2.0);
    let s = failures("conflict");
    assert_eq!(after.get(&s) - before.get(&s), 1.0);
    assert_eq!(after.get(&requests("/api/v1/batch", "POST", "4xx")), 1.0);
    svc.stop().await;
}

#[tokio::test]
async fn watchers_polls_snapshots_and_cursor_lag() {
    let svc = start().await;
    let c = svc.http();
    let first = expect(c.post("/api/v1/apps", json!({ "id": APP })).await, 201);
    let first = first["event_id"].as_i64().unwrap();
    projection_at(&svc, first).await;
    let before = scrape(&svc).await;
    let watchers = "tollgate_control_feed_watchers{transport=\"grpc\"}";
    let grpc_lag = "tollgate_control_feed_cursor_lag_events_count{transport=\"grpc\"}";
    let grpc_lag_sum = "tollgate_control_feed_cursor_lag_events_sum{transport=\"grpc\"}";
    assert_eq!(before.get(watchers), 0.0);

    // A watch from 0 gets a snapshot and is open until dropped.
    let mut stream = watch(&svc, 0, Some(PROXY)).await.unwrap();
    let Kind::Snapshot(snap) = next(&mut stream).await else {
        panic!("a watch from 0 starts with a snapshot");
    };
    assert_eq!(snap.event_id, first);
    let open = scrape(&svc).await;
    assert_eq!(open.get(watchers), 1.0);
    let initial = "tollgate_control_feed_snapshots_total{reason=\"initial\",transport=\"grpc\"}";
    assert_eq!(open.get(initial) - before.get(initial), 1.0);

    // One event: the watcher is sent it one event behind the projection.
    let suspended = expect(
        c.post(&format!("/api/v1/apps/{APP}/suspend"), json!({}))
            .await,
        200,
    );
    let Kind::Delta(delta) = next(&mut stream).await else {
        panic!("then deltas");
    };
    assert_eq!(delta.event_id, suspended["event_id"].as_i64().unwrap());
    let sent = scrape(&svc).await;
    assert_eq!(sent.get(grpc_lag) - before.get(grpc_lag), 1.0);
    assert_eq!(sent.get(grpc_lag_sum) - before.get(grpc_lag_sum), 1.0);

    // Dropped: the session notices and stops counting it.
    drop(stream);
    while scrape(&svc).await.get(watchers) != 0.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A watch from beyond the log gets a snapshot for that reason.
    let mut ahead = watch(&svc, 1_000_000, Some(PROXY)).await.unwrap();
    assert!(matches!(next(&mut ahead).await, Kind::Snapshot(_)));
    drop(ahead);
    let s = scrape(&svc).await;
    let cursor_ahead =
        "tollgate_control_feed_snapshots_total{reason=\"cursor_ahead\",transport=\"grpc\"}";
    assert_eq!(s.get(cursor_ahead) - before.get(cursor_ahead), 1.0);

    // Polls: one from the start of the log (lag = the projection's cursor), one current.
    let proxy = c.with_token(Some(PROXY));
    let upto = svc.running.projection().event_id();
    let polls_before = scrape(&svc).await;
    expect(proxy.get("/v1/events?after=0").await, 200);
    expect(proxy.get(&format!("/v1/events?after={upto}")).await, 200);
    expect(proxy.get("/v1/snapshot").await, 200);
    let polled = scrape(&svc).await;
    let polls = "tollgate_control_feed_polls_total";
    assert_eq!(polled.get(polls) - polls_before.get(polls), 2.0);
    let http_lag = "tollgate_control_feed_cursor_lag_events_count{transport=\"http\"}";
    let http_lag_sum = "tollgate_control_feed_cursor_lag_events_sum{transport=\"http\"}";
    let current = "tollgate_control_feed_cursor_lag_events_bucket{transport=\"http\",le=\"0\"}";
    assert_eq!(polled.get(http_lag) - polls_before.get(http_lag), 2.0);
    assert_eq!(
        polled.get(http_lag_sum) - polls_before.get(http_lag_sum),
        upto as f64
    );
    assert_eq!(polled.get(current) - polls_before.get(current), 1.0);
    let requested =
        "tollgate_control_feed_snapshots_total{reason=\"requested\",transport=\"http\"}";
    assert_eq!(polled.get(requested) - polls_before.get(requested), 1.0);
    assert_eq!(polled.get(&requests("/v1/events", "GET", "2xx")), 2.0);
    svc.stop().await;
}

/// Proxies at one cursor cost the service one read of each range and one encoding
/// of a snapshot: the others take a copy, byte for byte the same.
#[tokio::test]
async fn watchers_at_one_place_share_each_read_and_snapshot() {
    let svc = start().await;
    let c = svc.http();
    let first = expect(c.post("/api/v1/apps", json!({ "id": APP })).await, 201);
    projection_at(&svc, first["event_id"].as_i64().unwrap()).await;
    let reads = |kind: &str, source: &str| {
        format!("tollgate_control_feed_reads_total{{kind=\"{kind}\",source=\"{source}\"}}")
    };
    let before = scrape(&svc).await;

    let mut streams = Vec::new();
    let mut snapshots = Vec::new();
    for _ in 0..3 {
        let mut s = watch(&svc, 0, Some(PROXY)).await.unwrap();
        let Kind::Snapshot(snap) = next(&mut s).await else {
            panic!("a watch from 0 starts with a snapshot");
        };
        snapshots.push(snap);
        streams.push(s);
    }
    assert!(snapshots.windows(2).all(|w| w[0] == w[1]));
    let started = scrape(&svc).await;
    let delta =
        |s: &Scrape, kind, source| s.get(&reads(kind, source)) - before.get(&reads(kind, source));
    assert_eq!(delta(&started, "snapshot", "made"), 1.0);
    assert_eq!(delta(&started, "snapshot", "shared"), 2.0);

    // Each event reaches every watcher before the next is written, so all three ask
    // for the same range each time.
    let events = 4;
    for i in 0..events {
        let action = if i % 2 == 0 { "suspend" } else { "resume" };
        let written = expect(
            c.post(&format!("/api/v1/apps/{APP}/{action}"), json!({}))
                .await,
            200,
        );
        let id = written["event_id"].as_i64().unwrap();
        let mut sent = Vec::new();
        for s in &mut streams {
            let Kind::Delta(d) = next(s).await else {
                panic!("then deltas");
            };
            assert_eq!(d.event_id, id);
            sent.push(d);
        }
        assert!(sent.windows(2).all(|w| w[0] == w[1]));
    }
    let after = scrape(&svc).await;
    assert_eq!(delta(&after, "deltas", "made"), f64::from(events));
    assert_eq!(delta(&after, "deltas", "shared"), f64::from(2 * events));
}
