//! Commands: the only way the edge config changes.
//!
//! Every command targets one aggregate (`app`, `route`, `hostname`, `certificate`,
//! `api_key` or `platform`) and runs the same steps (`Commands::execute`):
//!
//! 1. take the group lock (commands of this process decide one at a time, so each
//!    is decided against the state the previous one left, committed or staged);
//! 2. read the aggregate's version (the staged one, else the store's); a client's
//!    `If-Match` version that differs is a 409 right away;
//! 3. when nothing is staged, bring the projection up to the end of the log
//!    ([`Projection::sync`]), so the decision sees every event of the aggregate up
//!    to that version; otherwise decide on the staged state, which continues it;
//! 4. decide the events from that [`EdgeConfig`] (404/409 for objects that are
//!    missing or in the way, 400 for malformed input);
//! 5. check the result (`check`): apply the events to a clone with
//!    [`EdgeConfig::apply`], validate the clone's routing spec with
//!    [`tollgate_routing::validate()`] and, for certificate commands, build every
//!    certificate of the clone with [`tollgate_certs::CertStore::build`] (422);
//!    the clone becomes the staged state;
//! 6. append, with the commands staged alongside, in one store transaction: each
//!    aggregate's version is checked, so a concurrent append to the same aggregate
//!    by any process makes the store refuse the group ([`StoreError::Conflict`],
//!    409), and no event is duplicated or lost (the `group` module);
//! 7. sync the projection and wait until it has applied the last appended event,
//!    so the caller reads its own write.
//!
//! Event payloads are the serde JSON of the [`EdgeEvent`]; its `type` tag is the
//! stored `event_type`. A command that would change nothing appends nothing.
//!
//! Appends are counted here, where they happen (by event type), and so are
//! commands refused at any step (by reason): [`crate::metrics::AppendMetrics`].
//!
//! [`Commands::batch`] runs a list of commands through the same code, atomically
//! (see the `batch` module).

mod api_key;
mod app;
mod batch;
#[cfg(test)]
mod batch_rebase_tests;
mod bulk_lane;
mod certificate;
mod check;
mod claim;
mod group;
mod hostname;
mod platform;
mod route;
#[cfg(test)]
mod target_tests;
#[cfg(test)]
mod test_support;
mod tls;

pub use api_key::{CreateKey, CreatedKey};
pub use app::{AppView, CreateApp, app_view};
pub use batch::{
    BatchCommand, BatchEntry, BatchError, BatchItem, BatchWritten, MAX_BATCH_BYTES, MAX_BATCH_ITEMS,
};
pub use certificate::{CertView, UploadCert, cert_view};
pub use check::Problem;
pub use claim::{ClaimCheck, ClaimView, OwnershipPolicy};
pub use hostname::HostnameView;
pub use tls::{Expect, ManageTls, TlsView, tls_view};

use crate::metrics::ControlMetrics;
use crate::projection::Projection;
use crate::store::{AnyStore, EventStore, NewEvent, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tollgate_routing::{EdgeConfig, EdgeError, EdgeEvent};

/// How long a command waits for the projection to show its own events.
pub const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a command was refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// The object does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The object exists, is in the way, or is not in the stated state (409).
    #[error("{0}")]
    Conflict(String),
    /// The aggregate is not at the version the command was decided against (409).
    #[error("version conflict: expected version {expected}, the {aggregate} is at {actual}")]
    VersionConflict {
        aggregate: String,
        expected: i64,
        actual: i64,
    },
    /// The result would not be servable (422).
    #[error("{message}")]
    Invalid {
        message: String,
        problems: Vec<Problem>,
    },
    /// The event store failed (503).
    #[error("event store: {0}")]
    Store(String),
}

impl CommandError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        CommandError::Invalid {
            message: message.into(),
            problems: Vec::new(),
        }
    }

    /// Maps a structural error of [`EdgeConfig::apply`].
    pub(crate) fn from_edge(e: EdgeError) -> Self {
        let text = e.to_string();
        match e {
            EdgeError::NoApp(_)
            | EdgeError::NoUpstream { .. }
            | EdgeError::NoRoute(_)
            | EdgeError::NoCertificate(_)
            | EdgeError::NoKey(_)
            | EdgeError::NoIssuer(_)
            | EdgeError::NotManaged(_)
            | EdgeError::NoClaim(_) => CommandError::NotFound(text),
            EdgeError::AppExists(_)
            | EdgeError::RouteExists(_)
            | EdgeError::HostnameTaken { .. }
            | EdgeError::HostnameNotBound(_)
            | EdgeError::CertificateExists(_)
            | EdgeError::KeyExists(_)
            | EdgeError::AlreadyManaged(_) => CommandError::Conflict(text),
            EdgeError::RouteWithoutId => CommandError::BadRequest(text),
        }
    }

    fn from_store(aggregate: &str, e: StoreError) -> Self {
        match e {
            StoreError::Conflict { expected, actual } => CommandError::VersionConflict {
                aggregate: aggregate.to_string(),
                expected,
                actual,
            },
            StoreError::Database(m) => CommandError::Store(m),
            // Only names and batches the commands build themselves reach the store.
            StoreError::Invalid(m) => CommandError::BadRequest(m),
        }
    }
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        CommandError::from_store("aggregate", e)
    }
}

/// Who runs a command and under which precondition.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Stored as the events' `actor_id`.
    pub actor: String,
    /// The aggregate version the caller saw (`If-Match`); any other is a 409.
    pub expected_version: Option<i64>,
}

impl Ctx {
    pub fn actor(actor: impl Into<String>) -> Self {
        Ctx {
            actor: actor.into(),
            expected_version: None,
        }
    }
}

/// The aggregate a command targets.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: &'static str,
    pub id: String,
    /// The command generated `id`: no event names it yet, so its version is 0
    /// without asking the store (whose unique sequence would still refuse a
    /// collision of ~95 random bits).
    pub generated: bool,
}

impl Target {
    pub fn new(kind: &'static str, id: impl Into<String>) -> Self {
        Target {
            kind,
            id: id.into(),
            generated: false,
        }
    }

    /// `new`, marked [`generated`](Target::generated) when `generated`.
    pub fn with_id(kind: &'static str, id: impl Into<String>, generated: bool) -> Self {
        Target {
            generated,
            ..Target::new(kind, id)
        }
    }
    fn label(&self) -> String {
        format!("{} `{}`", self.kind, self.id)
    }
}

/// What a command decided: events to append and the value to answer with.
pub(crate) struct Plan<T> {
    pub events: Vec<EdgeEvent>,
    pub value: T,
    /// Build every certificate of the result.
    pub check_certs: bool,
}

impl<T> Plan<T> {
    pub fn new(events: Vec<EdgeEvent>, value: T) -> Self {
        Plan {
            events,
            value,
            check_certs: false,
        }
    }
    pub fn noop(value: T) -> Self {
        Plan::new(Vec::new(), value)
    }
}

/// What a successful command returns.
#[derive(Debug, Clone)]
pub struct Written<T> {
    pub value: T,
    /// The last appended event; the current projection cursor when nothing was
    /// appended.
    pub event_id: i64,
    /// The aggregate's version after the command.
    pub version: i64,
    /// Whether anything was appended.
    pub changed: bool,
    /// Whether the projection showed the events before the answer (normally true).
    pub applied: bool,
}

impl<T> Written<T> {
    /// The same answer with another value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Written<U> {
        Written {
            value: f(self.value),
            event_id: self.event_id,
            version: self.version,
            changed: self.changed,
            applied: self.applied,
        }
    }
}

/// Runs commands against one store and its projection.
pub struct Commands {
    store: Arc<AnyStore>,
    projection: Arc<Projection>,
    /// Staged single commands and the commit lock (see the `group` module).
    groups: Arc<group::Groups>,
    /// Set on the private instance a batch runs its items on: commands decide
    /// against the batch's config and collect their events instead of appending.
    stage: Option<Mutex<batch::Stage>>,
    /// Which hostnames must be claimed and verified instead of bound directly.
    ownership: Arc<claim::OwnershipPolicy>,
    /// Appends and refusals are counted here when set (a batch's private instance
    /// has none: the batch counts as a whole).
    metrics: Option<Arc<ControlMetrics>>,
}

impl Commands {
    pub fn new(store: Arc<AnyStore>, projection: Arc<Projection>) -> Self {
        Commands {
            store,
            projection,
            groups: Arc::default(),
            stage: None,
            ownership: Arc::default(),
            metrics: None,
        }
    }

    /// The same commands counting appends and refusals in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ControlMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The same commands with `policy` for direct binds.
    pub fn with_ownership(mut self, policy: claim::OwnershipPolicy) -> Self {
        self.ownership = Arc::new(policy);
        self
    }

    pub fn projection(&self) -> &Arc<Projection> {
        &self.projection
    }

    pub fn store(&self) -> &Arc<AnyStore> {
        &self.store
    }

    /// The steps of the [module docs](self).
    pub(crate) async fn execute<T>(
        &self,
        ctx: &Ctx,
        target: Target,
        decide: impl FnOnce(&EdgeConfig) -> Result<Plan<T>, CommandError>,
    ) -> Result<Written<T>, CommandError> {
        if let Some(stage) = &self.stage {
            return batch::execute_staged(&self.store, stage, ctx, target, decide).await;
        }
        // Committed with the commands of concurrent callers (the `group` module).
        let written = self.parts().execute(ctx, target, decide).await;
        if let (Err(e), Some(m)) = (&written, &self.metrics) {
            m.appends.refused(e);
        }
        written
    }

    /// Another handle on the same store, projection, groups and policy.
    fn shared(&self) -> Commands {
        Commands {
            store: self.store.clone(),
            projection: self.projection.clone(),
            groups: self.groups.clone(),
            stage: None,
            ownership: self.ownership.clone(),
            metrics: self.metrics.clone(),
        }
    }

    fn parts(&self) -> group::Parts {
        group::Parts {
            store: self.store.clone(),
            projection: self.projection.clone(),
            metrics: self.metrics.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// Aggregate versions as of the events staged so far (a batch's or a group's).
pub(crate) type StagedVersions = std::collections::HashMap<(&'static str, String), i64>;

/// The version of `target` as staged, else as stored; a client's `If-Match` version
/// that differs is a 409.
pub(crate) async fn staged_version(
    store: &AnyStore,
    versions: &StagedVersions,
    ctx: &Ctx,
    target: &Target,
) -> Result<i64, CommandError> {
    let version = match versions.get(&(target.kind, target.id.clone())) {
        Some(v) => *v,
        None if target.generated => 0,
        None => store
            .version(target.kind, &target.id)
            .await
            .map_err(|e| CommandError::from_store(&target.label(), e))?,
    };
    match ctx.expected_version {
        Some(expected) if expected != version => Err(CommandError::VersionConflict {
            aggregate: target.label(),
            expected,
            actual: version,
        }),
        _ => Ok(version),
    }
}

/// Stages `events` of `target` from `version` on: their batch entries go to `out`,
/// the aggregate's new version to `versions`, which it returns.
pub(crate) fn stage_events(
    out: &mut Vec<crate::store::BatchEvent>,
    versions: &mut StagedVersions,
    target: &Target,
    version: i64,
    events: &[EdgeEvent],
) -> Result<i64, CommandError> {
    let encoded = encode(events)?;
    let new_version = version + encoded.len() as i64;
    for (expected_version, event) in (version..).zip(encoded) {
        out.push(crate::store::BatchEvent {
            aggregate_type: target.kind.to_string(),
            aggregate_id: target.id.clone(),
            expected_version,
            event,
        });
    }
    versions.insert((target.kind, target.id.clone()), new_version);
    Ok(new_version)
}

/// The stored form of edge events: the serde JSON, tagged with its type.
pub(crate) fn encode(events: &[EdgeEvent]) -> Result<Vec<NewEvent>, CommandError> {
    events
        .iter()
        .map(|e| {
            let payload = serde_json::to_value(e)
                .map_err(|err| CommandError::Store(format!("encoding the event: {err}")))?;
            Ok(NewEvent::new(e.event_type(), payload))
        })
        .collect()
}

/// A background writer's answer: whether it wrote; losing a race to another
/// writer (a version conflict) is not an error, it just wrote nothing.
pub(crate) fn unless_raced(r: Result<Written<bool>, CommandError>) -> Result<bool, CommandError> {
    match r {
        Ok(w) => Ok(w.value),
        Err(CommandError::VersionConflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Unix seconds now.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Checks a client-chosen id, as a 400.
pub(crate) fn check_id(kind: &str, id: &str) -> Result<(), CommandError> {
    crate::ids::check(kind, id).map_err(CommandError::BadRequest)
}
