//! Completing scheduled app deletions.
//!
//! Every tick the task looks for apps whose `deleting_until` has passed in the
//! projection and runs [`Commands::finish_deletion`] for each, which re-checks the
//! app under the group lock (it may have been resumed or removed meanwhile) and
//! appends `app_removed`. Since the projection is replayed at start, deletions that
//! fell due while the service was down complete on the first tick after a restart.

use crate::commands::{Commands, Ctx, now_unix};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The `actor_id` of events appended by the service itself.
pub const SYSTEM_ACTOR: &str = "system:grace";

/// Removes every app whose grace period has ended; returns how many.
pub async fn finish_due(commands: &Commands) -> usize {
    let now = now_unix();
    let due: Vec<String> = commands
        .projection()
        .view()
        .config
        .apps
        .values()
        .filter(|a| a.deleting_until.is_some_and(|u| u <= now))
        .map(|a| a.id.clone())
        .collect();
    let mut removed = 0;
    let ctx = Ctx::actor(SYSTEM_ACTOR);
    for id in due {
        match commands.finish_deletion(&ctx, &id, now).await {
            Ok(w) if w.changed => {
                tracing::info!(app = %id, event_id = w.event_id, "app removed after its grace period");
                removed += 1;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(app = %id, error = %e, "cannot complete the app's deletion"),
        }
    }
    removed
}

/// Runs [`finish_due`] every `tick` until `stop` turns true.
pub async fn run(commands: Arc<Commands>, tick: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        finish_due(&commands).await;
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
}
