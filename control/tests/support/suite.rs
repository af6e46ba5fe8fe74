//! The backend-independent event-store suite. Every function takes any
//! [`EventStore`] and only asserts on aggregates/projections it names itself
//! (via [`unique`]), so it also holds against a shared database.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use tokio::sync::Barrier;
use tollgate_control::store::{BatchEvent, EventStore, NewEvent, StoreError, StoredEvent};

use super::{RawSql, unique};

const WAIT: Duration = Duration::from_secs(10);

fn ev(event_type: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent::new(event_type, payload)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Every event after `cursor`, paging with `page`.
async fn read_all_after<S: EventStore>(s: &S, mut cursor: i64, page: i64) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    loop {
        let batch = s.read_after(cursor, page).await.expect("read_after");
        assert!(batch.len() as i64 <= page, "page larger than limit");
        if batch.is_empty() {
            return out;
        }
        for e in batch {
            assert!(
                e.event_id > cursor,
                "read_after returned {} after cursor {cursor}",
                e.event_id
            );
            cursor = e.event_id;
            out.push(e);
        }
    }
}

fn assert_contiguous(events: &[StoredEvent]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.aggregate_seq,
            i as i64 + 1,
            "sequence gap or duplicate: {events:#?}"
        );
    }
}

/// Appends, versions, `read_aggregate`, `read_after` order and cursor paging.
pub async fn suite_append_and_read<S: EventStore>(s: &S) {
    let a = unique("agg-a");
    let b = unique("agg-b");
    let start = s.last_event_id().await.unwrap();
    let before = now_ms();

    let payload1 = json!({"name": "r1", "hosts": ["a.example", "b.example"], "weight": 3,
                          "ratio": 0.25, "nested": {"ok": true, "none": null}, "text": "héllo ✓"});
    let a1 = s
        .append(
            "route",
            &a,
            0,
            "alice",
            vec![
                ev("RouteCreated", payload1.clone()),
                ev("RouteRenamed", json!({"name": "r2"})),
                ev("RouteEnabled", json!({})),
            ],
        )
        .await
        .expect("first append");
    let after = now_ms();
    assert_eq!(a1.len(), 3);
    assert_contiguous(&a1);
    for (e, t) in a1
        .iter()
        .zip(["RouteCreated", "RouteRenamed", "RouteEnabled"])
    {
        assert_eq!(e.aggregate_type, "route");
        assert_eq!(e.aggregate_id, a);
        assert_eq!(e.actor_id, "alice");
        assert_eq!(e.event_type, t);
        assert!(e.event_id > start);
        assert!(
            (before..=after).contains(&e.occurred_at),
            "occurred_at {} not in [{before}, {after}]",
            e.occurred_at
        );
        assert_eq!(
            e.occurred_at, a1[0].occurred_at,
            "one append, one timestamp"
        );
    }
    assert!(
        a1.windows(2).all(|w| w[0].event_id < w[1].event_id),
        "ids increase within an append"
    );
    assert_eq!(a1[0].payload, payload1);

    let b1 = s
        .append(
            "route",
            &b,
            0,
            "bob",
            vec![ev("RouteCreated", json!({"name": "b"}))],
        )
        .await
        .unwrap();
    assert_eq!(b1[0].aggregate_seq, 1);
    // Same id, other type: an independent aggregate.
    let c1 = s
        .append(
            "cluster",
            &a,
            0,
            "carol",
            vec![ev("ClusterCreated", json!([1, 2, 3]))],
        )
        .await
        .unwrap();
    assert_eq!(c1[0].aggregate_seq, 1);
    let a2 = s
        .append(
            "route",
            &a,
            3,
            "alice",
            vec![ev("RouteDisabled", json!("off"))],
        )
        .await
        .unwrap();
    assert_eq!(a2[0].aggregate_seq, 4);
    assert!(
        a2[0].event_id > c1[0].event_id
            && c1[0].event_id > b1[0].event_id
            && b1[0].event_id > a1[2].event_id
    );

    assert_eq!(s.version("route", &a).await.unwrap(), 4);
    assert_eq!(s.version("route", &b).await.unwrap(), 1);
    assert_eq!(s.version("cluster", &a).await.unwrap(), 1);
    assert_eq!(s.version("route", &unique("nobody")).await.unwrap(), 0);
    assert_eq!(s.version("cluster", &b).await.unwrap(), 0);

    let mut whole_a = a1.clone();
    whole_a.extend(a2.clone());
    assert_eq!(s.read_aggregate("route", &a).await.unwrap(), whole_a);
    assert_eq!(s.read_aggregate("cluster", &a).await.unwrap(), c1);
    assert!(
        s.read_aggregate("route", &unique("nobody"))
            .await
            .unwrap()
            .is_empty()
    );

    let mut ours: Vec<StoredEvent> = [a1.clone(), b1.clone(), c1.clone(), a2.clone()].concat();
    ours.sort_by_key(|e| e.event_id);
    let mine = |events: Vec<StoredEvent>| -> Vec<StoredEvent> {
        events
            .into_iter()
            .filter(|e| e.aggregate_id == a || e.aggregate_id == b)
            .collect()
    };
    // One big read and cursor paging (pages of 1, 2 and 3) give the same order.
    let big = s.read_after(start, 10_000).await.unwrap();
    assert!(
        big.windows(2).all(|w| w[0].event_id < w[1].event_id),
        "read_after is ordered by id"
    );
    assert_eq!(mine(big), ours);
    for page in [1, 2, 3] {
        assert_eq!(
            mine(read_all_after(s, start, page).await),
            ours,
            "paging by {page}"
        );
    }
    // Resuming from the middle skips exactly what was read.
    let rest = mine(read_all_after(s, a1[1].event_id, 2).await);
    assert_eq!(rest, ours[2..].to_vec());
    assert!(s.last_event_id().await.unwrap() >= a2[0].event_id);

    // Serde round trip of the stored shape.
    let text = serde_json::to_string(&whole_a).unwrap();
    let back: Vec<StoredEvent> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, whole_a);
}

/// Requests the store must refuse without touching the log.
pub async fn suite_invalid_requests<S: EventStore>(s: &S) {
    let a = unique("invalid");
    let one = || vec![ev("X", json!({}))];
    let cases: Vec<(&str, Result<Vec<StoredEvent>, StoreError>)> = vec![
        ("empty type", s.append("", &a, 0, "u", one()).await),
        ("empty id", s.append("route", "", 0, "u", one()).await),
        ("empty actor", s.append("route", &a, 0, "", one()).await),
        (
            "negative version",
            s.append("route", &a, -1, "u", one()).await,
        ),
        ("no events", s.append("route", &a, 0, "u", vec![]).await),
        (
            "empty event type",
            s.append("route", &a, 0, "u", vec![ev("", json!(1))]).await,
        ),
    ];
    for (what, result) in cases {
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{what}: {result:?}"
        );
    }
    assert_eq!(s.version("route", &a).await.unwrap(), 0);
    assert!(matches!(
        s.read_after(0, 0).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.read_after(0, -5).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.save_checkpoint("", 1).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.save_checkpoint(&unique("p"), -1).await,
        Err(StoreError::Invalid(_))
    ));
}

/// A stale expected version is a `Conflict` and appends nothing.
pub async fn suite_conflict<S: EventStore>(s: &S) {
    let a = unique("conflict");
    s.append(
        "route",
        &a,
        0,
        "u",
        vec![ev("A", json!(1)), ev("B", json!(2))],
    )
    .await
    .unwrap();
    let last = s.last_event_id().await.unwrap();

    match s.append("route", &a, 0, "u", vec![ev("C", json!(3))]).await {
        Err(StoreError::Conflict {
            expected: 0,
            actual: 2,
        }) => {}
        other => panic!("expected Conflict{{0, 2}}, got {other:?}"),
    }
    match s.append("route", &a, 5, "u", vec![ev("C", json!(3))]).await {
        Err(StoreError::Conflict {
            expected: 5,
            actual: 2,
        }) => {}
        other => panic!("expected Conflict{{5, 2}}, got {other:?}"),
    }
    match s
        .append(
            "route",
            &a,
            1,
            "u",
            vec![ev("C", json!(3)), ev("D", json!(4))],
        )
        .await
    {
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2,
        }) => {}
        other => panic!("expected Conflict{{1, 2}}, got {other:?}"),
    }
    let events = s.read_aggregate("route", &a).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["A", "B"]
    );
    assert!(
        s.read_after(last, 1000)
            .await
            .unwrap()
            .iter()
            .all(|e| e.aggregate_id != a),
        "a conflicting append left events behind"
    );
    let err = s
        .append("route", &a, 0, "u", vec![ev("C", json!(3))])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("conflict"), "{err}");
    // The right version still works.
    let c = s
        .append("route", &a, 2, "u", vec![ev("C", json!(3))])
        .await
        .unwrap();
    assert_eq!(c[0].aggregate_seq, 3);
}

/// 20 concurrent appenders on one aggregate: exactly the winners' events are
/// stored, seqs contiguous, nothing duplicated or lost.
pub async fn suite_concurrent_same_aggregate<S: EventStore>(s: &S) {
    const N: usize = 20;

    // Round 1: everybody reads the same version, then all append at once.
    let a = unique("race");
    s.append("route", &a, 0, "seed", vec![ev("Seed", json!(0))])
        .await
        .unwrap();
    let barrier = Barrier::new(N);
    let results = join_all((0..N).map(|i| {
        let (a, barrier) = (&a, &barrier);
        async move {
            let v = s.version("route", a).await.unwrap();
            barrier.wait().await;
            s.append(
                "route",
                a,
                v,
                &format!("w{i}"),
                vec![
                    ev("Step", json!({"writer": i, "part": 0})),
                    ev("Step", json!({"writer": i, "part": 1})),
                ],
            )
            .await
        }
    }))
    .await;
    let winners: Vec<&Vec<StoredEvent>> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {N} same-version appends wins: {results:?}"
    );
    for r in &results {
        match r {
            Ok(_) => {}
            Err(StoreError::Conflict {
                expected: 1,
                actual: 3,
            }) => {}
            Err(e) => panic!("loser must see Conflict{{1, 3}}, got {e:?}"),
        }
    }
    let stored = s.read_aggregate("route", &a).await.unwrap();
    assert_contiguous(&stored);
    assert_eq!(stored.len(), 3);
    assert_eq!(&stored[1..], winners[0].as_slice());

    // Round 2: everybody retries on conflict until it gets in.
    let b = unique("race-retry");
    let results = join_all((0..N).map(|i| {
        let b = &b;
        async move {
            let mut conflicts = 0;
            loop {
                let v = s.version("route", b).await.unwrap();
                match s
                    .append(
                        "route",
                        b,
                        v,
                        &format!("w{i}"),
                        vec![ev("Step", json!({"writer": i}))],
                    )
                    .await
                {
                    Ok(mut stored) => return (stored.remove(0), conflicts),
                    Err(StoreError::Conflict { expected, actual }) => {
                        assert_eq!(expected, v);
                        assert!(
                            actual > expected,
                            "conflict must report progress: {actual} vs {expected}"
                        );
                        conflicts += 1;
                        assert!(conflicts < 500, "writer {i} starved");
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("writer {i}: {e}"),
                }
            }
        }
    }))
    .await;
    let mut appended: Vec<StoredEvent> = results.iter().map(|(e, _)| e.clone()).collect();
    appended.sort_by_key(|e| e.aggregate_seq);
    let stored = s.read_aggregate("route", &b).await.unwrap();
    assert_eq!(stored.len(), N);
    assert_contiguous(&stored);
    assert_eq!(
        stored, appended,
        "stored events are exactly the successful appends"
    );
    let writers: BTreeSet<i64> = stored
        .iter()
        .map(|e| e.payload["writer"].as_i64().unwrap())
        .collect();
    assert_eq!(writers.len(), N, "every writer exactly once");
    let ids: BTreeSet<i64> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), N);
}

/// Follows the log from `start` until `total` of the events tagged `tag` were
/// seen (or panics after [`WAIT`] past `writers_done`). With `wake`, it sleeps
/// on the subscription between reads, otherwise it polls.
async fn follow<S: EventStore>(
    s: &S,
    start: i64,
    tag: &str,
    total: usize,
    writers_done: &AtomicBool,
    wake: bool,
) -> Vec<StoredEvent> {
    let mut rx = s.subscribe();
    let mut cursor = start;
    let mut seen = Vec::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let batch = s.read_after(cursor, 7).await.expect("follower read_after");
        let empty = batch.is_empty();
        for e in batch {
            assert!(
                e.event_id > cursor,
                "ids go backwards: {} after {cursor}",
                e.event_id
            );
            cursor = e.event_id;
            if e.aggregate_id.starts_with(tag) {
                seen.push(e);
            }
        }
        if seen.len() >= total {
            return seen;
        }
        if writers_done.load(Ordering::SeqCst) {
            let d = *deadline.get_or_insert_with(|| Instant::now() + WAIT);
            assert!(
                Instant::now() < d,
                "follower (wake={wake}) saw {} of {total} events; cursor {cursor}",
                seen.len()
            );
        }
        if empty {
            if wake {
                // The wake-up is only a hint: also re-read every 200 ms.
                let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
            } else {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// Several writers on different aggregates all succeed with strictly
/// increasing ids while a polling follower and a wake-driven follower read by
/// cursor: both see every event exactly once, in id order (no gaps).
pub async fn suite_concurrent_appends_and_followers<S: EventStore>(s: &S) {
    const WRITERS: usize = 8;
    const APPENDS: usize = 25;
    let batch_len = |i: usize| if i.is_multiple_of(3) { 2 } else { 1 };
    let total: usize = WRITERS * (0..APPENDS).map(batch_len).sum::<usize>();

    let tag = unique("follow");
    let start = s.last_event_id().await.unwrap();
    let done = AtomicBool::new(false);

    let writers = async {
        let written = join_all((0..WRITERS).map(|w| {
            let agg = format!("{tag}-w{w}");
            async move {
                let mut version = 0;
                let mut mine = Vec::new();
                for i in 0..APPENDS {
                    let events = (0..batch_len(i))
                        .map(|k| ev("Tick", json!({"writer": w, "append": i, "k": k})))
                        .collect();
                    let stored = s
                        .append("follow", &agg, version, "writer", events)
                        .await
                        .unwrap_or_else(|e| panic!("writer {w} append {i}: {e}"));
                    version += stored.len() as i64;
                    mine.extend(stored);
                }
                mine
            }
        }))
        .await;
        done.store(true, Ordering::SeqCst);
        written
    };
    let (written, polled, woken) = tokio::join!(
        writers,
        follow(s, start, &tag, total, &done, false),
        follow(s, start, &tag, total, &done, true),
    );

    for mine in &written {
        assert_contiguous(mine);
    }
    let mut all: Vec<StoredEvent> = written.into_iter().flatten().collect();
    all.sort_by_key(|e| e.event_id);
    assert_eq!(all.len(), total);
    let ids: BTreeSet<i64> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), total, "event ids are unique");
    assert_eq!(
        polled, all,
        "the polling follower saw every event exactly once, in order"
    );
    assert_eq!(
        woken, all,
        "the wake-driven follower saw every event exactly once, in order"
    );

    // Per aggregate the stored order matches seq order and the id order.
    let mut per_agg: BTreeMap<&str, Vec<&StoredEvent>> = BTreeMap::new();
    for e in &all {
        per_agg.entry(e.aggregate_id.as_str()).or_default().push(e);
    }
    assert_eq!(per_agg.len(), WRITERS);
    for events in per_agg.values() {
        assert!(
            events
                .windows(2)
                .all(|w| w[1].aggregate_seq == w[0].aggregate_seq + 1)
        );
    }
}

/// UPDATE and DELETE on `events` fail in the database; the row is unchanged.
pub async fn suite_append_only<S: EventStore + RawSql>(s: &S) {
    let a = unique("immutable");
    let stored = s
        .append(
            "route",
            &a,
            0,
            "u",
            vec![ev("A", json!({"v": 1})), ev("B", json!({"v": 2}))],
        )
        .await
        .unwrap();
    let id = stored[0].event_id;

    let attempts = [
        format!("UPDATE events SET event_type = 'Tampered' WHERE event_id = {id}"),
        format!("UPDATE events SET aggregate_seq = aggregate_seq + 100 WHERE event_id = {id}"),
        format!("UPDATE events SET actor_id = 'mallory' WHERE aggregate_id = '{a}'"),
        format!("DELETE FROM events WHERE event_id = {id}"),
        format!("DELETE FROM events WHERE aggregate_id = '{a}'"),
        "DELETE FROM events".to_string(),
    ];
    for sql in attempts {
        match s.raw_execute(sql.clone()).await {
            Err(e) => assert!(e.contains("append-only"), "{sql}: unexpected error {e}"),
            Ok(n) => panic!("{sql}: the database allowed it ({n} rows)"),
        }
    }
    assert_eq!(
        s.read_aggregate("route", &a).await.unwrap(),
        stored,
        "rows unchanged"
    );

    // Checkpoints are not append-only.
    let p = unique("raw-cp");
    s.save_checkpoint(&p, 1).await.unwrap();
    s.raw_execute(format!(
        "UPDATE projection_checkpoints SET last_applied_event_id = 2 WHERE name = '{p}'"
    ))
    .await
    .unwrap();
    assert_eq!(s.checkpoint(&p).await.unwrap(), 2);
}

/// Checkpoints: 0 when unknown, upserted, independent per projection.
pub async fn suite_checkpoints<S: EventStore>(s: &S) {
    let p = unique("projection");
    let q = unique("projection");
    assert_eq!(s.checkpoint(&p).await.unwrap(), 0);
    s.save_checkpoint(&p, 5).await.unwrap();
    assert_eq!(s.checkpoint(&p).await.unwrap(), 5);
    s.save_checkpoint(&p, 42).await.unwrap();
    assert_eq!(s.checkpoint(&p).await.unwrap(), 42);
    assert_eq!(s.checkpoint(&q).await.unwrap(), 0);
    s.save_checkpoint(&q, 7).await.unwrap();
    assert_eq!(s.checkpoint(&q).await.unwrap(), 7);
    assert_eq!(s.checkpoint(&p).await.unwrap(), 42);
    // Rebuilding a projection may move it back.
    s.save_checkpoint(&p, 0).await.unwrap();
    assert_eq!(s.checkpoint(&p).await.unwrap(), 0);
}

/// `subscribe()` wakes on append within a bounded wait and starts at the last id.
pub async fn suite_subscribe<S: EventStore>(s: &S) {
    let mut rx = s.subscribe();
    let initial = *rx.borrow_and_update();
    assert!(initial <= s.last_event_id().await.unwrap());

    let a = unique("wake");
    let stored = s
        .append(
            "route",
            &a,
            0,
            "u",
            vec![ev("A", json!(1)), ev("B", json!(2))],
        )
        .await
        .unwrap();
    let last = stored[1].event_id;
    tokio::time::timeout(WAIT, rx.wait_for(|v| *v >= last))
        .await
        .expect("no wake-up within the bound")
        .expect("store dropped the sender");

    let stored = s
        .append("route", &a, 2, "u", vec![ev("C", json!(3))])
        .await
        .unwrap();
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .expect("second wake-up")
        .unwrap();
    assert!(*rx.borrow_and_update() >= stored[0].event_id);

    // A late subscriber starts at (at least) the current position.
    assert!(*s.subscribe().borrow() >= stored[0].event_id);
}

fn batch_ev(kind: &str, id: &str, expected: i64, event_type: &str) -> BatchEvent {
    BatchEvent {
        aggregate_type: kind.into(),
        aggregate_id: id.into(),
        expected_version: expected,
        event: ev(event_type, json!({ "id": id })),
    }
}

/// Multi-aggregate batches: in order, one contiguous id range, versions going
/// on per aggregate; any stale version or bad item appends nothing.
pub async fn suite_append_batch<S: EventStore>(s: &S) {
    let a = unique("batch-a");
    let b = unique("batch-b");
    s.append("app", &a, 0, "alice", vec![ev("Created", json!({}))])
        .await
        .unwrap();
    let stored = s
        .append_batch(
            "bob",
            vec![
                batch_ev("app", &a, 1, "Changed"),
                batch_ev("hostname", &b, 0, "Bound"),
                batch_ev("app", &a, 2, "Changed"),
            ],
        )
        .await
        .unwrap();
    let ids: Vec<i64> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids,
        vec![ids[0], ids[0] + 1, ids[0] + 2],
        "one contiguous range"
    );
    let seqs: Vec<(&str, i64)> = stored
        .iter()
        .map(|e| (e.aggregate_type.as_str(), e.aggregate_seq))
        .collect();
    assert_eq!(seqs, [("app", 2), ("hostname", 1), ("app", 3)]);
    assert!(stored.iter().all(|e| e.actor_id == "bob"));
    assert_eq!(s.version("app", &a).await.unwrap(), 3);
    assert_eq!(s.version("hostname", &b).await.unwrap(), 1);
    assert_eq!(s.read_after(ids[0] - 1, 10).await.unwrap()[..3], stored[..]);

    // A stale version anywhere: nothing of the batch is appended.
    let last = s.last_event_id().await.unwrap();
    let stale = s
        .append_batch(
            "bob",
            vec![
                batch_ev("hostname", &unique("batch-c"), 0, "Bound"),
                batch_ev("app", &a, 2, "Changed"),
            ],
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(StoreError::Conflict {
                expected: 2,
                actual: 3
            })
        ),
        "{stale:?}"
    );
    // A gap in one aggregate's versions within the batch is a conflict too.
    let gap = s
        .append_batch(
            "bob",
            vec![
                batch_ev("app", &a, 3, "Changed"),
                batch_ev("app", &a, 5, "Changed"),
            ],
        )
        .await;
    assert!(matches!(gap, Err(StoreError::Conflict { .. })), "{gap:?}");
    for invalid in [
        vec![],
        vec![batch_ev("", &a, 3, "Changed")],
        vec![batch_ev("app", &a, -1, "Changed")],
        vec![batch_ev("app", &a, 3, "")],
    ] {
        let r = s.append_batch("bob", invalid).await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    }
    assert!(matches!(
        s.append_batch("", vec![batch_ev("app", &a, 3, "Changed")])
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.version("app", &a).await.unwrap(), 3);
    let after: Vec<StoredEvent> = s.read_after(last, 100).await.unwrap();
    assert!(
        after.iter().all(|e| e.aggregate_id != a),
        "a refused batch appended: {after:?}"
    );
}

/// A batch larger than any one statement a backend builds (hundreds of
/// aggregates, some with history, some touched twice): every event in order,
/// each version checked; a stale version at the very end appends nothing.
pub async fn suite_large_batch<S: EventStore>(s: &S) {
    let tag = unique("large");
    let old: Vec<String> = (0..50).map(|i| format!("{tag}-old-{i}")).collect();
    for id in &old {
        s.append("app", id, 0, "alice", vec![ev("Created", json!({}))])
            .await
            .unwrap();
    }
    // 50 known apps (version 1) twice each, then 450 new ones: 550 events.
    let mut events: Vec<BatchEvent> = Vec::new();
    for round in 1..=2 {
        events.extend(old.iter().map(|id| batch_ev("app", id, round, "Changed")));
    }
    events.extend((0..450).map(|i| batch_ev("key", &format!("{tag}-new-{i}"), 0, "Created")));
    let expected: Vec<(String, i64)> = events
        .iter()
        .map(|e| (e.aggregate_id.clone(), e.expected_version + 1))
        .collect();

    let mut stale = events.clone();
    stale.push(batch_ev("app", &old[0], 1, "Changed"));
    let before = s.last_event_id().await.unwrap();
    let r = s.append_batch("bob", stale).await;
    assert!(
        matches!(
            r,
            Err(StoreError::Conflict {
                expected: 1,
                actual: 3
            })
        ),
        "{r:?}"
    );
    assert_eq!(
        s.last_event_id().await.unwrap(),
        before,
        "a refused batch appended"
    );

    let stored = s.append_batch("bob", events).await.unwrap();
    let got: Vec<(String, i64)> = stored
        .iter()
        .map(|e| (e.aggregate_id.clone(), e.aggregate_seq))
        .collect();
    assert_eq!(got, expected, "stored out of order or with wrong versions");
    let first = stored[0].event_id;
    assert!(
        stored.iter().zip(first..).all(|(e, id)| e.event_id == id),
        "not one contiguous range"
    );
    assert_eq!(s.read_after(first - 1, 550).await.unwrap(), stored);
    assert_eq!(s.version("app", &old[49]).await.unwrap(), 3);
    assert_eq!(
        s.version("key", &format!("{tag}-new-449")).await.unwrap(),
        1
    );
}

/// Concurrent batches and single appends: every batch's events form one
/// contiguous range of ids holding nothing else.
pub async fn suite_concurrent_batches<S: EventStore>(s: &S) {
    let tag = unique("cbatch");
    let results = join_all((0..6).map(|w| {
        let tag = tag.clone();
        async move {
            let mut ranges = Vec::new();
            for round in 0..5 {
                let events: Vec<BatchEvent> = (0..20)
                    .map(|i| batch_ev("app", &format!("{tag}-{w}-{round}-{i}"), 0, "Created"))
                    .collect();
                let stored = s.append_batch("w", events).await.unwrap();
                ranges.push((
                    format!("{tag}-{w}-{round}-"),
                    stored.first().unwrap().event_id,
                    stored.last().unwrap().event_id,
                ));
                s.append(
                    "app",
                    &format!("{tag}-single-{w}-{round}"),
                    0,
                    "w",
                    vec![ev("Created", json!({}))],
                )
                .await
                .unwrap();
            }
            ranges
        }
    }))
    .await;
    let all = read_all_after(s, 0, 1000).await;
    for (prefix, first, last) in results.into_iter().flatten() {
        assert_eq!(last - first + 1, 20, "{prefix}: not one contiguous range");
        let inside: Vec<&StoredEvent> = all
            .iter()
            .filter(|e| e.event_id >= first && e.event_id <= last)
            .collect();
        assert_eq!(inside.len(), 20);
        assert!(
            inside.iter().all(|e| e.aggregate_id.starts_with(&prefix)),
            "{prefix}: another writer's event inside the batch's range"
        );
    }
}
