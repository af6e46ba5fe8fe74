//! Event store on PostgreSQL: the shared suite plus PostgreSQL-specific
//! behaviour (advisory-lock serialisation, NOTIFY wake-ups, TRUNCATE).
//! See `tests/src/postgres.rs` for where the server comes from.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use support::{RawSql, pg, suite, unique};
use tollgate_control::store::{AnyStore, EventStore, NewEvent, PgStore, StoreError};

macro_rules! suite_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let db = pg::test_db().await;
            let store = PgStore::connect(&db.url)
                .await
                .unwrap_or_else(|e| panic!("connect {} ({}): {e}", db.url, db.origin));
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
async fn truncate_is_refused() {
    let db = pg::test_db().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    let a = unique("truncate");
    let stored = store
        .append("route", &a, 0, "u", vec![NewEvent::new("A", json!(1))])
        .await
        .unwrap();
    let err = store
        .raw_execute("TRUNCATE events".into())
        .await
        .unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    // The identity column cannot be forged either.
    let err = store
        .raw_execute(format!(
            "INSERT INTO events (event_id, occurred_at, aggregate_type, aggregate_id, \
             aggregate_seq, event_type, actor_id, payload) \
             VALUES (1, 0, 'route', '{a}', 2, 'T', 'm', '{{}}')"
        ))
        .await
        .unwrap_err();
    assert!(err.contains("non-DEFAULT value"), "{err}");
    assert_eq!(store.read_aggregate("route", &a).await.unwrap(), stored);
    store.close().await;
}

/// A writer that bypasses the advisory lock inserts the same sequence number
/// while an append is in flight: the append blocks on the unique index, then
/// fails with a unique violation, which must surface as `Conflict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unique_violation_maps_to_conflict() {
    let db = pg::test_db().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    let a = unique("unique");

    let mut rogue = PgConnection::connect(&db.url).await.unwrap();
    let mut tx = rogue.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (occurred_at, aggregate_type, aggregate_id, aggregate_seq, \
         event_type, actor_id, payload) VALUES (0, 'route', $1, 1, 'Rogue', 'rogue', '{}')",
    )
    .bind(&a)
    .execute(&mut *tx)
    .await
    .unwrap();

    let append = store.append("route", &a, 0, "u", vec![NewEvent::new("Mine", json!(1))]);
    let commit_when_blocked = async {
        // Wait until the append is blocked on the rogue row's index entry.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE NOT l.granted AND a.datname = current_database()",
            )
            .fetch_one(store.pool())
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the append never blocked on the rogue insert"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tx.commit().await.unwrap();
    };
    let (result, ()) = tokio::join!(append, commit_when_blocked);
    match result {
        Err(StoreError::Conflict {
            expected: 0,
            actual: 1,
        }) => {}
        other => panic!("expected Conflict{{0, 1}}, got {other:?}"),
    }
    let events = store.read_aggregate("route", &a).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "Rogue");
    let _ = rogue.close().await;
    store.close().await;
}

/// Another instance's append wakes a subscriber through LISTEN/NOTIFY (the
/// fallback poll is set to an hour, so it cannot be the poll), also after the
/// listener's connection is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_wakes_other_instances() {
    let db = pg::test_db().await;
    let writer = PgStore::connect(&db.url).await.unwrap();
    let reader = PgStore::connect_with_poll_interval(&db.url, Duration::from_secs(3600))
        .await
        .unwrap();
    let mut rx = reader.subscribe();
    let a = unique("notify");

    // Give the listener a moment to LISTEN (its initial poll covers the race,
    // but this test wants the notification path).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stored = writer
        .append("route", &a, 0, "u", vec![NewEvent::new("A", json!(1))])
        .await
        .unwrap();
    let id = stored[0].event_id;
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| *v >= id))
        .await
        .expect("no NOTIFY wake-up within 5 s")
        .unwrap();

    // Kill the listener's connection; it must reconnect and keep waking us.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%') t",
    )
    .fetch_one(writer.pool())
    .await
    .unwrap();
    assert!(killed >= 1, "no listener connection found");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut version = 1;
    loop {
        let stored = writer
            .append(
                "route",
                &a,
                version,
                "u",
                vec![NewEvent::new("B", json!(version))],
            )
            .await
            .unwrap();
        version += 1;
        let id = stored[0].event_id;
        if tokio::time::timeout(Duration::from_millis(500), rx.wait_for(|v| *v >= id))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no wake-up after the listener was killed"
        );
    }
    reader.close().await;
    writer.close().await;
}

/// Rows that arrive without a NOTIFY (raw insert) still wake subscribers via
/// the fallback poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poll_fallback_wakes_without_notify() {
    let db = pg::test_db().await;
    let store = PgStore::connect_with_poll_interval(&db.url, Duration::from_millis(200))
        .await
        .unwrap();
    let mut rx = store.subscribe();
    let a = unique("silent");
    store
        .raw_execute(format!(
            "INSERT INTO events (occurred_at, aggregate_type, aggregate_id, aggregate_seq, \
             event_type, actor_id, payload) VALUES (0, 'route', '{a}', 1, 'Silent', 'm', '{{}}')"
        ))
        .await
        .unwrap();
    let id = store.last_event_id().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| *v >= id))
        .await
        .expect("the poll fallback did not wake the subscriber")
        .unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_store_opens_postgres_urls_and_reconnects() {
    let db = pg::test_db().await;
    let store = AnyStore::open(&db.url).await.unwrap();
    assert_eq!(store.backend(), "postgres");
    suite::suite_append_and_read(&store).await;
    suite::suite_conflict(&store).await;
    suite::suite_append_only(&store).await;
    let last = store.last_event_id().await.unwrap();
    store.close().await;

    // Reconnecting re-runs the (already applied) migrations and sees the data.
    let again = AnyStore::open(&db.url.replacen("postgres://", "postgresql://", 1))
        .await
        .unwrap();
    assert_eq!(again.last_event_id().await.unwrap(), last);
    assert_eq!(*again.subscribe().borrow(), last);
    again.close().await;
}
