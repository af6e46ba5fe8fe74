//! Event store on SQLite: the shared suite plus file-specific behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;

use serde_json::json;
use support::{RawSql, suite};
use tollgate_control::store::{AnyStore, EventStore, NewEvent, SqliteStore, StoreError};

async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("events.db"))
        .await
        .unwrap();
    (dir, store)
}

macro_rules! suite_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let (_dir, store) = fresh().await;
            suite::$name(&store).await;
            store.close().await;
        }
    )*};
}

suite_tests!(
    suite_append_and_read,
    suite_invalid_requests,
    suite_conflict,
    suite_concurrent_same_aggregate,
    suite_concurrent_appends_and_followers,
    suite_append_only,
    suite_checkpoints,
    suite_subscribe,
    suite_append_batch,
    suite_large_batch,
    suite_concurrent_batches,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopen_keeps_events_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested-name.db");
    let (events, last) = {
        let store = SqliteStore::open(&path).await.unwrap();
        let mut events = store
            .append(
                "route",
                "r1",
                0,
                "alice",
                vec![NewEvent::new("A", json!({"x": 1}))],
            )
            .await
            .unwrap();
        events.extend(
            store
                .append(
                    "route",
                    "r1",
                    1,
                    "alice",
                    vec![NewEvent::new("B", json!([true]))],
                )
                .await
                .unwrap(),
        );
        store
            .save_checkpoint("routes", events[1].event_id)
            .await
            .unwrap();
        let last = store.last_event_id().await.unwrap();
        store.close().await;
        (events, last)
    };
    assert!(path.is_file());

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.read_aggregate("route", "r1").await.unwrap(), events);
    assert_eq!(store.read_after(0, 100).await.unwrap(), events);
    assert_eq!(store.version("route", "r1").await.unwrap(), 2);
    assert_eq!(store.last_event_id().await.unwrap(), last);
    assert_eq!(
        *store.subscribe().borrow(),
        last,
        "the watch starts at the persisted position"
    );
    assert_eq!(
        store.checkpoint("routes").await.unwrap(),
        events[1].event_id
    );
    assert!(matches!(
        store
            .append(
                "route",
                "r1",
                0,
                "bob",
                vec![NewEvent::new("C", json!(null))]
            )
            .await,
        Err(StoreError::Conflict {
            expected: 0,
            actual: 2
        })
    ));
    let next = store
        .append(
            "route",
            "r1",
            2,
            "bob",
            vec![NewEvent::new("C", json!(null))],
        )
        .await
        .unwrap();
    assert_eq!(next[0].aggregate_seq, 3);
    assert!(next[0].event_id > last);
    // Still append-only after reopening (the triggers live in the file).
    assert!(
        store
            .raw_execute("DELETE FROM events".into())
            .await
            .is_err()
    );
    store.close().await;
}

/// Two stores on one file stand in for two processes: their writers are
/// serialised by SQLite's write lock (BEGIN IMMEDIATE + busy timeout), and
/// conflicts are detected across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_serialise_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let one = SqliteStore::open(&path).await.unwrap();
    let two = SqliteStore::open(&path).await.unwrap();

    async fn writer(store: &SqliteStore, who: usize) -> usize {
        let mut conflicts = 0;
        for i in 0..15 {
            loop {
                let v = store.version("route", "shared").await.unwrap();
                let event = NewEvent::new("Tick", json!({"who": who, "i": i}));
                match store.append("route", "shared", v, "w", vec![event]).await {
                    Ok(_) => break,
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("writer {who}: {e}"),
                }
            }
        }
        conflicts
    }
    tokio::join!(
        writer(&one, 0),
        writer(&two, 1),
        writer(&one, 2),
        writer(&two, 3)
    );

    let events = one.read_aggregate("route", "shared").await.unwrap();
    assert_eq!(events.len(), 60);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.aggregate_seq, i as i64 + 1);
    }
    assert_eq!(two.read_after(0, 1000).await.unwrap().len(), 60);
    assert!(events.windows(2).all(|w| w[0].event_id < w[1].event_id));
    one.close().await;
    two.close().await;
}

/// `INSERT OR REPLACE` would delete the old row without firing DELETE triggers;
/// the insert trigger refuses it.
#[tokio::test]
async fn insert_or_replace_is_refused() {
    let (_dir, store) = fresh().await;
    let stored = store
        .append(
            "route",
            "r",
            0,
            "u",
            vec![NewEvent::new("A", json!({"v": 1}))],
        )
        .await
        .unwrap();
    let id = stored[0].event_id;
    for sql in [
        format!(
            "INSERT OR REPLACE INTO events (event_id, occurred_at, aggregate_type, aggregate_id, \
             aggregate_seq, event_type, actor_id, payload) VALUES ({id}, 0, 'x', 'y', 1, 'T', 'm', '{{}}')"
        ),
        "REPLACE INTO events (occurred_at, aggregate_type, aggregate_id, aggregate_seq, event_type, \
         actor_id, payload) VALUES (0, 'route', 'r', 1, 'T', 'm', '{}')"
            .to_string(),
        "INSERT INTO events (occurred_at, aggregate_type, aggregate_id, aggregate_seq, event_type, \
         actor_id, payload) VALUES (0, 'route', 'r', 1, 'T', 'm', '{}') \
         ON CONFLICT DO UPDATE SET event_type = 'T'"
            .to_string(),
    ] {
        let err = store.raw_execute(sql.clone()).await.expect_err(&sql);
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(store.read_after(0, 10).await.unwrap(), stored);
    // Payloads must be JSON.
    let err = store
        .raw_execute(
            "INSERT INTO events (occurred_at, aggregate_type, aggregate_id, aggregate_seq, \
             event_type, actor_id, payload) VALUES (0, 'route', 'r', 2, 'T', 'm', 'not json')"
                .into(),
        )
        .await
        .unwrap_err();
    assert!(err.contains("CHECK"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_store_opens_sqlite_urls() {
    let dir = tempfile::tempdir().unwrap();
    let abs: PathBuf = dir.path().join("any.db");
    let url = format!("sqlite://{}", abs.display()); // sqlite:///tmp/…/any.db
    assert!(url.starts_with("sqlite:///"));

    let store = AnyStore::open(&url).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    suite::suite_append_and_read(&store).await;
    suite::suite_conflict(&store).await;
    suite::suite_append_only(&store).await;
    suite::suite_subscribe(&store).await;
    let last = store.last_event_id().await.unwrap();
    store.close().await;

    // The same file through the other spellings.
    for spelling in [
        abs.display().to_string(),
        format!("sqlite:{}", abs.display()),
    ] {
        let again = AnyStore::open(&spelling).await.unwrap();
        assert_eq!(again.last_event_id().await.unwrap(), last, "{spelling}");
        again.close().await;
    }

    for bad in [
        "mysql://localhost/x",
        "sqlite::memory:",
        "sqlite:",
        "sqlite://x.db?mode=rwc",
    ] {
        assert!(
            matches!(AnyStore::open(bad).await, Err(StoreError::Invalid(_))),
            "{bad} should be refused"
        );
    }
}
