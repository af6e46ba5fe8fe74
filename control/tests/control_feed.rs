//! What proxies follow: `EdgeFeed.Watch` over a real tonic connection and the
//! `/v1/events` + `/v1/snapshot` polling fallback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use tollgate_control::ControlOptions;
use tollgate_control::store::{EventStore, NewEvent};
use tollgate_proto::control::v1::edge_feed_client::EdgeFeedClient;
use tollgate_proto::control::v1::watch_response::Kind;
use tollgate_proto::control::v1::{WatchRequest, WatchResponse};
use tollgate_routing::{EdgeConfig, EdgeEvent};
use tonic::Streaming;

async fn watch(
    svc: &Svc,
    after: i64,
    token: Option<&str>,
) -> Result<Streaming<WatchResponse>, tonic::Status> {
    let mut client = EdgeFeedClient::connect(format!("http://{}", svc.running.grpc_addr))
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);
    let mut req = tonic::Request::new(WatchRequest {
        after_event_id: after,
        node_id: "test-proxy".into(),
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    client.watch(req).await.map(|r| r.into_inner())
}

async fn next(stream: &mut Streaming<WatchResponse>) -> Kind {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no message in time")
        .expect("stream failed")
        .expect("stream ended")
        .kind
        .unwrap()
}

/// The edge events of the log after `after`, as (id, event).
async fn log_after(svc: &Svc, after: i64) -> Vec<(i64, EdgeEvent)> {
    svc.running
        .commands
        .store()
        .read_after(after, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| {
            let ev: EdgeEvent = serde_json::from_value(e.payload).ok()?;
            (ev.event_type() == e.event_type).then_some((e.event_id, ev))
        })
        .collect()
}

async fn write_routes(c: Client, app: &'static str, n: usize) {
    for i in 0..n {
        expect(
            c.post(
                "/api/v1/routes",
                json!({ "hostname": format!("r{i}.{app}.example"), "app": app }),
            )
            .await,
            201,
        );
    }
}

#[tokio::test]
async fn snapshot_then_every_delta_in_order_while_commands_run() {
    let svc = start().await;
    let c = svc.http();
    expect(c.post("/api/v1/apps", json!({ "id": "a" })).await, 201);
    expect(c.post("/api/v1/apps", json!({ "id": "b" })).await, 201);
    write_routes(c.clone(), "a", 3).await;

    let mut stream = watch(&svc, 0, Some(PROXY)).await.unwrap();
    let Kind::Snapshot(snap) = next(&mut stream).await else {
        panic!("the first message must be a snapshot");
    };
    let mut model: EdgeConfig = serde_json::from_slice(&snap.config_json).unwrap();
    assert_eq!(model.routes.len(), 3);
    let snap_id = snap.event_id;
    assert!(snap_id > 0);

    // Writers and a non-edge event, concurrently with the stream.
    let w1 = tokio::spawn(write_routes(c.clone(), "b", 25));
    let w2 = tokio::spawn(async move {
        let c = c;
        for i in 0..25 {
            expect(
                c.post(
                    "/api/v1/apps/a/upstreams/default/instances",
                    json!({ "address": format!("10.1.0.{i}:80") }),
                )
                .await,
                201,
            );
        }
    });
    svc.running
        .commands
        .store()
        .append(
            "audit",
            "x",
            0,
            "test",
            vec![NewEvent::new("note", json!({}))],
        )
        .await
        .unwrap();
    w1.await.unwrap();
    w2.await.unwrap();
    let end = svc.running.commands.store().last_event_id().await.unwrap();

    let mut got = Vec::new();
    let mut cursor = snap_id;
    let expected = log_after(&svc, snap_id).await;
    while got.len() < expected.len() {
        match next(&mut stream).await {
            Kind::Delta(d) => {
                assert!(
                    d.event_id > cursor,
                    "out of order or duplicate: {} after {cursor}",
                    d.event_id
                );
                cursor = d.event_id;
                let ev: EdgeEvent = serde_json::from_slice(&d.event_json).unwrap();
                assert_eq!(ev.event_type(), d.event_type);
                model.apply(&ev).unwrap();
                got.push((d.event_id, ev));
            }
            Kind::Snapshot(_) => panic!("a second snapshot"),
        }
    }
    // Exactly the log's edge events after the snapshot: no gap, no duplicate.
    assert_eq!(got, expected);
    assert!(cursor <= end);
    svc.running.projection().sync().await.unwrap();
    assert_eq!(model, svc.running.projection().view().config);
    // Nothing more arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err()
    );
    svc.stop().await;
}

#[tokio::test]
async fn resume_from_a_cursor_sends_only_deltas() {
    let svc = start().await;
    let c = svc.http();
    expect(c.post("/api/v1/apps", json!({ "id": "a" })).await, 201);
    write_routes(c.clone(), "a", 6).await;
    let all = log_after(&svc, 0).await;
    let (mid, _) = all[3];

    let mut stream = watch(&svc, mid, Some(ADMIN)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..(all.len() - 4) {
        match next(&mut stream).await {
            Kind::Delta(d) => got.push(d.event_id),
            Kind::Snapshot(_) => panic!("resume must not send a snapshot"),
        }
    }
    let want: Vec<i64> = all[4..].iter().map(|(id, _)| *id).collect();
    assert_eq!(got, want);
    // Live events follow.
    expect(c.post("/api/v1/apps", json!({ "id": "later" })).await, 201);
    let Kind::Delta(d) = next(&mut stream).await else {
        panic!("expected a delta")
    };
    assert_eq!(d.event_type, "app_created");

    // A cursor beyond the end of the log gets a snapshot.
    let mut ahead = watch(&svc, 1_000_000, Some(PROXY)).await.unwrap();
    let Kind::Snapshot(s) = next(&mut ahead).await else {
        panic!("expected a snapshot")
    };
    assert_eq!(s.event_id, svc.running.projection().event_id());

    // Shutdown ends the streams, so it does not hang.
    let dir = svc.stop();
    tokio::time::timeout(Duration::from_secs(10), dir)
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None) | Err(_)));
}

#[tokio::test]
async fn a_proxy_far_behind_gets_one_compressed_snapshot_instead_of_the_history() {
    let svc = start_with(|o| ControlOptions {
        feed_max_replay: 3,
        ..o
    })
    .await;
    let c = svc.http();
    expect(c.post("/api/v1/apps", json!({ "id": "a" })).await, 201);
    write_routes(c.clone(), "a", 6).await;
    let all = log_after(&svc, 0).await;
    let last = all.last().unwrap().0;
    let client = || async {
        EdgeFeedClient::connect(format!("http://{}", svc.running.grpc_addr))
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    };
    let request = |after: i64| {
        let mut req = tonic::Request::new(WatchRequest {
            after_event_id: after,
            node_id: "test-proxy".into(),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {PROXY}").parse().unwrap());
        req
    };

    // Further behind than 3 events: the projection at its cursor, gzip on the wire.
    let resp = client().await.watch(request(all[0].0)).await.unwrap();
    assert_eq!(
        resp.metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let mut stream = resp.into_inner();
    let Kind::Snapshot(s) = next(&mut stream).await else {
        panic!("a proxy far behind gets a snapshot")
    };
    assert_eq!(s.event_id, last);
    let config: EdgeConfig = serde_json::from_slice(&s.config_json).unwrap();
    assert_eq!(config.routes.len(), 6);

    // Within the bound, a resume still gets only the deltas.
    let (near, _) = all[all.len() - 3];
    let mut stream = client()
        .await
        .watch(request(near))
        .await
        .unwrap()
        .into_inner();
    for (id, _) in &all[all.len() - 2..] {
        let Kind::Delta(d) = next(&mut stream).await else {
            panic!("a proxy close behind gets deltas")
        };
        assert_eq!(d.event_id, *id);
    }
    svc.stop().await;
}

#[tokio::test]
async fn watch_needs_a_token() {
    let svc = start().await;
    for token in [None, Some("wrong-token-0123456789")] {
        let err = watch(&svc, 0, token).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
    svc.stop().await;
}

#[tokio::test]
async fn events_endpoint_pages_through_the_log() {
    let svc = start().await;
    let c = svc.http();
    expect(c.post("/api/v1/apps", json!({ "id": "a" })).await, 201);
    svc.running
        .commands
        .store()
        .append(
            "audit",
            "x",
            0,
            "test",
            vec![NewEvent::new("note", json!({}))],
        )
        .await
        .unwrap();
    write_routes(c.clone(), "a", 10).await;
    let p = c.with_token(Some(PROXY));

    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = expect(
            p.get(&format!("/v1/events?after={after}&limit=3")).await,
            200,
        );
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 3);
        for e in events {
            let id = e["event_id"].as_i64().unwrap();
            assert!(id > after);
            let ev: EdgeEvent = serde_json::from_value(e["event"].clone()).unwrap();
            assert_eq!(ev.event_type(), e["event_type"]);
            seen.push((id, ev));
        }
        let last = page["last_event_id"].as_i64().unwrap();
        assert!(last >= after);
        pages += 1;
        if events.is_empty() {
            break;
        }
        after = last;
    }
    assert!(pages >= 4);
    assert_eq!(seen, log_after(&svc, 0).await);
    assert_eq!(after, svc.running.projection().event_id());

    // The snapshot at the cursor plus nothing after it is the projection.
    let snap = expect(p.get("/v1/snapshot").await, 200);
    assert_eq!(snap["event_id"], after);
    let config: EdgeConfig = serde_json::from_value(snap["config"].clone()).unwrap();
    assert_eq!(config, svc.running.projection().view().config);
    let mut replay = EdgeConfig::default();
    for (_, e) in &seen {
        replay.apply(e).unwrap();
    }
    assert_eq!(replay, config);

    // A cursor beyond the log is 410; bad parameters are 400.
    let gone = expect(p.get("/v1/events?after=999999").await, 410);
    assert_eq!(gone["error"]["code"], "cursor_ahead");
    expect(p.get("/v1/events?after=0&limit=0").await, 400);
    expect(p.get("/v1/events?after=-1").await, 400);
    expect(p.get("/v1/events?after=abc").await, 400);
    svc.stop().await;
}
