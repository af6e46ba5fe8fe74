//! Bulk work ranks below single commands: a batch never shares its append with
//! commands staged before or after it, whichever reaches the commit lock first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::super::Commands;
use super::super::test_support::{bind, commands, create_app, entries, single_create};
use crate::metrics::ControlMetrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Waits (polling, no deadline but a generous one) until `ready` holds.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..20_000 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never came to pass: {what}");
}

/// Handles on `lock`: every caller waiting for it holds a clone of its `Arc`.
fn handles(lock: &Arc<Mutex<()>>) -> usize {
    Arc::strong_count(lock)
}

/// `(commits, events)` of `tollgate_control_group_commit_events{holds}`.
fn commits(m: &ControlMetrics, holds: &str) -> (u64, f64) {
    let family = m
        .registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "tollgate_control_group_commit_events")
        .unwrap();
    let metric = family
        .get_metric()
        .iter()
        .find(|m| m.get_label().iter().any(|l| l.value() == holds))
        .unwrap();
    let h = metric.get_histogram();
    (h.get_sample_count(), h.get_sample_sum())
}

/// With a commit under way, stages a single command and a batch behind it, in
/// the order `batch_first` says, then lets the commit end.
async fn single_and_batch_behind_a_commit(batch_first: bool) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(ControlMetrics::new().unwrap());
    let c = Arc::new(commands(&dir).await.with_metrics(metrics.clone()));
    single_create(&c, "a").await;
    assert_eq!(commits(&metrics, "commands"), (1, 1.0));
    let lock = c.groups.commit.clone();
    let under_way = lock.clone().lock_owned().await;
    let idle = handles(&lock);

    let batch = |c: Arc<Commands>| async move {
        let batch = entries(vec![create_app("b"), bind("b.example", "b")]);
        c.batch("admin", batch, 0).await.unwrap()
    };
    let single = |c: Arc<Commands>| async move { single_create(&c, "s").await };
    let (batch, single) = if batch_first {
        let b = tokio::spawn(batch(c.clone()));
        until("the batch waits for the commit lock", || {
            handles(&lock) == idle + 1
        })
        .await;
        let s = tokio::spawn(single(c.clone()));
        until("the command's commit waits too", || {
            handles(&lock) == idle + 2
        })
        .await;
        (b, s)
    } else {
        let s = tokio::spawn(single(c.clone()));
        until("the command's commit waits", || handles(&lock) == idle + 1).await;
        let b = tokio::spawn(batch(c.clone()));
        until("the batch's commit waits too", || {
            handles(&lock) == idle + 2
        })
        .await;
        (b, s)
    };
    drop(under_way);
    single.await.unwrap();
    let written = batch.await.unwrap();
    assert_eq!(written.items.len(), 2);

    // The command was appended on its own, and the batch alone, after it.
    assert_eq!(commits(&metrics, "commands"), (2, 2.0));
    assert_eq!(commits(&metrics, "batch"), (1, 2.0));
    let (first, _) = written.event_ids.unwrap();
    let s = c.projection.view();
    assert!(s.config.apps.contains_key("s") && s.config.apps.contains_key("b"));
    assert_eq!(first, 3, "the command (event 2) goes before the batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waiting_first_lets_a_later_command_commit_ahead() {
    single_and_batch_behind_a_commit(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_staged_first_commits_without_the_batch() {
    single_and_batch_behind_a_commit(false).await;
}

#[tokio::test]
async fn a_view_of_the_stage_stands_until_something_is_staged_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = commands(&dir).await;
    single_create(&c, "a").await;
    let parts = c.parts();
    // Idle: the stage rebuilt on the same projection is the same stage.
    let on = parts.peek("admin").await.unwrap();
    let turn = parts.turn("admin").await.unwrap();
    assert!(turn.is_at(&on));
    drop(turn);
    // A command staged (and committed) since: the view is stale.
    let on = parts.peek("admin").await.unwrap();
    single_create(&c, "s").await;
    assert!(!parts.turn("admin").await.unwrap().is_at(&on));
    // And a fresh view stands again.
    let on = parts.peek("admin").await.unwrap();
    assert!(on.config.apps.contains_key("s"));
    assert!(parts.turn("admin").await.unwrap().is_at(&on));
}
