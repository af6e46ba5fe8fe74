//! Batches: a list of commands applied atomically (`POST /api/v1/batch`).
//!
//! [`Commands::batch`] runs every item, in order, through the same command code
//! as the single endpoints, on a private [`Commands`] whose `execute` is staged
//! ([`execute_staged`]): it decides against the batch's own config (a base plus
//! the effects of the earlier items, so an item may use what an earlier one
//! created), applies the events to it (404/409 as for a single command) and
//! collects them instead of appending. Then:
//!
//! 1. the result is checked once, as a single command's result is (routing
//!    validation, and every certificate when an item touched certificates).
//!    Only the batch's result has to be servable, not each step on the way. On
//!    failure the item to blame is found by bisection: the first prefix of the
//!    batch whose result fails ends with it;
//! 2. the events join the open stage of the `group` module on the batch's turn
//!    to append: after the single commands staged ahead of it are committed,
//!    and appended at once, alone, in one store transaction
//!    ([`EventStore::append_batch`]): all or nothing, the batch's events one
//!    contiguous range of event ids, each aggregate's version checked;
//! 3. the answer waits until the projection shows the batch.
//!
//! The base of steps 1 and 2 is first the committed state, with no group lock
//! held, so that single commands go on staging and committing while a large
//! batch is decided (batches take turns at this: one decides at a time, on the
//! low-priority thread of the `bulk_lane` module). On its
//! turn the decision is kept when it is what deciding on the open stage would
//! give: no aggregate it changes was staged or committed since, and its events
//! still apply to the open stage and check there (`rebase`). Otherwise it is
//! decided again with the open stage as the base, holding the lock, as a single
//! command is.
//!
//! Any failing item fails the whole batch ([`BatchError::Item`] names it) and
//! nothing is written.

use super::check;
use super::group::{Joining, Parts, StageView, Turn};
use super::{CommandError, Commands, CreateApp, CreateKey, Ctx, Plan, Target, UploadCert, Written};
use crate::projection::View;
use crate::store::{AnyStore, BatchEvent, EventStore};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use tokio::sync::Mutex;
use tollgate_routing::{
    AuthPolicy, ClusterSpec, EdgeConfig, EdgeEvent, EndpointSpec, OidcIssuerSpec, PortPolicy,
    RouteSpec, Scope,
};

/// Most commands in one batch.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Largest batch request body (certificates are a few KB each).
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// One command of a batch: `op` names it, the other fields are the single
/// endpoint's path parameters and body (see `control/API.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchCommand {
    CreateApp {
        id: String,
        #[serde(default)]
        auth: Option<AuthPolicy>,
    },
    SuspendApp {
        app: String,
    },
    ResumeApp {
        app: String,
    },
    SetAppAuth {
        app: String,
        auth: Option<AuthPolicy>,
    },
    DeleteApp {
        app: String,
        #[serde(default)]
        grace_seconds: Option<u64>,
    },
    ConfigureUpstream {
        app: String,
        name: String,
        cluster: Value,
    },
    AddInstance {
        app: String,
        upstream: String,
        instance: EndpointSpec,
    },
    RemoveInstance {
        app: String,
        upstream: String,
        address: String,
    },
    SetLimits {
        app: String,
        limits: Value,
    },
    CreateKey {
        app: String,
        #[serde(default)]
        key: Option<CreateKey>,
    },
    RevokeKey {
        key_id: String,
    },
    CreateRoute {
        route: Box<RouteSpec>,
    },
    DeleteRoute {
        id: String,
    },
    BindHostname {
        hostname: String,
        app: String,
    },
    RebindHostname {
        hostname: String,
        from: String,
        to: String,
    },
    UnbindHostname {
        hostname: String,
    },
    UploadCertificate {
        certificate: UploadCert,
    },
    RotateCertificate {
        id: String,
        cert_pem: String,
        key_pem: String,
    },
    RemoveCertificate {
        id: String,
    },
    ConfigureIssuer {
        issuer: OidcIssuerSpec,
    },
    RemoveIssuer {
        name: String,
    },
    SetApiHosts {
        hosts: Vec<String>,
    },
    SetPortPolicy {
        policy: PortPolicy,
    },
}

/// A batch item: the command and an optional `if_match` aggregate version.
#[derive(Debug, Clone)]
pub struct BatchEntry {
    pub command: BatchCommand,
    pub if_match: Option<i64>,
}

impl BatchEntry {
    /// Parses one item of a batch body (400 with serde's message).
    pub fn from_json(mut item: Value) -> Result<BatchEntry, CommandError> {
        let Some(obj) = item.as_object_mut() else {
            return Err(CommandError::BadRequest(
                "a batch item must be a JSON object with an `op`".into(),
            ));
        };
        let if_match = match obj.remove("if_match") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                CommandError::BadRequest("if_match must be an aggregate version (a number)".into())
            })?),
        };
        let command = serde_json::from_value(item)
            .map_err(|e| CommandError::BadRequest(format!("invalid command: {e}")))?;
        Ok(BatchEntry { command, if_match })
    }
}

impl BatchCommand {
    /// The `op` tag.
    pub fn op(&self) -> &'static str {
        use BatchCommand::*;
        match self {
            CreateApp { .. } => "create_app",
            SuspendApp { .. } => "suspend_app",
            ResumeApp { .. } => "resume_app",
            SetAppAuth { .. } => "set_app_auth",
            DeleteApp { .. } => "delete_app",
            ConfigureUpstream { .. } => "configure_upstream",
            AddInstance { .. } => "add_instance",
            RemoveInstance { .. } => "remove_instance",
            SetLimits { .. } => "set_limits",
            CreateKey { .. } => "create_key",
            RevokeKey { .. } => "revoke_key",
            CreateRoute { .. } => "create_route",
            DeleteRoute { .. } => "delete_route",
            BindHostname { .. } => "bind_hostname",
            RebindHostname { .. } => "rebind_hostname",
            UnbindHostname { .. } => "unbind_hostname",
            UploadCertificate { .. } => "upload_certificate",
            RotateCertificate { .. } => "rotate_certificate",
            RemoveCertificate { .. } => "remove_certificate",
            ConfigureIssuer { .. } => "configure_issuer",
            RemoveIssuer { .. } => "remove_issuer",
            SetApiHosts { .. } => "set_api_hosts",
            SetPortPolicy { .. } => "set_port_policy",
        }
    }
}

/// What one item did.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub op: &'static str,
    /// The status the single endpoint would answer (201 for a create that
    /// appended, 200 otherwise).
    pub status: u16,
    /// The field the single endpoint answers with (`app`, `key`, ...).
    pub name: &'static str,
    pub value: Value,
    /// The aggregate's version after the item.
    pub version: i64,
    pub changed: bool,
    /// First and last event id the item appended; `None` when it changed nothing.
    pub event_ids: Option<(i64, i64)>,
}

/// What a batch did.
#[derive(Debug, Clone)]
pub struct BatchWritten {
    pub items: Vec<BatchItem>,
    /// First and last event id of the batch; `None` when nothing was appended.
    pub event_ids: Option<(i64, i64)>,
    /// The last appended event; the projection cursor when nothing was appended.
    pub event_id: i64,
    /// Whether the projection showed the events before the answer.
    pub applied: bool,
}

/// Why a batch wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Item `index` failed (or made the result invalid).
    #[error("command {index} ({op}): {error}")]
    Item {
        index: usize,
        op: &'static str,
        error: CommandError,
    },
    /// The batch as a whole: empty, too large, or the store refused it.
    #[error(transparent)]
    Batch(CommandError),
}

/// The batch's config and the events collected so far.
pub(crate) struct Stage {
    config: EdgeConfig,
    /// Aggregate versions as of the batch so far.
    versions: super::StagedVersions,
    events: Vec<BatchEvent>,
    /// The same events decoded, for re-checking prefixes of the batch.
    edge: Vec<EdgeEvent>,
    check_certs: bool,
    /// The projection cursor the batch's decisions start from.
    event_id: i64,
}

/// `Commands::execute` on a batch's private instance (see the module docs).
pub(crate) async fn execute_staged<T>(
    store: &AnyStore,
    stage: &Mutex<Stage>,
    ctx: &Ctx,
    target: Target,
    decide: impl FnOnce(&EdgeConfig) -> Result<Plan<T>, CommandError>,
) -> Result<Written<T>, CommandError> {
    let mut stage = stage.lock().await;
    let version = super::staged_version(store, &stage.versions, ctx, &target).await?;
    let plan = decide(&stage.config)?;
    if plan.events.is_empty() {
        return Ok(Written {
            value: plan.value,
            event_id: stage.event_id,
            version,
            changed: false,
            applied: true,
        });
    }
    for e in &plan.events {
        stage.config.apply(e).map_err(CommandError::from_edge)?;
    }
    let stage = &mut *stage;
    let new_version = super::stage_events(
        &mut stage.events,
        &mut stage.versions,
        &target,
        version,
        &plan.events,
    )?;
    stage.edge.extend(plan.events);
    stage.check_certs |= plan.check_certs;
    Ok(Written {
        value: plan.value,
        event_id: stage.event_id,
        version: new_version,
        changed: true,
        applied: true,
    })
}

/// An item's answer as JSON, under the name the single endpoint uses.
type Outcome = (&'static str, bool, Written<Value>);

fn json<T: serde::Serialize>(name: &'static str, created: bool, w: Written<T>) -> Outcome {
    (
        name,
        created,
        w.map(|v| serde_json::to_value(v).unwrap_or(Value::Null)),
    )
}

/// Runs one item on the batch's private instance.
async fn run(
    c: &Commands,
    ctx: &Ctx,
    command: BatchCommand,
    default_grace_seconds: u64,
) -> Result<Outcome, CommandError> {
    use BatchCommand as B;
    Ok(match command {
        B::CreateApp { id, auth } => json(
            "app",
            true,
            c.create_app(ctx, CreateApp { id, auth }).await?,
        ),
        B::SuspendApp { app } => json("app", false, c.suspend_app(ctx, &app).await?),
        B::ResumeApp { app } => json("app", false, c.resume_app(ctx, &app).await?),
        B::SetAppAuth { app, auth } => json("app", false, c.set_app_auth(ctx, &app, auth).await?),
        B::DeleteApp { app, grace_seconds } => {
            let grace = grace_seconds.unwrap_or(default_grace_seconds);
            json("app", false, c.delete_app(ctx, &app, grace).await?)
        }
        B::ConfigureUpstream { app, name, cluster } => {
            let cluster = upstream_settings(cluster)?;
            json(
                "app",
                false,
                c.configure_upstream(ctx, &app, &name, cluster).await?,
            )
        }
        B::AddInstance {
            app,
            upstream,
            instance,
        } => json(
            "app",
            true,
            c.add_instance(ctx, &app, &upstream, instance).await?,
        ),
        B::RemoveInstance {
            app,
            upstream,
            address,
        } => json(
            "app",
            false,
            c.remove_instance(ctx, &app, &upstream, &address).await?,
        ),
        B::SetLimits { app, limits } => json("app", false, c.set_limits(ctx, &app, limits).await?),
        B::CreateKey { app, key } => {
            let req = match key {
                Some(k) => k,
                None => serde_json::from_value(Value::Object(Default::default()))
                    .map_err(|e| CommandError::BadRequest(e.to_string()))?,
            };
            json("key", true, c.create_key(ctx, &app, req).await?)
        }
        B::RevokeKey { key_id } => {
            let w = c.revoke_key(ctx, &key_id).await?;
            // The record without its hash, as `DELETE /api/v1/keys/{key_id}`.
            json(
                "key",
                false,
                w.map(|k| serde_json::json!({ "key_id": k.key_id, "app": k.app })),
            )
        }
        B::CreateRoute { route } => json("route", true, c.create_route(ctx, *route).await?),
        B::DeleteRoute { id } => json("route", false, c.delete_route(ctx, &id).await?),
        B::BindHostname { hostname, app } => json(
            "hostname",
            true,
            c.bind_hostname(ctx, &hostname, &app).await?,
        ),
        B::RebindHostname { hostname, from, to } => json(
            "hostname",
            false,
            c.rebind_hostname(ctx, &hostname, &from, &to).await?,
        ),
        B::UnbindHostname { hostname } => {
            json("hostname", false, c.unbind_hostname(ctx, &hostname).await?)
        }
        B::UploadCertificate { certificate } => json(
            "certificate",
            true,
            c.upload_certificate(ctx, certificate).await?,
        ),
        B::RotateCertificate {
            id,
            cert_pem,
            key_pem,
        } => json(
            "certificate",
            false,
            c.rotate_certificate(ctx, &id, cert_pem, key_pem).await?,
        ),
        B::RemoveCertificate { id } => {
            json("certificate", false, c.remove_certificate(ctx, &id).await?)
        }
        B::ConfigureIssuer { issuer } => {
            json("issuer", true, c.configure_issuer(ctx, issuer).await?)
        }
        B::RemoveIssuer { name } => json("issuer", false, c.remove_issuer(ctx, &name).await?),
        B::SetApiHosts { hosts } => json("api_hosts", false, c.set_api_hosts(ctx, hosts).await?),
        B::SetPortPolicy { policy } => {
            json("port_policy", false, c.set_port_policy(ctx, policy).await?)
        }
    })
}

/// Upstream settings as `PUT .../upstreams/{name}` takes them: without endpoints.
pub fn upstream_settings(mut value: Value) -> Result<ClusterSpec, CommandError> {
    let Some(obj) = value.as_object_mut() else {
        return Err(CommandError::BadRequest(
            "upstream settings must be a JSON object".into(),
        ));
    };
    obj.entry("endpoints")
        .or_insert_with(|| Value::Array(Vec::new()));
    serde_json::from_value(value)
        .map_err(|e| CommandError::BadRequest(format!("invalid upstream settings: {e}")))
}

/// The item to blame for `error`, the failure of the whole batch's result: the
/// last item of the shortest failing prefix, found by bisection (`ends[i]` is
/// the number of events after item `i`).
fn culprit(
    start: &EdgeConfig,
    events: &[EdgeEvent],
    ends: &[usize],
    certs: bool,
    error: CommandError,
) -> (usize, CommandError) {
    // The first `passing` items pass; the first `failing` fail with `error`.
    let (mut passing, mut failing, mut error) = (0, ends.len(), error);
    while failing - passing > 1 {
        let mid = passing + (failing - passing) / 2;
        let mut config = start.clone();
        for e in &events[..ends[mid - 1]] {
            // Every event applied once already, in this order.
            let _ = config.apply(e);
        }
        let scope = Scope::of(&events[..ends[mid - 1]]);
        match check::check_result(start, &config, certs, scope.as_ref()) {
            Ok(()) => passing = mid,
            Err(e) => {
                failing = mid;
                error = e;
            }
        }
    }
    (failing.saturating_sub(1), error)
}

impl Commands {
    /// Runs `entries` as one atomic batch (see the [module docs](self)).
    pub async fn batch(
        &self,
        actor: &str,
        entries: Vec<BatchEntry>,
        default_grace_seconds: u64,
    ) -> Result<BatchWritten, BatchError> {
        let written = self.run_batch(actor, entries, default_grace_seconds).await;
        if let (Err(BatchError::Item { error, .. } | BatchError::Batch(error)), Some(m)) =
            (&written, &self.metrics)
        {
            m.appends.refused(error);
        }
        written
    }

    async fn run_batch(
        &self,
        actor: &str,
        entries: Vec<BatchEntry>,
        default_grace_seconds: u64,
    ) -> Result<BatchWritten, BatchError> {
        if entries.is_empty() {
            return Err(BatchError::Batch(CommandError::BadRequest(
                "a batch needs at least one command".into(),
            )));
        }
        if entries.len() > MAX_BATCH_ITEMS {
            return Err(BatchError::Batch(CommandError::BadRequest(format!(
                "a batch takes at most {MAX_BATCH_ITEMS} commands"
            ))));
        }
        // 1. Decide and check on the committed state, off the group lock.
        let deciding = self.groups.batch_turn.lock().await;
        self.projection.sync().await.map_err(batch_store)?;
        let view = self.projection.view();
        let base = Base::of(&view);
        let grace = default_grace_seconds;
        // On the bulk lane: below single commands and the feed for the CPU.
        let (lane, who, items) = (self.shared(), actor.to_string(), entries.clone());
        let decided =
            super::bulk_lane::run(async move { lane.decide(&who, items, base, grace).await })
                .await
                .ok_or_else(lane_ended)??;
        drop(deciding);
        if decided.stage.events.is_empty() {
            return Ok(BatchWritten {
                items: decided.items,
                event_ids: None,
                event_id: view.event_id,
                applied: true,
            });
        }
        // 2. Join the open stage: as decided when that still holds on it, else
        //    decided again on it, under the group lock.
        let parts = self.parts();
        let (turn, rebased, decided) = self
            .turn_rebased(&parts, actor, decided, view.event_id)
            .await?;
        let decided = match rebased {
            Some(config) => Decided {
                stage: Stage {
                    config,
                    ..decided.stage
                },
                ..decided
            },
            None => {
                let on = turn.view().map_err(batch_store)?;
                let base = Base {
                    config: on.config,
                    versions: on.versions,
                    event_id: on.event_id,
                };
                match self.decide(actor, entries, base, grace).await {
                    Ok(decided) => decided,
                    // A refusal decided on staged events stands if they commit.
                    Err(refused) => {
                        parts.settle_turn(turn).await.map_err(|e| {
                            BatchError::Batch(CommandError::from_store("the batch's base", e))
                        })?;
                        return Err(refused);
                    }
                }
            }
        };
        let Decided {
            mut items,
            ends,
            stage,
        } = decided;
        let joining = Joining {
            events: stage.events,
            edge: stage.edge,
            versions: stage.versions,
            config: stage.config,
        };
        let types: Vec<&'static str> = joining.edge.iter().map(EdgeEvent::event_type).collect();
        // 3. The append, on the batch's turn.
        let ids = parts.commit_turn(turn, joining).await.map_err(|e| {
            BatchError::Batch(CommandError::from_store("an aggregate of the batch", e))
        })?;
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            // Decided again on staged events, it changed nothing after all.
            return Ok(BatchWritten {
                items,
                event_ids: None,
                event_id: self.projection.view().event_id.max(view.event_id),
                applied: true,
            });
        };
        if let Some(m) = &self.metrics {
            m.appends.appended_types(types);
        }
        let mut start = 0;
        for (item, end) in items.iter_mut().zip(&ends) {
            if *end > start
                && let (Some(&first), Some(&last)) = (ids.get(start), ids.get(end - 1))
            {
                item.event_ids = Some((first, last));
            }
            start = *end;
        }
        tracing::info!(
            actor,
            commands = items.len(),
            events = ids.len(),
            first_event_id = first,
            last_event_id = last,
            "batch applied"
        );
        let applied = self
            .projection
            .wait_applied(last, super::READ_YOUR_WRITES_TIMEOUT)
            .await;
        Ok(BatchWritten {
            items,
            event_ids: Some((first, last)),
            event_id: last,
            applied,
        })
    }

    /// Runs every item on `base`, collecting the events, and checks the result.
    pub(crate) async fn decide(
        &self,
        actor: &str,
        entries: Vec<BatchEntry>,
        base: Base,
        default_grace_seconds: u64,
    ) -> Result<Decided, BatchError> {
        let staged = Commands {
            store: self.store.clone(),
            projection: self.projection.clone(),
            groups: Default::default(),
            ownership: self.ownership.clone(),
            metrics: None,
            stage: Some(Mutex::new(Stage {
                config: base.config.clone(),
                versions: base.versions,
                events: Vec::new(),
                edge: Vec::new(),
                check_certs: false,
                event_id: base.event_id,
            })),
        };
        let mut items = Vec::with_capacity(entries.len());
        let mut ends = Vec::with_capacity(entries.len());
        for (index, entry) in entries.into_iter().enumerate() {
            let op = entry.command.op();
            let ctx = Ctx {
                actor: actor.to_string(),
                expected_version: entry.if_match,
            };
            let (name, created, w) = run(&staged, &ctx, entry.command, default_grace_seconds)
                .await
                .map_err(|error| BatchError::Item { index, op, error })?;
            if let Some(stage) = &staged.stage {
                ends.push(stage.lock().await.events.len());
            }
            items.push(BatchItem {
                op,
                status: if created && w.changed { 201 } else { 200 },
                name,
                value: w.value,
                version: w.version,
                changed: w.changed,
                event_ids: None,
            });
        }
        let Some(stage) = staged.stage.map(Mutex::into_inner) else {
            return Err(BatchError::Batch(CommandError::Store(
                "the batch lost its stage".into(),
            )));
        };
        if !stage.events.is_empty() {
            let scope = Scope::of(&stage.edge);
            let certs = stage.check_certs;
            if let Err(error) =
                check::check_result(&base.config, &stage.config, certs, scope.as_ref())
            {
                let (index, error) = culprit(&base.config, &stage.edge, &ends, certs, error);
                let op = items.get(index).map_or("?", |i| i.op);
                return Err(BatchError::Item { index, op, error });
            }
        }
        Ok(Decided { items, ends, stage })
    }

    /// The batch's turn to append, and `decided` rebased on the turn's stage
    /// (`None`: decide it again). The rebase runs on a copy of the open stage with
    /// no lock held, so single commands stage and commit meanwhile; it stands if
    /// nothing was staged on the stage by the time the turn comes. After
    /// [`REBASE_TRIES`] stages that moved on, it runs under the turn.
    ///
    /// The rebase off the locks runs on the bulk lane, like the decision: it is
    /// most of a batch's CPU once deciding is cheap, and on the runtime's workers
    /// it took the CPU from single commands at their own priority.
    async fn turn_rebased(
        &self,
        parts: &Parts,
        actor: &str,
        mut decided: Decided,
        from: i64,
    ) -> Result<(Turn, Option<EdgeConfig>, Decided), BatchError> {
        for _ in 0..REBASE_TRIES {
            let on = parts.peek(actor).await.map_err(BatchError::Batch)?;
            let lane = self.shared();
            let (rebased, on, back) = super::bulk_lane::run(async move {
                let rebased = lane.rebase(&on, &decided, from).await;
                (rebased, on, decided)
            })
            .await
            .ok_or_else(lane_ended)?;
            decided = back;
            let turn = parts.turn(actor).await.map_err(BatchError::Batch)?;
            if turn.is_at(&on) {
                return Ok((turn, rebased, decided));
            }
        }
        let turn = parts.turn(actor).await.map_err(BatchError::Batch)?;
        let on = turn.view().map_err(batch_store)?;
        let rebased = self.rebase(&on, &decided, from).await;
        Ok((turn, rebased, decided))
    }

    /// The stage's config with `decided` (decided on the committed state at
    /// `from`) applied, when that is what deciding it on the stage would give:
    /// no aggregate it changes has changed since (staged or committed), and the
    /// result still applies and checks. `None`: decide it again.
    pub(crate) async fn rebase(
        &self,
        open: &StageView,
        decided: &Decided,
        from: i64,
    ) -> Option<EdgeConfig> {
        if open.is_committed_state_at(from) {
            return Some(decided.stage.config.clone());
        }
        let mine: HashSet<(&str, &str)> = decided
            .stage
            .versions
            .keys()
            .map(|(kind, id)| (*kind, id.as_str()))
            .collect();
        let staged = &open.versions;
        if staged
            .keys()
            .any(|(k, id)| mine.contains(&(*k, id.as_str())))
        {
            return None;
        }
        let since = self.store.read_after(from, REBASE_MAX_EVENTS).await.ok()?;
        if since.len() as i64 >= REBASE_MAX_EVENTS
            || since
                .iter()
                .any(|e| mine.contains(&(e.aggregate_type.as_str(), e.aggregate_id.as_str())))
        {
            return None;
        }
        let current = &open.config;
        let mut next = current.clone();
        for e in &decided.stage.edge {
            next.apply(e).ok()?;
        }
        let scope = Scope::of(&decided.stage.edge);
        check::check_result(current, &next, decided.stage.check_certs, scope.as_ref()).ok()?;
        Some(next)
    }
}

/// Most events committed since a batch's decision that joining the open stage
/// looks through for conflicts; past it the batch is decided again.
const REBASE_MAX_EVENTS: i64 = 4096;

/// Rebases on a copy of the open stage before the batch's turn, at most; then
/// the rebase runs under the turn.
const REBASE_TRIES: usize = 3;

/// What a batch is decided on.
pub(crate) struct Base {
    config: EdgeConfig,
    versions: super::StagedVersions,
    /// The projection cursor under `config`.
    event_id: i64,
}

impl Base {
    /// The committed state `view` shows.
    pub(crate) fn of(view: &View) -> Base {
        Base {
            config: view.config.clone(),
            versions: HashMap::new(),
            event_id: view.event_id,
        }
    }
}

/// A batch decided and checked, not yet appended.
pub(crate) struct Decided {
    items: Vec<BatchItem>,
    /// `ends[i]`: how many events items up to `i` staged.
    ends: Vec<usize>,
    stage: Stage,
}

/// A batch's work on the bulk lane panicked.
fn lane_ended() -> BatchError {
    BatchError::Batch(CommandError::Store(
        "working on the batch ended abnormally".into(),
    ))
}

fn batch_store(e: crate::store::StoreError) -> BatchError {
    BatchError::Batch(CommandError::from(e))
}
