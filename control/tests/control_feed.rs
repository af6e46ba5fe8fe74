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

/// Creates `app`, then `n` routes to it.
async fn write_app(c: Client, app: &'static str, n: usize) {
    expect(c.post("/api/v1/apps", json!({ "id": app })).await, 201);
    write_routes(c, app, n).await;
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
    write_app(c.clone(), "a", 6).await;
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
    write_app(c.clone(), "a", 6).await;
    let all = log_after(&svc, 0).await;
    let last = all.last().unwrap().0;
    let client = || async {
        EdgeFeedClient::connect(format!("http://{}", svc.running.grpc_addr))
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    };
    let request = |after: i64, gzip_snapshot: bool| {
        let mut req = tonic::Request::new(WatchRequest {
            after_event_id: after,
            node_id: "test-proxy".into(),
            last_edge: None,
            gzip_snapshot,
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {PROXY}").parse().unwrap());
        req
    };

    // Further behind than 3 events: the projection at its cursor, its config
    // gzip-compressed when asked for, plain JSON otherwise.
    let mut configs = Vec::new();
    for gzip in [true, false] {
        let resp = client().await.watch(request(all[0].0, gzip)).await.unwrap();
        // No per-message compression: deltas are small and many.
        assert_eq!(resp.metadata().get("grpc-encoding"), None);
        let mut stream = resp.into_inner();
        let Kind::Snapshot(s) = next(&mut stream).await else {
            panic!("a proxy far behind gets a snapshot")
        };
        assert_eq!(s.event_id, last);
        let json = if gzip {
            assert_eq!(s.config_encoding, "gzip");
            let mut json = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(&s.config_json[..]),
                &mut json,
            )
            .unwrap();
            assert!(s.config_json.len() < json.len(), "not smaller");
            json
        } else {
            assert_eq!(s.config_encoding, "");
            s.config_json
        };
        let config: EdgeConfig = serde_json::from_slice(&json).unwrap();
        assert_eq!(config.routes.len(), 6);
        configs.push(json);
    }
    assert_eq!(configs[0], configs[1]);

    // Within the bound, a resume still gets only the deltas.
    let (near, _) = all[all.len() - 3];
    let mut stream = client()
        .await
        .watch(request(near, true))
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

/// `(event_id, fingerprint)` of the last event of a `/v1/events` page.
fn last_marker(page: &serde_json::Value) -> (i64, String) {
    let e = page["events"].as_array().unwrap().last().unwrap();
    let fp = e["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fp.len(), 16, "{e}");
    (e["event_id"].as_i64().unwrap(), fp)
}

async fn watch_marked(
    running: &tollgate_control::Running,
    after: i64,
    marker: &(i64, String),
) -> Streaming<WatchResponse> {
    let mut client = EdgeFeedClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);
    let mut req = tonic::Request::new(WatchRequest {
        after_event_id: after,
        node_id: "test-proxy".into(),
        last_edge: Some(tollgate_proto::control::v1::EdgeMarker {
            event_id: marker.0,
            fingerprint: marker.1.clone(),
        }),
        gzip_snapshot: false,
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {PROXY}").parse().unwrap());
    client.watch(req).await.unwrap().into_inner()
}

/// The log restored from a copy of its database: a proxy whose last edge event was
/// lost gets a snapshot (`log_diverged`) on both transports even once the log is past
/// its cursor; one whose last edge event was kept resumes after it and gets the new
/// events, including those at ids up to its cursor.
#[tokio::test]
async fn a_proxy_beyond_a_restored_backup_is_told_the_log_diverged() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, backup) = (tmp.path().join("control.db"), tmp.path().join("backup.db"));
    let client = |r: &tollgate_control::Running| Client {
        addr: r.http_addr,
        token: Some(PROXY.into()),
    };
    let admin = |r: &tollgate_control::Running| client(r).with_token(Some(ADMIN));
    let stop = |r: tollgate_control::Running| async move {
        r.shutdown();
        r.wait().await.unwrap();
    };

    let running = start_in(tmp.path()).await;
    write_app(admin(&running), "a", 2).await;
    let kept = last_marker(&expect(
        client(&running).get("/v1/events?after=0").await,
        200,
    ));
    stop(running).await;
    std::fs::copy(&db, &backup).unwrap();

    // Lost: what happens after the backup.
    let running = start_in(tmp.path()).await;
    write_app(admin(&running), "b", 2).await;
    let lost = last_marker(&expect(
        client(&running).get("/v1/events?after=0").await,
        200,
    ));
    assert!(lost.0 > kept.0);
    stop(running).await;

    // Restored, and written to past the lost cursor.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(tmp.path().join(format!("control.db{suffix}")));
    }
    std::fs::copy(&backup, &db).unwrap();
    let running = start_in(tmp.path()).await;
    write_app(admin(&running), "c", 4).await;
    let head = running.projection().event_id();
    assert!(head > lost.0, "the log passes the lost cursor");
    let p = client(&running);

    // Polling: the lost marker is 410 log_diverged.
    let diverged = expect(
        p.get(&format!(
            "/v1/events?after={0}&edge_id={0}&edge_fp={1}",
            lost.0, lost.1
        ))
        .await,
        410,
    );
    assert_eq!(diverged["error"]["code"], "log_diverged", "{diverged}");
    // Without a marker (an older proxy) the cursor alone cannot tell: it resumes.
    let blind = expect(p.get(&format!("/v1/events?after={}", lost.0)).await, 200);
    assert!(
        blind["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["event_id"].as_i64().unwrap() > lost.0)
    );
    // The kept marker, cursor anywhere after it: every new event after the marker.
    let resumed = expect(
        p.get(&format!(
            "/v1/events?after={}&edge_id={}&edge_fp={}",
            lost.0, kept.0, kept.1
        ))
        .await,
        200,
    );
    let new: Vec<(i64, String)> = log_after_running(&running, kept.0).await;
    let got: Vec<(i64, String)> = resumed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event_id"].as_i64().unwrap(),
                e["event_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, new);
    assert!(got.iter().any(|(id, _)| *id <= lost.0), "{got:?}");
    // A marker beyond the end of the log, and a malformed one.
    let ahead = expect(
        p.get(&format!(
            "/v1/events?after=1&edge_id={}&edge_fp=ab",
            head + 10
        ))
        .await,
        410,
    );
    assert_eq!(ahead["error"]["code"], "cursor_ahead");
    expect(p.get("/v1/events?after=1&edge_fp=ab").await, 400);
    expect(p.get("/v1/events?after=1&edge_id=-1").await, 400);
    // The snapshot names its last edge event: the newest event of the log here.
    let snap = expect(p.get("/v1/snapshot").await, 200);
    let newest = last_marker(&expect(p.get("/v1/events?after=0&limit=5000").await, 200));
    assert_eq!(snap["last_edge"]["event_id"], newest.0);
    assert_eq!(snap["last_edge"]["fingerprint"], newest.1.as_str());

    // gRPC: the lost marker gets a snapshot saying why, with the marker to keep.
    let mut stream = watch_marked(&running, lost.0, &lost).await;
    let Kind::Snapshot(s) = next(&mut stream).await else {
        panic!("a diverged proxy gets a snapshot")
    };
    assert_eq!(s.reason, "log_diverged");
    assert_eq!(s.event_id, head);
    let m = s.last_edge.unwrap();
    assert_eq!((m.event_id, m.fingerprint), newest);
    // The kept marker resumes after it with the new events, deltas only.
    let mut stream = watch_marked(&running, lost.0, &kept).await;
    let mut deltas = Vec::new();
    for _ in 0..new.len() {
        match next(&mut stream).await {
            Kind::Delta(d) => {
                assert_eq!(d.fingerprint.len(), 16);
                deltas.push((d.event_id, d.event_type));
            }
            Kind::Snapshot(_) => panic!("a proxy with a kept marker resumes"),
        }
    }
    assert_eq!(deltas, new);
    stop(running).await;
}

/// The edge events of the log after `after`, as (id, type).
async fn log_after_running(running: &tollgate_control::Running, after: i64) -> Vec<(i64, String)> {
    running
        .commands
        .store()
        .read_after(after, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| {
            let ev: EdgeEvent = serde_json::from_value(e.payload).ok()?;
            (ev.event_type() == e.event_type).then_some((e.event_id, e.event_type))
        })
        .collect()
}
