//! Group commit: single commands of concurrent callers share one append.
//!
//! A commit costs a transaction and an fsync whatever it holds; one command per
//! commit capped PostgreSQL near 600 commands/s. So a command decides, checks and
//! stages its events under the group lock (steps 2-5 of the [module docs](super)),
//! against the open [`Stage`]: the projection plus the events staged before it, so
//! it sees what earlier commands of the group did, exactly as if they had run one by
//! one. Then a commit task appends the whole stage with one
//! [`EventStore::append_batch`] (each aggregate's version checked as for a single
//! append) and every member gets its own events' ids back.
//!
//! - One commit at a time (the commit lock). While one commits, the next commands
//!   stage on top of it; if it fails, the stage built on it fails too (the members
//!   get the store's error) and the next command starts over from the projection.
//! - A stage holds one actor's commands (appends carry one `actor_id`); a command of
//!   another actor waits for the open stage to commit first.
//! - A command refused, or changing nothing, on top of events not yet committed waits
//!   for them: if they fail, so does its answer, which was decided on them.
//! - A stage with nothing pending is rebuilt from a freshly synced projection, so an
//!   idle service decides each command on the end of the log, as before.
//! - Commits run in tasks of their own: a caller that goes away cannot strand the
//!   commands staged with its own.
//! - A batch joins the open stage with all its events at once ([`Parts::turn`],
//!   [`Parts::commit_turn`]), so they stay one range of ids in the append.
//! - Bulk work ranks below single commands. A batch takes the commit lock before
//!   it joins, commits the single commands staged ahead of it first, and is
//!   appended at once, alone: commands that arrive meanwhile stage after it and
//!   never share its append. So a single command waits for at most one batch's
//!   append, not for a queue of them.
//! - A batch works out how its decision lands on the open stage (the rebase) on a
//!   copy of it ([`Parts::peek`]) with no lock held, and keeps that when nothing
//!   was staged on the stage by its turn ([`Turn::is_at`]): the turn holds the
//!   locks for the append, not for the rebase as well.
//!
//! A version conflict (another process appended to a staged aggregate) fails the
//! whole stage with 409: each member may retry.

use super::{
    CommandError, Ctx, Plan, READ_YOUR_WRITES_TIMEOUT, StagedVersions, Target, Written, check,
    stage_events, staged_version,
};
use crate::metrics::{CommitHolds, ControlMetrics};
use crate::projection::{Projection, View};
use crate::store::{AnyStore, BatchEvent, EventStore, StoreError, StoredEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};
use tollgate_routing::{EdgeConfig, EdgeEvent};

/// What a stage's append came to: the stored events in stage order, or the error.
type Outcome = Result<Arc<Vec<StoredEvent>>, StoreError>;

/// The group lock's state and the commit lock, shared with commit tasks.
#[derive(Default)]
pub(crate) struct Groups {
    open: Arc<Mutex<Option<Stage>>>,
    commit: Arc<Mutex<()>>,
    /// Batches decide one at a time (off the group lock): a bulk load keeps one
    /// worker busy at most, and single commands, the feed and the API the others.
    pub(crate) batch_turn: Mutex<()>,
    /// Counts changes to the open stage's config (a command staged, the stage
    /// rebuilt on a newer projection), under the group lock: a view of the stage
    /// taken at one count is still the stage at the same count.
    generation: AtomicU64,
}

/// Commands decided and not yet appended.
struct Stage {
    actor: String,
    /// The projection's config plus every staged event (and those of the stage this
    /// one was decided on while it commits).
    config: EdgeConfig,
    /// Aggregate versions as of the staged events.
    versions: StagedVersions,
    events: Vec<BatchEvent>,
    edge: Vec<EdgeEvent>,
    /// The projection cursor the chain of stages started from.
    event_id: i64,
    done: watch::Sender<Option<Outcome>>,
    /// The stage this one continues, while it commits.
    after: Option<watch::Receiver<Option<Outcome>>>,
    /// Whether a batch joined it (for the commit metrics).
    batch: bool,
}

impl Stage {
    fn fresh(actor: &str, view: &View) -> Stage {
        Stage {
            actor: actor.to_string(),
            config: view.config.clone(),
            versions: HashMap::new(),
            events: Vec::new(),
            edge: Vec::new(),
            event_id: view.event_id,
            done: watch::channel(None).0,
            after: None,
            batch: false,
        }
    }

    /// The stage the next commands decide on while this one commits.
    fn successor(&self) -> Stage {
        Stage {
            actor: self.actor.clone(),
            config: self.config.clone(),
            versions: self.versions.clone(),
            events: Vec::new(),
            edge: Vec::new(),
            event_id: self.event_id,
            done: watch::channel(None).0,
            after: Some(self.done.subscribe()),
            batch: false,
        }
    }

    /// Whether it rests on events not committed yet.
    fn pending(&self) -> bool {
        self.waiter().is_some()
    }

    /// What resolves once everything it shows is in the log (or failed): its own
    /// commit when it holds events, else the commit of the stage it continues.
    fn waiter(&self) -> Option<watch::Receiver<Option<Outcome>>> {
        if !self.events.is_empty() {
            Some(self.done.subscribe())
        } else {
            // A stage whose predecessor failed is discarded with it; were one left,
            // it would not be pending and the next command would rebuild it.
            self.after.clone().filter(|a| a.borrow().is_none())
        }
    }
}

/// A member's place in its stage.
struct Member<T> {
    value: T,
    /// Its events' range in the stage; empty when it appended nothing.
    range: std::ops::Range<usize>,
    version: i64,
    edge: Vec<EdgeEvent>,
}

/// What the store, the projection and the metrics are, for a commit task.
#[derive(Clone)]
pub(crate) struct Parts {
    pub store: Arc<AnyStore>,
    pub projection: Arc<Projection>,
    pub metrics: Option<Arc<ControlMetrics>>,
    pub groups: Arc<Groups>,
}

impl Parts {
    /// Steps 2-7 of the [module docs](super) for a single command, in a group.
    pub(crate) async fn execute<T>(
        &self,
        ctx: &Ctx,
        target: Target,
        decide: impl FnOnce(&EdgeConfig) -> Result<Plan<T>, CommandError>,
    ) -> Result<Written<T>, CommandError> {
        let label = target.label();
        let mut open = self.lock_for(&ctx.actor).await;
        let stage = self.stage_for(&mut open, &ctx.actor).await?;
        let before = stage.events.len();
        let decided = decide_on(stage, &self.store, ctx, &target, decide).await;
        if stage.events.len() != before {
            self.groups.generation.fetch_add(1, Ordering::Relaxed);
        }
        let event_id = stage.event_id;
        // What the decision rests on that is not in the log yet: the stage's events
        // (its own included), else the stage it continues.
        let mut rests_on = stage.waiter();
        let staged = !stage.events.is_empty();
        drop(open);
        if staged {
            self.spawn_commit();
        }
        let Some(done) = rests_on.as_mut() else {
            return decided.map(|m| Written {
                value: m.value,
                event_id,
                version: m.version,
                changed: false,
                applied: true,
            });
        };
        let stored = outcome(done)
            .await
            .map_err(|e| CommandError::from_store(&label, e))?;
        let member = decided?;
        let Some(last) = stored.get(member.range.clone()).and_then(|s| s.last()) else {
            let event_id = self.projection.view().event_id.max(event_id);
            return Ok(Written {
                value: member.value,
                event_id,
                version: member.version,
                changed: false,
                applied: true,
            });
        };
        let last = last.event_id;
        if let Some(m) = &self.metrics {
            m.appends.appended(&member.edge);
        }
        tracing::info!(
            aggregate = %label,
            actor = %ctx.actor,
            event_id = last,
            version = member.version,
            events = ?member.edge.iter().map(EdgeEvent::event_type).collect::<Vec<_>>(),
            "command applied"
        );
        let applied = self
            .projection
            .wait_applied(last, READ_YOUR_WRITES_TIMEOUT)
            .await;
        if !applied {
            tracing::warn!(
                event_id = last,
                "projection did not apply the command's events in time"
            );
        }
        Ok(Written {
            value: member.value,
            event_id: last,
            version: member.version,
            changed: true,
            applied,
        })
    }

    /// The group lock, once no other actor's events are staged (a stage appends
    /// under one actor).
    async fn lock_for(&self, actor: &str) -> OwnedMutexGuard<Option<Stage>> {
        let mut open = self.groups.open.clone().lock_owned().await;
        while let Some(mut done) = open
            .as_ref()
            .filter(|s| s.actor != actor)
            .and_then(Stage::waiter)
        {
            drop(open);
            self.spawn_commit();
            let _ = outcome(&mut done).await;
            open = self.groups.open.clone().lock_owned().await;
        }
        open
    }

    /// A copy of the open stage of `actor` as it is now, for a batch to rebase on
    /// with no lock held; [`Turn::is_at`] tells whether the stage is still that.
    pub(crate) async fn peek(&self, actor: &str) -> Result<StageView, CommandError> {
        let mut guard = self.lock_for(actor).await;
        self.stage_for(&mut guard, actor).await?;
        let generation = self.groups.generation.load(Ordering::Relaxed);
        Ok(Open { guard }.view(generation)?)
    }

    /// The open stage of `actor` and the commit turn, for a batch to join and be
    /// appended at once. Single commands staged ahead of it are committed first
    /// (up to [`BATCH_YIELDS`] groups of them; past that they share its append).
    pub(crate) async fn turn(&self, actor: &str) -> Result<Turn, CommandError> {
        let mut yields = 0;
        loop {
            // The commit lock first, then the group lock: the order commits take them.
            let commit = self.groups.commit.clone().lock_owned().await;
            let mut guard = self.groups.open.clone().lock_owned().await;
            let (staged, other) = guard.as_ref().map_or((false, None), |s| {
                let other = (s.actor != actor).then(|| s.waiter()).flatten();
                (!s.events.is_empty(), other)
            });
            if staged && (yields < BATCH_YIELDS || other.is_some()) {
                yields += 1;
                if let Some(stage) = take_staged(&mut guard) {
                    drop(guard);
                    let mut done = stage.done.subscribe();
                    self.spawn_stage(stage, commit);
                    let _ = outcome(&mut done).await;
                }
                continue;
            }
            if let Some(mut done) = other {
                // Another actor's stage, appended, still telling its members.
                drop((guard, commit));
                let _ = outcome(&mut done).await;
                continue;
            }
            self.stage_for(&mut guard, actor).await?;
            return Ok(Turn {
                generation: self.groups.generation.load(Ordering::Relaxed),
                open: Open { guard },
                commit,
            });
        }
    }

    /// Stages `joining` on the turn's stage, appends it at once and waits: its
    /// events' ids, in order, or the store's error (the whole group's).
    pub(crate) async fn commit_turn(
        &self,
        turn: Turn,
        joining: Joining,
    ) -> Result<Vec<i64>, StoreError> {
        let Turn {
            mut open, commit, ..
        } = turn;
        if joining.events.is_empty() {
            drop(commit);
            self.settle(open).await?;
            return Ok(Vec::new());
        }
        let stage = open.stage_mut()?;
        let start = stage.events.len();
        stage.events.extend(joining.events);
        stage.versions.extend(joining.versions);
        stage.edge.extend(joining.edge);
        stage.config = joining.config;
        stage.batch = true;
        self.groups.generation.fetch_add(1, Ordering::Relaxed);
        let range = start..stage.events.len();
        let mut done = stage.done.subscribe();
        let taken = take_staged(&mut open.guard);
        drop(open);
        if let Some(stage) = taken {
            self.spawn_stage(stage, commit);
        }
        let stored = outcome(&mut done).await?;
        stored
            .get(range)
            .map(|events| events.iter().map(|e| e.event_id).collect())
            .ok_or_else(lost)
    }

    /// Gives up the turn without appending: waits until what its stage shows is
    /// committed, as [`Self::settle`].
    pub(crate) async fn settle_turn(&self, turn: Turn) -> Result<(), StoreError> {
        let Turn { open, commit, .. } = turn;
        drop(commit);
        self.settle(open).await
    }

    /// Releases `open` and waits until what it shows is committed: an answer
    /// decided on it (a refusal, a no-op) stands only if that commit does.
    async fn settle(&self, open: Open) -> Result<(), StoreError> {
        let waiter = open.stage()?.waiter();
        drop(open);
        if let Some(mut done) = waiter {
            self.spawn_commit();
            outcome(&mut done).await?;
        }
        Ok(())
    }

    /// The open stage, rebuilt from the synced projection when nothing is pending.
    async fn stage_for<'a>(
        &self,
        open: &'a mut OwnedMutexGuard<Option<Stage>>,
        actor: &str,
    ) -> Result<&'a mut Stage, CommandError> {
        if open.as_ref().is_none_or(|s| !s.pending()) {
            self.projection.sync().await?;
            let view = self.projection.view();
            // A stage with nothing pending is the projection at its cursor.
            if open.as_ref().is_none_or(|s| s.event_id != view.event_id) {
                self.groups.generation.fetch_add(1, Ordering::Relaxed);
            }
            **open = Some(Stage::fresh(actor, &view));
        }
        let stage = open
            .as_mut()
            .ok_or_else(|| CommandError::Store("no open stage".into()))?;
        stage.actor = actor.to_string();
        Ok(stage)
    }

    /// Commits the open stage in a task of its own (after any commit under way).
    fn spawn_commit(&self) {
        let parts = self.clone();
        tokio::spawn(async move {
            let one_at_a_time = parts.groups.commit.clone().lock_owned().await;
            parts.commit_open(one_at_a_time).await;
        });
    }

    /// Appends the open stage, if it holds events, under the commit lock; then,
    /// with the lock released so that the next stage can append, syncs the
    /// projection and tells the members.
    async fn commit_open(&self, one_at_a_time: OwnedMutexGuard<()>) {
        let taken = take_staged(&mut *self.groups.open.lock().await);
        if let Some(stage) = taken {
            self.commit_stage(stage, one_at_a_time).await;
        }
    }

    /// Commits `stage` under `commit` in a task of its own: a caller that goes away
    /// cannot cut an append.
    fn spawn_stage(&self, stage: Stage, commit: OwnedMutexGuard<()>) {
        let parts = self.clone();
        tokio::spawn(async move { parts.commit_stage(stage, commit).await });
    }

    /// Appends `stage`, taken from the open slot, under the commit lock; then, with
    /// the lock released, syncs the projection and tells the members.
    async fn commit_stage(&self, stage: Stage, one_at_a_time: OwnedMutexGuard<()>) {
        // The stage before this one failed under the same lock, or appended (its
        // outcome may still be unsent while the projection syncs).
        let before = stage.after.as_ref().and_then(|a| a.borrow().clone());
        let holds = if stage.batch {
            CommitHolds::Batch
        } else {
            CommitHolds::Commands
        };
        let (count, began) = (stage.events.len(), Instant::now());
        let result = match before {
            Some(Err(e)) => Err(e),
            _ => self.store.append_batch(&stage.actor, stage.events).await,
        };
        if let (Ok(_), Some(m)) = (&result, &self.metrics) {
            m.commits.committed(holds, count, began.elapsed());
        }
        match result {
            Ok(stored) => {
                // The next stage may append now: this one is in the log.
                drop(one_at_a_time);
                if let Err(e) = self.projection.sync_committed(&stored).await {
                    tracing::warn!(error = %e, "projection sync after a group commit failed");
                }
                stage.done.send_replace(Some(Ok(Arc::new(stored))));
            }
            Err(e) => {
                // What was decided on top of this stage fails with it.
                let mut open = self.groups.open.lock().await;
                let own = stage.done.subscribe();
                if open
                    .as_ref()
                    .and_then(|s| s.after.as_ref())
                    .is_some_and(|a| a.same_channel(&own))
                    && let Some(next) = open.take()
                {
                    next.done.send_replace(Some(Err(e.clone())));
                }
                stage.done.send_replace(Some(Err(e)));
            }
        }
    }
}

/// Groups of single commands a batch lets commit ahead of it before it joins
/// whatever is staged: a steady stream of commands cannot hold a bulk load off.
const BATCH_YIELDS: usize = 4;

/// Takes the open stage for its commit when it holds events, leaving its
/// successor open for the next commands.
fn take_staged(open: &mut Option<Stage>) -> Option<Stage> {
    match open.take() {
        Some(stage) if !stage.events.is_empty() => {
            *open = Some(stage.successor());
            Some(stage)
        }
        other => {
            *open = other;
            None
        }
    }
}

/// A batch's turn: the open stage under the group lock, and the commit lock, so
/// that its events are appended the moment they are staged.
pub(crate) struct Turn {
    open: Open,
    commit: OwnedMutexGuard<()>,
    generation: u64,
}

impl Turn {
    /// A copy of the stage the batch joins.
    pub(crate) fn view(&self) -> Result<StageView, StoreError> {
        self.open.view(self.generation)
    }

    /// Whether the stage is still the one `view` copied: nothing staged on it and
    /// not rebuilt since (commits in between leave the same config).
    pub(crate) fn is_at(&self, view: &StageView) -> bool {
        self.generation == view.generation
    }
}

/// A copy of the open stage, to decide or rebase on without the lock.
pub(crate) struct StageView {
    /// The state commands decide on: the projection's plus what is staged.
    pub config: EdgeConfig,
    /// The versions of the aggregates staged on top of the projection.
    pub versions: StagedVersions,
    /// The projection cursor the stage's config starts from.
    pub event_id: i64,
    /// Nothing staged and no commit of it under way.
    committed: bool,
    generation: u64,
}

impl StageView {
    /// Whether the stage was exactly the projection at `event_id`.
    pub(crate) fn is_committed_state_at(&self, event_id: i64) -> bool {
        self.committed && self.event_id == event_id
    }
}

/// The open stage, held under the group lock: nothing else stages meanwhile.
pub(crate) struct Open {
    guard: OwnedMutexGuard<Option<Stage>>,
}

impl Open {
    fn stage(&self) -> Result<&Stage, StoreError> {
        self.guard.as_ref().ok_or_else(lost)
    }

    fn stage_mut(&mut self) -> Result<&mut Stage, StoreError> {
        self.guard.as_mut().ok_or_else(lost)
    }

    /// A copy of the stage (the config's maps are shared, not copied).
    fn view(&self, generation: u64) -> Result<StageView, StoreError> {
        let s = self.stage()?;
        Ok(StageView {
            config: s.config.clone(),
            versions: s.versions.clone(),
            event_id: s.event_id,
            committed: !s.pending(),
            generation,
        })
    }
}

/// Events decided elsewhere (a batch) that join the open stage.
pub(crate) struct Joining {
    pub events: Vec<BatchEvent>,
    pub edge: Vec<EdgeEvent>,
    /// The versions of the aggregates they change, after them.
    pub versions: StagedVersions,
    /// The open stage's config with them applied.
    pub config: EdgeConfig,
}

/// Decides one command on `stage` and stages its events.
async fn decide_on<T>(
    stage: &mut Stage,
    store: &AnyStore,
    ctx: &Ctx,
    target: &Target,
    decide: impl FnOnce(&EdgeConfig) -> Result<Plan<T>, CommandError>,
) -> Result<Member<T>, CommandError> {
    let version = staged_version(store, &stage.versions, ctx, target).await?;
    let plan = decide(&stage.config)?;
    let start = stage.events.len();
    if plan.events.is_empty() {
        return Ok(Member {
            value: plan.value,
            range: start..start,
            version,
            edge: Vec::new(),
        });
    }
    let next = check::check(&stage.config, &plan.events, plan.check_certs)?;
    let new_version = stage_events(
        &mut stage.events,
        &mut stage.versions,
        target,
        version,
        &plan.events,
    )?;
    stage.config = next;
    stage.edge.extend(plan.events.iter().cloned());
    Ok(Member {
        value: plan.value,
        range: start..stage.events.len(),
        version: new_version,
        edge: plan.events,
    })
}

/// The outcome `done` resolves to; a dropped sender reads as a store error.
async fn outcome(done: &mut watch::Receiver<Option<Outcome>>) -> Outcome {
    match done.wait_for(Option::is_some).await {
        Ok(o) => o.clone().unwrap_or_else(|| Err(lost())),
        Err(_) => Err(lost()),
    }
}

fn lost() -> StoreError {
    StoreError::Database("the group commit ended without an outcome".into())
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
