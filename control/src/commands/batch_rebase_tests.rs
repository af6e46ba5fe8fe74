//! A batch decided on the committed state joins the open stage as decided only
//! when nothing it changes or rests on moved since; otherwise it is decided again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::Commands;
use super::batch::BatchCommand;
use super::test_support::{bind, commands, create_app, ctx, entries, single_create};

/// Decides `batch` on the committed state, lets `meanwhile` commit, then asks
/// whether the decision still holds on the open stage.
async fn holds_after(
    c: &Commands,
    batch: Vec<BatchCommand>,
    meanwhile: impl AsyncFnOnce(),
) -> bool {
    let view = c.projection.view();
    let base = super::batch::Base::of(&view);
    let decided = c.decide("admin", entries(batch), base, 0).await.unwrap();
    meanwhile().await;
    let on = c.parts().peek("admin").await.unwrap();
    c.rebase(&on, &decided, view.event_id).await.is_some()
}

#[tokio::test]
async fn a_decision_holds_when_nothing_moved() {
    let dir = tempfile::tempdir().unwrap();
    let c = commands(&dir).await;
    single_create(&c, "a").await;
    assert!(
        holds_after(
            &c,
            vec![create_app("b"), bind("b.example", "b")],
            async || {}
        )
        .await
    );
}

#[tokio::test]
async fn a_decision_holds_over_unrelated_commits() {
    let dir = tempfile::tempdir().unwrap();
    let c = commands(&dir).await;
    single_create(&c, "a").await;
    let batch = vec![create_app("b"), bind("b.example", "b")];
    assert!(holds_after(&c, batch, async || single_create(&c, "other").await).await);
}

#[tokio::test]
async fn a_decision_on_a_changed_aggregate_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let c = commands(&dir).await;
    single_create(&c, "a").await;
    // The app ends as it was, at a later version: the batch's expected version
    // is stale although its events would still apply.
    let suspend = vec![BatchCommand::SuspendApp { app: "a".into() }];
    let round_trip = async || {
        c.suspend_app(&ctx(), "a").await.unwrap();
        c.resume_app(&ctx(), "a").await.unwrap();
    };
    assert!(!holds_after(&c, suspend.clone(), round_trip).await);
    // Run whole, the batch lands on the current version.
    let written = c.batch("admin", entries(suspend), 0).await.unwrap();
    assert_eq!(written.items[0].version, 4);
}

#[tokio::test]
async fn a_decision_resting_on_a_removed_object_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let c = commands(&dir).await;
    single_create(&c, "a").await;
    // The batch changes only the hostname's aggregate; the app it names goes.
    let removed = async || {
        c.delete_app(&ctx(), "a", 0).await.unwrap();
    };
    assert!(!holds_after(&c, vec![bind("h.example", "a")], removed).await);
}
