//! The proxy's copy of the control service's edge model and the cursor it is current
//! at, and turning it into the servable config.
//!
//! Besides the cursor the follower keeps its marker ([`EdgeMarker`]): the id and
//! fingerprint of the last edge event folded into the model (a delta's, or the one a
//! snapshot names). A resume sends both; the service resumes after the marker if its
//! log still holds that event, and sends a snapshot otherwise (its log was restored
//! from a backup or replaced), so the proxy never keeps what a lost event did nor
//! skips a new event that reused a lost one's id. Resuming after the marker may send
//! events between the marker and the cursor: in the log the proxy followed there were
//! no edge events there, so any that come are new ones of a restored log and apply.

use super::ControlStatus;
use super::persist::{PersistedState, Persister};
use crate::config::ConfigError;
use crate::state::{Routing, Shared};
use std::collections::BTreeSet;
use std::sync::Arc;
use tollgate_certs::{CertSource, CertStore};
use tollgate_filters::apikey::KeyStore;
use tollgate_routing::validate::cross_tenant_routes;
use tollgate_routing::{
    ApiKeySpec, EdgeCert, EdgeConfig, EdgeEvent, EdgeMarker, OrdMapDiffItem as DiffItem,
    RoutingSpec, changed_ids,
};

/// One message of the feed, decoded.
// Updates pass one at a time from the feed to the applier; their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Update {
    /// The whole model as of `event_id`. `last_edge`: the last edge event in it (`None`
    /// from services that do not say); `resync`: why the service sent a snapshot
    /// rather than resume, when it did so on its own.
    Snapshot {
        event_id: i64,
        config: EdgeConfig,
        last_edge: Option<EdgeMarker>,
        resync: Option<Resync>,
    },
    /// One event after the cursor, with its marker (`None` from services that send no
    /// fingerprint).
    Delta {
        event_id: i64,
        event: EdgeEvent,
        marker: Option<EdgeMarker>,
    },
    /// A delta whose JSON does not decode as an [`EdgeEvent`].
    BadDelta {
        event_id: i64,
        event_type: String,
        error: String,
        marker: Option<EdgeMarker>,
    },
    /// A snapshot whose JSON does not decode as an [`EdgeConfig`].
    BadSnapshot { event_id: i64, error: String },
}

impl Update {
    /// Decodes a snapshot's `config_json`; `reason` is the service's (empty if none).
    pub fn snapshot(
        event_id: i64,
        json: &[u8],
        last_edge: Option<EdgeMarker>,
        reason: &str,
    ) -> Update {
        match serde_json::from_slice(json) {
            Ok(config) => Update::Snapshot {
                event_id,
                config,
                last_edge,
                resync: Resync::of_snapshot(reason),
            },
            Err(e) => Update::BadSnapshot {
                event_id,
                error: e.to_string(),
            },
        }
    }

    /// Decodes a delta's `event_json`; `fingerprint` is empty from older services.
    pub fn delta(event_id: i64, event_type: &str, json: &[u8], fingerprint: String) -> Update {
        let decoded = serde_json::from_slice(json).map_err(|e| e.to_string());
        Update::decoded(event_id, event_type, decoded, fingerprint)
    }

    /// A delta already decoded (or not, with the reason).
    pub fn decoded(
        event_id: i64,
        event_type: &str,
        decoded: Result<EdgeEvent, String>,
        fingerprint: String,
    ) -> Update {
        let marker = EdgeMarker::checked(event_id, fingerprint).filter(EdgeMarker::is_event);
        match decoded {
            Ok(event) => Update::Delta {
                event_id,
                event,
                marker,
            },
            Err(error) => Update::BadDelta {
                event_id,
                event_type: event_type.to_string(),
                error,
                marker,
            },
        }
    }
}

/// Why the model was replaced by a fresh snapshot instead of following on from the
/// cursor: the `reason` of `tollgate_control_resyncs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// The service's log does not hold the last edge event applied here: it was
    /// restored from a backup or replaced.
    LogDiverged,
    /// The cursor is beyond the end of the service's log.
    CursorAhead,
    /// Further behind than the service replays.
    TooFarBehind,
    /// An event did not fit the model, so the proxy asked for a snapshot.
    Unappliable,
}

impl Resync {
    pub const ALL: [Resync; 4] = [
        Resync::LogDiverged,
        Resync::CursorAhead,
        Resync::TooFarBehind,
        Resync::Unappliable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Resync::LogDiverged => "log_diverged",
            Resync::CursorAhead => "cursor_ahead",
            Resync::TooFarBehind => "too_far_behind",
            Resync::Unappliable => "unappliable",
        }
    }

    /// The service's `reason` for a snapshot, when it means a resync (not `initial`,
    /// empty or unknown).
    pub fn of_snapshot(reason: &str) -> Option<Resync> {
        match reason {
            "log_diverged" => Some(Resync::LogDiverged),
            "cursor_ahead" => Some(Resync::CursorAhead),
            "too_far_behind" => Some(Resync::TooFarBehind),
            _ => None,
        }
    }

    /// The error code of a `410` from `GET /v1/events` (older services send only
    /// `cursor_ahead`).
    pub fn of_gone(code: Option<&str>) -> Resync {
        match code {
            Some("log_diverged") => Resync::LogDiverged,
            _ => Resync::CursorAhead,
        }
    }
}

/// What the feed should do after a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Keep following.
    Continue,
    /// The model no longer fits the log: ask for a fresh snapshot (`after_event_id = 0`).
    Resync,
    /// The service sent something unusable that a resync would only repeat: reconnect
    /// with backoff.
    Broken(String),
}

/// The model, its cursor, and where a servable result goes.
pub struct Follower {
    shared: Arc<Shared>,
    status: Arc<ControlStatus>,
    model: EdgeConfig,
    cursor: i64,
    /// The last edge event in the model; `None` when the service did not say (older
    /// services, older state files): resumes then go by the cursor alone.
    last_edge: Option<EdgeMarker>,
    default_certificate: Option<String>,
    persister: Option<Persister>,
    /// Set until a snapshot arrives: the next request asks for one.
    needs_snapshot: bool,
    /// The model came from a snapshot sent for a forced resync and no delta has applied
    /// cleanly since; another resync cannot repair a structural failure now.
    fresh_from_resync: bool,
    awaiting_resync: bool,
    /// Ids of the cross-tenant routes left out of the last config (logged once each).
    dropped_routes: Vec<String>,
    /// What the serving certificate and key stores were built from.
    built: Built,
}

/// The certificate and key stores serving, and the model they were built from: the
/// next build diffs the model against it and changes only what differs (a clone of
/// the model shares its persistent maps, and their diff skips what they share).
#[derive(Default)]
struct Built {
    model: EdgeConfig,
    /// Whether the serving routes were compiled from `model` (not from a config file).
    routing: bool,
    /// Without the default certificate.
    certs: CertStore,
    keys: KeyStore,
}

impl Built {
    /// The certificates added, changed (`Some`) or removed (`None`) in `model`.
    fn cert_changes(&self, model: &EdgeConfig) -> Vec<(String, Option<CertSource>)> {
        self.model
            .certificates
            .diff(&model.certificates)
            .map(|change| match change {
                DiffItem::Add(id, c) | DiffItem::Update { new: (id, c), .. } => {
                    (id.clone(), Some(cert_source(c)))
                }
                DiffItem::Remove(id, _) => (id.clone(), None),
            })
            .collect()
    }
}

/// A key as served before and as served now (`None`: not served).
type KeyChange<'a> = (Option<&'a Arc<ApiKeySpec>>, Option<&'a Arc<ApiKeySpec>>);

/// The `(served before, served now)` keys that differ from `old` to `new`: keys added,
/// revoked or changed, and the keys of apps whose state changed (a deletion stops
/// their keys). Borrowed: a cold start lists every key, and copies of 100,000 keys
/// were tens of MiB at the peak.
fn key_changes<'a>(old: &'a EdgeConfig, new: &'a EdgeConfig) -> Vec<KeyChange<'a>> {
    let mut ids: BTreeSet<String> = changed_ids(&old.api_keys, &new.api_keys)
        .into_iter()
        .collect();
    for app in changed_ids(&old.apps, &new.apps) {
        ids.extend(new.keys_of(&app));
    }
    ids.into_iter()
        .filter_map(|id| {
            let (before, now) = (old.served_key(&id), new.served_key(&id));
            (before != now).then_some((before, now))
        })
        .collect()
}

impl Follower {
    pub fn new(
        shared: Arc<Shared>,
        status: Arc<ControlStatus>,
        default_certificate: Option<String>,
        persister: Option<Persister>,
    ) -> Self {
        let mut model = EdgeConfig::default();
        model.refresh_edge_index();
        Follower {
            shared,
            status,
            model,
            cursor: 0,
            last_edge: None,
            default_certificate,
            persister,
            needs_snapshot: true,
            fresh_from_resync: false,
            dropped_routes: Vec::new(),
            awaiting_resync: false,
            built: Built::default(),
        }
    }

    /// The last event folded into the model.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Whether the next request must ask for a snapshot rather than resume.
    pub fn needs_snapshot(&self) -> bool {
        self.needs_snapshot
    }

    /// `after_event_id` for the next request.
    pub fn resume_from(&self) -> i64 {
        if self.awaiting_resync { 0 } else { self.cursor }
    }

    /// The marker for the next request (none when it asks for a snapshot anyway).
    pub fn resume_marker(&self) -> Option<&EdgeMarker> {
        if self.awaiting_resync {
            None
        } else {
            self.last_edge.as_ref()
        }
    }

    /// Deltas up to this id are in the model already: the marker's, else the cursor.
    /// Resuming after the marker may bring events between it and the cursor, which
    /// are new (see the module docs).
    fn applied_upto(&self) -> i64 {
        self.last_edge
            .as_ref()
            .map_or(self.cursor, |m| m.event_id.min(self.cursor))
    }

    /// Makes the next request ask for a snapshot: the service cannot resume, for `why`.
    pub fn request_snapshot(&mut self, why: Resync) {
        self.resynced(why);
        self.needs_snapshot = true;
        self.awaiting_resync = true;
    }

    /// Logs and counts a resync.
    fn resynced(&self, why: Resync) {
        self.shared
            .metrics
            .control_resyncs
            .with_label_values(&[why.label()])
            .inc();
        match why {
            Resync::LogDiverged => tracing::warn!(
                cursor = self.cursor,
                last_edge_event_id = self.last_edge.as_ref().map_or(0, |m| m.event_id),
                "the control service's log does not hold the last event applied here \
                 (restored from a backup or replaced): replacing the model with a fresh snapshot"
            ),
            Resync::CursorAhead => tracing::warn!(
                cursor = self.cursor,
                "the cursor is beyond the end of the control service's log: replacing the model with a fresh snapshot"
            ),
            Resync::TooFarBehind => tracing::info!(
                cursor = self.cursor,
                "too far behind the control service's log to replay it: taking a fresh snapshot"
            ),
            // Logged where it is found.
            Resync::Unappliable => {}
        }
    }

    pub fn status(&self) -> &Arc<ControlStatus> {
        &self.status
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves a persisted state before the feed is reachable. The cursor resumes from
    /// it even when it does not build, since it is still the log's state at that event.
    pub async fn restore(&mut self, state: PersistedState) -> Result<u64, ConfigError> {
        self.model = state.config;
        self.model.refresh_edge_index();
        self.set_cursor(state.event_id);
        self.set_last_edge(state.last_edge);
        self.needs_snapshot = false;
        self.publish(false).await
    }

    /// Folds `updates` into the model in order, then builds and swaps once.
    pub async fn apply_batch(&mut self, updates: Vec<Update>) -> Outcome {
        let mut changed = false;
        let mut outcome = Outcome::Continue;
        let metrics = self.shared.metrics.clone();
        for update in updates {
            match update {
                Update::Snapshot {
                    event_id,
                    config,
                    last_edge,
                    resync,
                } => {
                    if let Some(why) = resync {
                        self.resynced(why);
                    }
                    self.model = config;
                    self.model.refresh_edge_index();
                    self.set_cursor(event_id);
                    self.set_last_edge(last_edge);
                    self.needs_snapshot = false;
                    self.fresh_from_resync = std::mem::take(&mut self.awaiting_resync);
                    changed = true;
                    metrics
                        .control_updates
                        .with_label_values(&["snapshot"])
                        .inc();
                    tracing::info!(event_id, "control snapshot received");
                }
                Update::BadSnapshot { event_id, error } => {
                    metrics
                        .control_apply_errors
                        .with_label_values(&["decode"])
                        .inc();
                    tracing::error!(event_id, error = %error, "control snapshot does not decode; ignored");
                    outcome = Outcome::Broken(format!("snapshot {event_id} does not decode"));
                    break;
                }
                Update::Delta { event_id, .. } | Update::BadDelta { event_id, .. }
                    if event_id <= self.applied_upto() =>
                {
                    // Resends after a reconnect or a switch between gRPC and polling.
                    tracing::debug!(
                        event_id,
                        cursor = self.cursor,
                        "control event already applied"
                    );
                }
                Update::Delta {
                    event_id,
                    event,
                    marker,
                } => match self.model.apply(&event) {
                    Ok(()) => {
                        self.note_rewind(event_id);
                        self.set_cursor(event_id);
                        self.set_last_edge(marker);
                        self.fresh_from_resync = false;
                        changed = true;
                        metrics.control_updates.with_label_values(&["delta"]).inc();
                    }
                    Err(e) => {
                        metrics
                            .control_apply_errors
                            .with_label_values(&["structural"])
                            .inc();
                        if self.on_unappliable(event_id, event.event_type(), &e.to_string(), marker)
                        {
                            outcome = Outcome::Resync;
                            break;
                        }
                    }
                },
                Update::BadDelta {
                    event_id,
                    event_type,
                    error,
                    marker,
                } => {
                    metrics
                        .control_apply_errors
                        .with_label_values(&["decode"])
                        .inc();
                    if self.on_unappliable(event_id, &event_type, &error, marker) {
                        outcome = Outcome::Resync;
                        break;
                    }
                }
            }
        }
        if changed {
            // The error, if any, is logged and counted inside; the last good config
            // keeps serving and the model stays where the log says it is.
            let _ = self.publish(true).await;
        }
        outcome
    }

    /// An event that does not fit the model. Returns whether to resync.
    ///
    /// The model should be exactly the service's projection at the cursor, and the
    /// service applies the same events with the same code, so this means the two have
    /// diverged (a missed event, a bug, a restored database). The event log is the
    /// truth: rather than guess, drop the stream and ask for a fresh snapshot
    /// (`after_event_id = 0`), which replaces the model wholesale. If the model *is*
    /// such a fresh snapshot and the event still does not fit, another resync would
    /// loop: the event is skipped and the cursor advances past it, and the next
    /// snapshot (any reconnect) repairs whatever it would have changed.
    fn on_unappliable(
        &mut self,
        event_id: i64,
        event_type: &str,
        error: &str,
        marker: Option<EdgeMarker>,
    ) -> bool {
        if self.fresh_from_resync {
            tracing::error!(
                event_id,
                event_type,
                error,
                "control event does not apply to a fresh snapshot; skipped"
            );
            self.note_rewind(event_id);
            self.set_cursor(event_id);
            // Skipped, but taken from the log like any other: resume after it.
            self.set_last_edge(marker);
            false
        } else {
            tracing::error!(
                event_id,
                event_type,
                error,
                "control event does not apply to the local model; resyncing from a snapshot"
            );
            self.request_snapshot(Resync::Unappliable);
            true
        }
    }

    /// A new event at or below the cursor: the service resumed after the marker and
    /// its log has edge events between the marker and the cursor, which the log this
    /// proxy followed did not have. The log was restored to a point between the two;
    /// the model is right up to the marker and follows the restored log from here.
    fn note_rewind(&self, event_id: i64) {
        if event_id <= self.cursor {
            tracing::warn!(
                event_id,
                cursor = self.cursor,
                "the control service's log has a new event below the cursor \
                 (restored from a backup): following the restored log from here"
            );
        }
    }

    fn set_last_edge(&mut self, marker: Option<EdgeMarker>) {
        self.status
            .set_last_edge(marker.as_ref().map(|m| m.event_id));
        self.last_edge = marker;
    }

    fn set_cursor(&mut self, event_id: i64) {
        self.cursor = event_id;
        self.status.set_cursor(event_id);
        self.shared.metrics.control_last_event_id.set(event_id);
    }

    /// Builds the servable config from the model and swaps it in; on error the running
    /// config stays. Persists the model after a successful swap when `persist`.
    async fn publish(&mut self, persist: bool) -> Result<u64, ConfigError> {
        // Routes are compiled again only where something they are made of changed: a
        // burst of keys or certificates reuses the compiled routes as they are, a change
        // to a few apps recompiles those apps.
        let routing = if self.built.routing && self.built.model.same_routing(&self.model) {
            Routing::Same
        } else if let Some(mut delta) = self
            .built
            .routing
            .then(|| self.built.model.routing_delta(&self.model))
            .flatten()
        {
            // The ids left out before stay listed: this spec holds only what changed.
            let mut dropped = self.dropped_routes.clone();
            drop_cross_tenant_routes(&mut delta.scoped, &mut dropped);
            self.dropped_routes.extend(dropped);
            self.dropped_routes.sort_unstable();
            self.dropped_routes.dedup();
            Routing::Delta(delta)
        } else {
            let mut spec = self.model.routing_spec_without_keys();
            drop_cross_tenant_routes(&mut spec, &mut self.dropped_routes);
            Routing::Full(spec)
        };
        // Only the certificates and keys that changed since the last build are loaded.
        let changes = self.built.cert_changes(&self.model);
        let (keys_before, keys_now) = (self.built.model.clone(), self.model.clone());
        let key_base = self.built.keys.clone();
        let base = self.built.certs.clone();
        let acme = self.model.acme_challenges.clone();
        let default = self.default_certificate.clone();
        let shared = self.shared.clone();
        let event_id = self.cursor;
        let _one_at_a_time = shared.reload_lock.lock().await;
        let target = shared.clone();
        // Certificate parsing and compiling routes take a while for big configs:
        // keep them off the async workers.
        let result = tokio::task::spawn_blocking(move || {
            // Each certificate was validated on upload; one that lapsed since, or
            // that cannot load here, degrades its own names only.
            let keys = key_base
                .update(key_changes(&keys_before, &keys_now))
                .map_err(ConfigError::ApiKeys)?;
            let built = base.update(changes.iter().map(|(id, s)| (id.as_str(), s.as_ref())));
            target.cert_health.set_refused(built.refused());
            let mut certs = built.clone();
            if let Some(name) = default {
                certs = match certs.clone().with_default(&name) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "default_certificate: no control certificate covers it");
                        certs
                    }
                };
            }
            target
                .apply_parts(routing, Some(keys.clone()), certs, &acme)
                .map(|version| (version, built, keys))
        })
        .await
        .unwrap_or_else(|source| {
            Err(ConfigError::Task {
                what: "apply",
                source,
            })
        });
        let result = result.map(|(version, certs, keys)| {
            self.built = Built {
                model: self.model.clone(),
                routing: true,
                certs,
                keys,
            };
            version
        });
        match &result {
            Ok(version) => {
                self.status.set_serving(event_id);
                tracing::info!(event_id, version, "control config applied");
                if persist && let Some(p) = &self.persister {
                    p.save(PersistedState {
                        event_id,
                        last_edge: self.last_edge.clone(),
                        config: self.model.clone(),
                    });
                }
            }
            Err(e) => {
                let kind = match e {
                    ConfigError::Routes(_) => "validation",
                    ConfigError::Certs(_) => "certificate",
                    _ => "build",
                };
                shared
                    .metrics
                    .control_apply_errors
                    .with_label_values(&[kind])
                    .inc();
                tracing::error!(
                    event_id,
                    kind,
                    error = %e,
                    "control config refused; the last good config keeps serving"
                );
            }
        }
        result
    }
}

/// What the certificate store loads for a control certificate.
pub fn cert_source(c: &EdgeCert) -> CertSource {
    CertSource {
        cert_pem: c.cert_pem.clone(),
        key_pem: c.key_pem.clone(),
        names: (!c.names.is_empty()).then(|| c.names.clone()),
    }
}

/// Leaves out routes that send a hostname bound to one app to another. The control
/// service refuses them now, but an older log may hold one: it costs only itself.
/// `dropped` holds the ids left out last time, so each is logged once.
fn drop_cross_tenant_routes(spec: &mut RoutingSpec, dropped: &mut Vec<String>) {
    let mut now_dropped = Vec::new();
    let bad: Vec<usize> = cross_tenant_routes(spec)
        .into_iter()
        .map(|(i, owner)| {
            let r = &spec.routes[i];
            let id = r.metrics_id();
            if !dropped.contains(&id) {
                tracing::warn!(
                    route = %id,
                    hostname = %r.hostname,
                    app = %r.app,
                    owner,
                    "route on a hostname of another app left out"
                );
            }
            now_dropped.push(id);
            i
        })
        .collect();
    *dropped = now_dropped;
    let mut i = 0;
    spec.routes.retain(|_| {
        i += 1;
        !bad.contains(&(i - 1))
    });
}

#[cfg(test)]
mod tests {
    use super::Built;
    use tollgate_routing::{EdgeConfig, EdgeEvent};

    fn apply(model: &mut EdgeConfig, event: serde_json::Value) {
        let event: EdgeEvent = serde_json::from_value(event).expect("event");
        model.apply(&event).expect("applies");
    }

    fn key(id: &str, app: &str, digit: char) -> serde_json::Value {
        serde_json::json!({"type": "api_key_created", "key": {"key_id": id, "app": app,
            "kind": "secret", "sha256": digit.to_string().repeat(64)}})
    }

    /// `(before, after)` key ids of each change.
    fn ids(built: &Built, model: &EdgeConfig) -> Vec<(Option<String>, Option<String>)> {
        super::key_changes(&built.model, model)
            .into_iter()
            .map(|(old, new)| (old.map(|k| k.key_id.clone()), new.map(|k| k.key_id.clone())))
            .collect()
    }

    /// API host `api.test` and apps `a` and `b`.
    fn two_apps() -> EdgeConfig {
        let mut model = EdgeConfig::default();
        apply(
            &mut model,
            serde_json::json!({"type": "api_hosts_set", "hosts": ["api.test"]}),
        );
        for app in ["a", "b"] {
            apply(
                &mut model,
                serde_json::json!({"type": "app_created", "app_id": app}),
            );
        }
        model
    }

    #[test]
    fn key_changes_follow_keys_and_the_state_of_their_apps() {
        let mut model = two_apps();
        apply(&mut model, key("k1", "a", '1'));
        apply(&mut model, key("k2", "b", '2'));
        let some = |s: &str| Some(s.to_string());
        let mut built = Built::default();
        assert_eq!(
            ids(&built, &model),
            [(None, some("k1")), (None, some("k2"))]
        );
        built.model = model.clone();
        assert!(ids(&built, &model).is_empty(), "nothing changed");

        // A deletion stops the app's keys; revoking one stops it.
        apply(
            &mut model,
            serde_json::json!({"type": "app_deletion_scheduled",
            "app_id": "a", "until_unix": 1}),
        );
        apply(
            &mut model,
            serde_json::json!({"type": "api_key_revoked", "key_id": "k2"}),
        );
        assert_eq!(
            ids(&built, &model),
            [(some("k1"), None), (some("k2"), None)]
        );
        built.model = model.clone();
        apply(&mut model, key("k3", "a", '3'));
        assert!(
            ids(&built, &model).is_empty(),
            "a key of a deleting app is not served"
        );
    }

    fn delta(event_id: i64, event: serde_json::Value) -> super::Update {
        super::Update::Delta {
            event_id,
            event: serde_json::from_value(event).expect("event"),
            marker: None,
        }
    }

    /// Hands `model` to `follower` as the feed's first snapshot (event 1).
    async fn start(follower: &mut super::Follower, model: EdgeConfig) {
        let snapshot = super::Update::Snapshot {
            event_id: 1,
            config: model,
            last_edge: None,
            resync: None,
        };
        assert_eq!(
            follower.apply_batch(vec![snapshot]).await,
            super::Outcome::Continue
        );
    }

    /// A burst of keys swaps in a new generation that shares the compiled routes; a
    /// hostname compiles its app's routes again and shares the other apps'. Both are
    /// served.
    #[tokio::test]
    async fn keys_alone_reuse_the_compiled_routes() {
        let mut follower = crate::benching::follower().await.expect("follower");
        let model = two_apps();
        start(&mut follower, model).await;
        let first = follower.shared().state.load_full();

        let outcome = follower
            .apply_batch(vec![delta(2, key("k1", "a", '1'))])
            .await;
        assert_eq!(outcome, super::Outcome::Continue);
        let keyed = follower.shared().state.load_full();
        assert_eq!(keyed.version, first.version + 1);
        assert!(std::sync::Arc::ptr_eq(&first.snapshot, &keyed.snapshot));
        let same_plans = first.routes.len() == keyed.routes.len()
            && first
                .routes
                .iter()
                .zip(keyed.routes.iter())
                .all(|p| match p {
                    (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
                    (a, b) => a.is_none() && b.is_none(),
                });
        assert!(same_plans, "keys alone compiled routes again");
        assert_eq!((first.auth.keys.len(), keyed.auth.keys.len()), (0, 1));

        let bind =
            serde_json::json!({"type": "hostname_bound", "hostname": "a.test", "app_id": "a"});
        let outcome = follower.apply_batch(vec![delta(3, bind)]).await;
        assert_eq!(outcome, super::Outcome::Continue);
        let bound = follower.shared().state.load_full();
        assert!(!std::sync::Arc::ptr_eq(&keyed.snapshot, &bound.snapshot));
        assert_eq!(bound.snapshot.spec().apps[0].hostnames, ["a.test"]);
        assert_eq!(bound.auth.keys.len(), 1, "the keys stay");
        let plan = |state: &crate::state::ProxyState, host: &str, path: &str| {
            let m = state
                .snapshot
                .table
                .lookup(host, 443, path)
                .expect("a route");
            state.routes[m.index]
                .clone()
                .expect("a plan in the route's slot")
        };
        let served = plan(&bound, "a.test", "/");
        assert_eq!(served.app.id, "a");
        // App b did not change: its plan is the one compiled before, not a copy.
        let (before, after) = (
            plan(&keyed, "api.test", "/v1/b/x"),
            plan(&bound, "api.test", "/v1/b/x"),
        );
        assert!(
            std::sync::Arc::ptr_eq(&before, &after),
            "b was compiled again"
        );
        assert!(!std::sync::Arc::ptr_eq(
            &plan(&keyed, "api.test", "/v1/a/x"),
            &plan(&bound, "api.test", "/v1/a/x")
        ));
    }

    /// A change to one app that fails validation is refused whole, and the routes
    /// serving stay; the event that repairs it is served with everything after it.
    #[tokio::test]
    async fn an_invalid_app_change_is_refused_then_repaired() {
        let mut follower = crate::benching::follower().await.expect("follower");
        let mut model = EdgeConfig::default();
        apply(
            &mut model,
            serde_json::json!({"type": "app_created", "app_id": "a"}),
        );
        start(&mut follower, model).await;
        let good = follower.shared().state.load_full();
        let bad = serde_json::json!({"type": "instance_added", "app_id": "a",
            "upstream": "default", "endpoint": {"address": "not an address"}});
        follower.apply_batch(vec![delta(2, bad)]).await;
        let kept = follower.shared().state.load_full();
        assert_eq!(kept.version, good.version, "the invalid change was served");
        let errors = follower.shared().metrics.control_apply_errors.clone();
        assert_eq!(errors.with_label_values(&["validation"]).get(), 1);

        let fix = serde_json::json!({"type": "instance_removed", "app_id": "a",
            "upstream": "default", "address": "not an address"});
        let bind =
            serde_json::json!({"type": "hostname_bound", "hostname": "a.test", "app_id": "a"});
        follower
            .apply_batch(vec![delta(3, fix), delta(4, bind)])
            .await;
        let fixed = follower.shared().state.load_full();
        assert!(fixed.version > good.version);
        let m = fixed
            .snapshot
            .table
            .lookup("a.test", 443, "/")
            .expect("served");
        assert_eq!(m.app.id, "a");
        assert_eq!(errors.with_label_values(&["validation"]).get(), 1);
    }
}
