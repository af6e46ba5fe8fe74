//! The projection: incremental application while events are appended equals a
//! rebuild from event 0; non-edge and unappliable events are skipped the same way;
//! the checkpoint is saved.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tollgate_control::Projection;
use tollgate_control::store::{AnyStore, EventStore, NewEvent};

#[tokio::test]
async fn rebuild_from_zero_equals_incremental() {
    let svc = start().await;
    let c = svc.http();
    // Writers of every kind run concurrently while the projection follows.
    let mut writers = Vec::new();
    for w in 0..4 {
        let c = c.clone();
        writers.push(tokio::spawn(async move {
            let app = format!("app{w}");
            expect(c.post("/api/v1/apps", json!({ "id": app })).await, 201);
            for i in 0..8 {
                expect(
                    c.post(
                        &format!("/api/v1/apps/{app}/upstreams/default/instances"),
                        json!({ "address": format!("10.0.{w}.{i}:80") }),
                    )
                    .await,
                    201,
                );
                let r = expect(
                    c.post(
                        "/api/v1/routes",
                        json!({ "hostname": format!("r{i}.{app}.example"), "app": app }),
                    )
                    .await,
                    201,
                );
                if i % 3 == 0 {
                    let id = r["route"]["id"].as_str().unwrap();
                    expect(c.delete(&format!("/api/v1/routes/{id}")).await, 200);
                }
                expect(
                    c.put(
                        &format!("/api/v1/hostnames/h{i}.{app}.example"),
                        json!({ "app": app }),
                    )
                    .await,
                    201,
                );
                let k = expect(
                    c.post(&format!("/api/v1/apps/{app}/keys"), json!({})).await,
                    201,
                );
                if i % 2 == 0 {
                    let id = k["key"]["key_id"].as_str().unwrap();
                    expect(c.delete(&format!("/api/v1/keys/{id}")).await, 200);
                }
                expect(
                    c.put(
                        &format!("/api/v1/apps/{app}/limits"),
                        json!({ "rate": [{ "key": "app", "per_second": i + 1 }] }),
                    )
                    .await,
                    200,
                );
            }
            if w == 3 {
                expect(
                    c.delete(&format!("/api/v1/apps/{app}?grace_seconds=0"))
                        .await,
                    200,
                );
            }
        }));
    }
    // Something that is not an edge event, and an edge event that does not apply
    // (as a racing second instance could write), appended around the commands.
    let store = svc.running.commands.store().clone();
    store
        .append(
            "audit",
            "note-1",
            0,
            "test",
            vec![NewEvent::new("operator_note", json!({ "text": "hi" }))],
        )
        .await
        .unwrap();
    store
        .append(
            "route",
            "ghost",
            0,
            "test",
            vec![NewEvent::new(
                "route_deleted",
                json!({ "type": "route_deleted", "route_id": "ghost" }),
            )],
        )
        .await
        .unwrap();
    // Meanwhile, the view only moves forward.
    let projection = svc.running.projection().clone();
    let watcher = tokio::spawn(async move {
        let mut last = 0;
        for _ in 0..50 {
            let id = projection.view().event_id;
            assert!(id >= last);
            last = id;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    for w in writers {
        w.await.unwrap();
    }
    watcher.await.unwrap();

    let projection = svc.running.projection();
    let end = store.last_event_id().await.unwrap();
    assert!(projection.wait_applied(end, Duration::from_secs(5)).await);
    let incremental = projection.view();
    assert_eq!(incremental.event_id, end);
    let rebuilt = projection.rebuild_from_zero().await.unwrap();
    assert_eq!(rebuilt.event_id, incremental.event_id);
    assert_eq!(rebuilt.config, incremental.config);
    assert_eq!(incremental.config.apps.len(), 3);
    assert!(!incremental.config.routes.is_empty());

    // A fresh projection over the same log gets there too, and rejects the same event.
    let fresh = Projection::new(store.clone());
    fresh.sync().await.unwrap();
    assert_eq!(*fresh.view(), *incremental);
    let ghost = store.read_aggregate("route", "ghost").await.unwrap()[0].event_id;
    assert!(projection.is_rejected(ghost) && fresh.is_rejected(ghost));

    // The checkpoint reaches the cursor (at the latest on shutdown).
    let dir = svc.dir.clone();
    let _keep = svc.stop().await;
    let reopened = AnyStore::open(&db_url(&dir)).await.unwrap();
    assert_eq!(reopened.checkpoint("edge").await.unwrap(), end);
    // And a restart replays to the same state.
    let restarted = Projection::start(Arc::new(reopened)).await.unwrap();
    assert_eq!(restarted.view().config, incremental.config);
}

/// An append's own events, handed over by the commit, are applied without a gap
/// or a repeat; past a gap the projection reads the log as `sync` does.
#[tokio::test]
async fn committed_events_apply_as_handed_over_and_gaps_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(AnyStore::open(&db_url(dir.path())).await.unwrap());
    let projection = Projection::new(store.clone());
    let app = |id: &str| tollgate_control::store::BatchEvent {
        aggregate_type: "app".into(),
        aggregate_id: id.into(),
        expected_version: 0,
        event: NewEvent::new(
            "app_created",
            json!({ "type": "app_created", "app_id": id }),
        ),
    };
    let first = store
        .append_batch("test", vec![app("a"), app("b")])
        .await
        .unwrap();
    projection.sync_committed(&first).await.unwrap();
    let view = projection.view();
    assert_eq!(view.event_id, first[1].event_id);
    assert!(view.config.apps.contains_key("a") && view.config.apps.contains_key("b"));
    // Handed over again: nothing after the cursor, nothing applied twice.
    projection.sync_committed(&first).await.unwrap();
    assert_eq!(projection.view().event_id, first[1].event_id);
    // An append the projection never saw, then one handed over past it.
    store.append_batch("test", vec![app("c")]).await.unwrap();
    let last = store.append_batch("test", vec![app("d")]).await.unwrap();
    projection.sync_committed(&last).await.unwrap();
    let view = projection.view();
    assert_eq!(view.event_id, last[0].event_id);
    assert_eq!(view.config.apps.len(), 4);
    let fresh = Projection::new(store.clone());
    fresh.sync().await.unwrap();
    assert_eq!(*fresh.view(), *view);
}
