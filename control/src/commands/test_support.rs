//! What the command tests share: a service on a fresh SQLite log, and commands.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::batch::{BatchCommand, BatchEntry};
use super::{Commands, CreateApp, Ctx};
use crate::projection::Projection;
use crate::store::AnyStore;
use std::sync::Arc;

pub(super) async fn commands(dir: &tempfile::TempDir) -> Commands {
    let path = dir.path().join("events.db");
    let store = Arc::new(AnyStore::open(path.to_str().unwrap()).await.unwrap());
    let projection = Projection::start(store.clone()).await.unwrap();
    Commands::new(store, projection)
}

pub(super) fn ctx() -> Ctx {
    Ctx {
        actor: "admin".into(),
        expected_version: None,
    }
}

pub(super) fn entries(commands: Vec<BatchCommand>) -> Vec<BatchEntry> {
    commands
        .into_iter()
        .map(|command| BatchEntry {
            command,
            if_match: None,
        })
        .collect()
}

pub(super) fn create_app(id: &str) -> BatchCommand {
    BatchCommand::CreateApp {
        id: id.into(),
        auth: None,
    }
}

pub(super) fn bind(hostname: &str, app: &str) -> BatchCommand {
    BatchCommand::BindHostname {
        hostname: hostname.into(),
        app: app.into(),
    }
}

pub(super) async fn single_create(c: &Commands, id: &str) {
    c.create_app(
        &ctx(),
        CreateApp {
            id: id.into(),
            auth: None,
        },
    )
    .await
    .unwrap();
}
