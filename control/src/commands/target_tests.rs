//! A generated id skips the store's version lookup; the store's own check still
//! refuses the (astronomically unlikely) generated id that names an existing
//! aggregate, and nothing is appended.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::test_support::{commands, ctx, single_create};
use super::{CommandError, CreateKey, Plan, Target};
use crate::store::EventStore;
use tollgate_routing::{ApiKeySpec, EdgeEvent, KeyKind};

fn chosen_key(id: &str) -> CreateKey {
    CreateKey {
        key_id: Some(id.into()),
        kind: KeyKind::Secret,
        live: true,
        scopes: vec![],
        expires_at: None,
        allowed_origins: vec![],
    }
}

#[tokio::test]
async fn a_generated_id_that_names_an_existing_aggregate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = commands(&dir).await;
    single_create(&c, "a").await;
    let created = c
        .create_key(&ctx(), "a", chosen_key("k_taken"))
        .await
        .unwrap();
    c.revoke_key(&ctx(), "k_taken").await.unwrap();
    let store = c.store().clone();
    assert_eq!(store.version("api_key", "k_taken").await.unwrap(), 2);
    let head = store.last_event_id().await.unwrap();

    // As if the generator had drawn `k_taken` again: the config no longer has it.
    let key: ApiKeySpec = created.value.record;
    let target = Target::with_id("api_key", "k_taken", true);
    let written = c
        .execute(&ctx(), target, |config| {
            assert!(!config.api_keys.contains_key("k_taken"));
            Ok(Plan::new(vec![EdgeEvent::ApiKeyCreated { key }], ()))
        })
        .await;
    match written {
        Err(CommandError::VersionConflict {
            expected: 0,
            actual: 2,
            ..
        }) => {}
        other => panic!("expected a version conflict, got {:?}", other.map(|_| ())),
    }
    assert_eq!(store.last_event_id().await.unwrap(), head);

    // A chosen id is looked up: re-creating `k_taken` starts from its version.
    c.create_key(&ctx(), "a", chosen_key("k_taken"))
        .await
        .unwrap();
    assert_eq!(store.version("api_key", "k_taken").await.unwrap(), 3);
}
