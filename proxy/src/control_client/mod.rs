//! Following the control service: the proxy's side of the edge feed.
//!
//! With a `[control]` table, routes, apps, keys, issuers and certificates come only
//! from the control service. The proxy keeps the service's edge model
//! ([`tollgate_routing::EdgeConfig`]) and the id of the last event folded into it
//! (the cursor):
//!
//! - `EdgeFeed.Watch(after_event_id = cursor)` streams a snapshot (replaces the model)
//!   and/or deltas (applied with [`EdgeConfig::apply`](tollgate_routing::EdgeConfig::apply)).
//!   Messages that arrive together are folded first and built once.
//! - After each batch the model is compiled ([`routing_spec`], certificates) and swapped
//!   into [`Shared`] in one step. A result that does not validate is refused: the last
//!   good config keeps serving, `tollgate_control_apply_errors_total{kind}` counts it,
//!   and the model and cursor still advance, since a later event may fix it.
//! - Reconnects back off exponentially with jitter (100 ms to `reconnect_max_ms`) and
//!   resume from the cursor, naming the last edge event applied (id and fingerprint:
//!   the marker). A service whose log no longer holds that event (restored from a
//!   backup, or another database) answers with a snapshot instead, which replaces the
//!   model; `tollgate_control_resyncs_total{reason}` counts such resyncs. After
//!   `fallback_after_failures` failed attempts the proxy polls `http_url` until gRPC
//!   works again.
//! - Every applied model is written to `state_dir/edge-snapshot.json` with its cursor
//!   and marker; at start it is served before the listeners open, so a proxy started
//!   while the service is down serves what it served before.
//!
//! [`routing_spec`]: tollgate_routing::EdgeConfig::routing_spec

mod follower;
mod grpc;
pub mod http;
pub mod persist;
mod poll;
pub mod settings;

pub use follower::{Follower, Outcome, Resync, Update, cert_source};
pub use settings::{ControlConfig, ControlSettings};

use crate::state::Shared;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How the proxy currently hears from the control service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Disconnected = 0,
    Grpc = 1,
    Http = 2,
}

/// What the admin API shows about the feed; shared with the follower.
#[derive(Debug)]
pub struct ControlStatus {
    node_id: String,
    cursor: AtomicI64,
    /// The marker's event id; -1 without a marker.
    last_edge: AtomicI64,
    serving: AtomicI64,
    transport: AtomicU8,
    /// A config from the control service (the feed's or a persisted one) is serving.
    configured: std::sync::atomic::AtomicBool,
}

impl ControlStatus {
    pub fn new(node_id: String) -> Self {
        ControlStatus {
            node_id,
            cursor: AtomicI64::new(0),
            last_edge: AtomicI64::new(-1),
            serving: AtomicI64::new(0),
            transport: AtomicU8::new(Transport::Disconnected as u8),
            configured: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether any config from the control service serves yet: until then the proxy
    /// routes nothing and is not ready.
    pub fn configured(&self) -> bool {
        self.configured.load(Ordering::Acquire)
    }

    /// The last event folded into the model.
    pub fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Relaxed)
    }

    /// The cursor of the config being served (behind `cursor` while refused).
    /// Acquire: pairs with [`Self::set_serving`], so the config read after this is
    /// at least the one it names.
    pub fn serving_event_id(&self) -> i64 {
        self.serving.load(Ordering::Acquire)
    }

    pub fn transport(&self) -> Transport {
        match self.transport.load(Ordering::Relaxed) {
            1 => Transport::Grpc,
            2 => Transport::Http,
            _ => Transport::Disconnected,
        }
    }

    fn set_cursor(&self, id: i64) {
        self.cursor.store(id, Ordering::Relaxed);
    }

    /// The id of the last edge event in the model, if the service named it (the marker
    /// a resume sends).
    pub fn last_edge_event_id(&self) -> Option<i64> {
        let id = self.last_edge.load(Ordering::Relaxed);
        (id >= 0).then_some(id)
    }

    fn set_last_edge(&self, id: Option<i64>) {
        self.last_edge.store(id.unwrap_or(-1), Ordering::Relaxed);
    }

    /// Called after the config of `id` is swapped in (Release: see above).
    fn set_serving(&self, id: i64) {
        self.serving.store(id, Ordering::Release);
        self.configured.store(true, Ordering::Release);
    }

    fn set_transport(&self, t: Transport) {
        self.transport.store(t as u8, Ordering::Relaxed);
    }

    /// The `control` field of the admin `/config` view.
    pub fn view(&self) -> Value {
        let transport = match self.transport() {
            Transport::Disconnected => Value::Null,
            Transport::Grpc => "grpc".into(),
            Transport::Http => "http".into(),
        };
        json!({
            "node_id": self.node_id,
            "event_id": self.cursor(),
            "last_edge_event_id": self.last_edge_event_id(),
            "serving_event_id": self.serving_event_id(),
            "connected": self.transport() != Transport::Disconnected,
            "transport": transport,
        })
    }
}

/// Exponential backoff with jitter: each delay is drawn from the upper half of a
/// window that doubles from `base` up to `max`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    window: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            window: base,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let w = self.window;
        self.window = (w * 2).min(self.max);
        let half = w / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.window = self.base;
    }
}

/// Registers the feed's status with `shared` and serves the persisted snapshot, if
/// there is a usable one. Call before the listeners serve.
pub async fn prepare(shared: &Arc<Shared>, settings: &ControlSettings) -> Follower {
    let status = Arc::new(ControlStatus::new(settings.node_id.clone()));
    if shared.control.set(status.clone()).is_err() {
        tracing::warn!("control status registered twice");
    }
    let persister = persist::Persister::spawn(settings.state_file.clone(), shared.metrics.clone());
    let mut follower = Follower::new(
        shared.clone(),
        status,
        settings.default_certificate.clone(),
        Some(persister),
    );
    let path = settings.state_file.clone();
    let read = tokio::task::spawn_blocking(move || persist::read(&path))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let file = settings.state_file.display().to_string();
    match read {
        Ok(Some(state)) => {
            let event_id = state.event_id;
            match follower.restore(state).await {
                Ok(version) => tracing::info!(
                    file,
                    event_id,
                    version,
                    "serving the persisted control snapshot until the feed catches up"
                ),
                Err(_) => tracing::warn!(
                    file,
                    event_id,
                    "the persisted control snapshot does not build; resuming the feed from it"
                ),
            }
        }
        Ok(None) => tracing::info!(
            file,
            "no persisted control snapshot: nothing is routed until the feed arrives"
        ),
        Err(error) => {
            shared
                .metrics
                .control_apply_errors
                .with_label_values(&["state_file"])
                .inc();
            tracing::warn!(
                file,
                error,
                "ignoring an unreadable persisted control snapshot: nothing is routed until the feed arrives"
            );
        }
    }
    follower
}

/// Follows the control service until `stop` turns true.
pub async fn run(
    mut follower: Follower,
    settings: ControlSettings,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = follow(&mut follower, &settings) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    set_transport(&follower, Transport::Disconnected);
}

fn set_transport(follower: &Follower, t: Transport) {
    follower.status().set_transport(t);
    follower
        .shared()
        .metrics
        .control_connected
        .set(i64::from(t != Transport::Disconnected));
}

async fn follow(follower: &mut Follower, settings: &ControlSettings) {
    let poller =
        settings
            .http_url
            .as_ref()
            .and_then(|url| match poll::Poller::new(url, settings) {
                Ok(p) => Some(p),
                Err(error) => {
                    tracing::error!(error, "HTTP polling of the control service is unavailable");
                    None
                }
            });
    let mut backoff = Backoff::new(Duration::from_millis(100), settings.reconnect_max);
    let mut failures = 0u32;
    loop {
        if let Some(url) = &settings.grpc_url {
            let after = follower.resume_from();
            let marker = follower.resume_marker().cloned();
            match grpc::open(settings, url, after, marker.as_ref()).await {
                Ok(stream) => {
                    set_transport(follower, Transport::Grpc);
                    tracing::info!(
                        %url,
                        after_event_id = after,
                        last_edge_event_id = marker.as_ref().map(|m| m.event_id),
                        "following the control feed over gRPC"
                    );
                    let end = grpc::follow(follower, stream).await;
                    set_transport(follower, Transport::Disconnected);
                    match end {
                        grpc::SessionEnd::Resync => {
                            failures = 0;
                            backoff.reset();
                            continue;
                        }
                        grpc::SessionEnd::Ended { progressed, reason } => {
                            if progressed {
                                failures = 0;
                                backoff.reset();
                            } else {
                                failures += 1;
                            }
                            tracing::warn!(
                                reason,
                                cursor = follower.cursor(),
                                "control feed ended; reconnecting"
                            );
                        }
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(attempt = failures, error, "cannot open the control feed");
                }
            }
        }
        let delay = backoff.next_delay();
        match &poller {
            Some(p) if settings.grpc_url.is_none() => poll_for(follower, p, settings, None).await,
            Some(p) if failures >= settings.fallback_after => {
                poll_for(follower, p, settings, Some(delay)).await
            }
            _ => tokio::time::sleep(delay).await,
        }
    }
}

/// Polls `http_url` for `window` (forever when `None`), then returns so gRPC is
/// tried again.
async fn poll_for(
    follower: &mut Follower,
    poller: &poll::Poller,
    settings: &ControlSettings,
    window: Option<Duration>,
) {
    let until = window.map(|w| tokio::time::Instant::now() + w);
    let mut failing = false;
    loop {
        match poll::poll_once(follower, poller).await {
            Ok(more) => {
                if follower.status().transport() != Transport::Http {
                    tracing::info!(
                        cursor = follower.cursor(),
                        "following the control service by HTTP polling"
                    );
                }
                set_transport(follower, Transport::Http);
                failing = false;
                if more {
                    continue;
                }
            }
            Err(error) => {
                set_transport(follower, Transport::Disconnected);
                if failing {
                    tracing::debug!(error, "control poll failed");
                } else {
                    tracing::warn!(error, "control poll failed");
                }
                failing = true;
            }
        }
        let mut wait = settings.poll_interval;
        if let Some(until) = until {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            wait = wait.min(left);
        }
        tokio::time::sleep(wait).await;
    }
    // gRPC is tried next; the gauge follows whichever answers.
    set_transport(follower, Transport::Disconnected);
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        for window in [100, 200, 400, 800, 1000, 1000] {
            let d = b.next_delay();
            assert!(
                d >= ms(window / 2) && d <= ms(window),
                "{d:?} not in {window}/2..={window}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
    }
}
