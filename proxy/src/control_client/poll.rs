//! Polling the control service's HTTP API while gRPC is unreachable:
//! `GET /v1/snapshot` → `{"event_id", "config", "last_edge"}` and
//! `GET /v1/events?after=<id>&limit=<n>&edge_id=<id>&edge_fp=<fingerprint>` →
//! `{"events": [{"event_id", "event_type", "event", "fingerprint"}],
//! "last_event_id"}`, both with `Authorization: Bearer <token>`. The `edge_*`
//! parameters are the follower's marker, when it has one; a `410` (`cursor_ahead`,
//! or `log_diverged` when the service's log does not hold the marker's event) makes
//! the next round fetch a snapshot.

use super::follower::{Follower, Outcome, Resync, Update};
use super::settings::ControlSettings;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tollgate_routing::{EdgeConfig, EdgeEvent, EdgeMarker};

/// Events asked for per request.
pub(super) const PAGE: usize = 500;
const MAX_BODY_BYTES: usize = 256 << 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct SnapshotBody {
    event_id: i64,
    /// Decoded apart, so that a config that does not decode is a bad snapshot at a
    /// known event id rather than a failed request.
    config: Box<serde_json::value::RawValue>,
    /// Absent from older services.
    #[serde(default)]
    last_edge: Option<EdgeMarker>,
}

#[derive(Deserialize)]
struct EventsBody {
    events: Vec<EventItem>,
}

#[derive(Deserialize)]
struct EventItem {
    event_id: i64,
    #[serde(default)]
    event_type: String,
    event: serde_json::Value,
    /// Absent from older services.
    #[serde(default)]
    fingerprint: String,
}

/// Why a poll failed.
#[derive(Debug)]
pub(super) enum PollError {
    /// The service answered with this status, the `error.code` of its JSON body if
    /// any, and the start of the body.
    Status(StatusCode, Option<String>, String),
    Other(String),
}

impl std::fmt::Display for PollError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollError::Status(s, _, body) if body.is_empty() => write!(f, "HTTP {s}"),
            PollError::Status(s, _, body) => write!(f, "HTTP {s}: {body}"),
            PollError::Other(e) => f.write_str(e),
        }
    }
}

/// An HTTP client for one control service.
pub(super) struct Poller {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// `scheme://authority[/prefix]` without a trailing slash.
    base: String,
    bearer: Option<HeaderValue>,
}

impl Poller {
    pub(super) fn new(url: &Uri, settings: &ControlSettings) -> Result<Self, String> {
        let client = super::http::client(settings.ca_file.as_deref(), Duration::from_secs(5))
            .map_err(|e| format!("[control] {e}"))?;
        let bearer = settings
            .bearer()
            .map(|b| HeaderValue::from_str(&b))
            .transpose()
            .map_err(|_| "the token is not a valid header value".to_string())?;
        let text = url.to_string();
        Ok(Poller {
            client,
            base: text.trim_end_matches('/').to_string(),
            bearer,
        })
    }

    /// The body of a successful `GET path`.
    async fn get_bytes(&self, path: &str) -> Result<Bytes, PollError> {
        let other = |e: &dyn std::fmt::Display| PollError::Other(e.to_string());
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| other(&e))?;
        let mut request = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| other(&e))?;
        if let Some(b) = &self.bearer {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, b.clone());
        }
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| PollError::Other("timed out".into()))?
            .map_err(|e| other(&e))?;
        let status = response.status();
        let body = tokio::time::timeout(
            REQUEST_TIMEOUT,
            Limited::new(response.into_body(), MAX_BODY_BYTES).collect(),
        )
        .await
        .map_err(|_| PollError::Other("timed out reading the body".into()))?
        .map_err(|e| other(&e))?
        .to_bytes();
        if !status.is_success() {
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(PollError::Status(status, code, text));
        }
        Ok(body)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, PollError> {
        let body = self.get_bytes(path).await?;
        serde_json::from_slice(&body).map_err(|e| PollError::Other(format!("{path}: {e}")))
    }

    /// `GET /v1/snapshot`: the update, the event id it is current at and its marker.
    async fn snapshot(&self) -> Result<(i64, Option<EdgeMarker>, Update), PollError> {
        let body = self.get_bytes("/v1/snapshot").await?;
        // Tens of MiB at tenant scale: decoded off the async workers.
        let decoded = tokio::task::spawn_blocking(move || {
            let body: SnapshotBody = serde_json::from_slice(&body)?;
            let config = serde_json::from_str::<EdgeConfig>(body.config.get());
            Ok::<_, serde_json::Error>((body.event_id, body.last_edge, config))
        })
        .await
        .map_err(|e| PollError::Other(format!("decoding the snapshot: {e}")))?
        .map_err(|e| PollError::Other(format!("/v1/snapshot: {e}")))?;
        let (id, last_edge, config) = decoded;
        let last_edge = last_edge
            .and_then(|m| EdgeMarker::checked(m.event_id, m.fingerprint))
            .filter(|m| m.event_id <= id);
        let update = match config {
            Ok(config) => Update::Snapshot {
                event_id: id,
                config,
                last_edge: last_edge.clone(),
                // Asked for: a resync is counted where the `410` was.
                resync: None,
            },
            Err(e) => Update::BadSnapshot {
                event_id: id,
                error: e.to_string(),
            },
        };
        Ok((id, last_edge, update))
    }

    /// `GET /v1/events?after=..&limit=..[&edge_id=..&edge_fp=..]`, in event-id order.
    async fn events(
        &self,
        after: i64,
        marker: Option<&EdgeMarker>,
    ) -> Result<Vec<Update>, PollError> {
        // Markers are checked well formed (letters and digits) when received.
        let edge = marker.map_or(String::new(), |m| {
            format!("&edge_id={}&edge_fp={}", m.event_id, m.fingerprint)
        });
        let body: EventsBody = self
            .get(&format!("/v1/events?after={after}&limit={PAGE}{edge}"))
            .await?;
        let mut updates: Vec<Update> = body
            .events
            .into_iter()
            .map(|item| {
                let decoded =
                    serde_json::from_value::<EdgeEvent>(item.event).map_err(|e| e.to_string());
                Update::decoded(item.event_id, &item.event_type, decoded, item.fingerprint)
            })
            .collect();
        updates.sort_by_key(|u| match u {
            Update::Delta { event_id, .. } | Update::BadDelta { event_id, .. } => *event_id,
            _ => 0,
        });
        Ok(updates)
    }
}

/// One round: a snapshot when the follower needs one, then the events after the
/// cursor, applied as one batch. Returns whether to poll again right away.
pub(super) async fn poll_once(follower: &mut Follower, poller: &Poller) -> Result<bool, String> {
    let mut updates = Vec::new();
    let mut after = follower.cursor();
    let mut marker = follower.resume_marker().cloned();
    if follower.needs_snapshot() {
        let (id, last_edge, update) = poller.snapshot().await.map_err(|e| e.to_string())?;
        after = id;
        marker = last_edge;
        updates.push(update);
    }
    let page = match poller.events(after, marker.as_ref()).await {
        Ok(page) => page,
        // The service cannot serve events from this cursor: beyond the end of its log,
        // or its log does not hold the marker's event (restored or replaced).
        Err(PollError::Status(StatusCode::GONE, code, _)) => {
            tracing::debug!(after, code, "control service cannot resume from the cursor");
            follower.request_snapshot(Resync::of_gone(code.as_deref()));
            return Ok(true);
        }
        Err(e) => {
            // Serve the snapshot already fetched; the events come next round.
            if !updates.is_empty() {
                follower.apply_batch(updates).await;
            }
            return Err(e.to_string());
        }
    };
    let full = page.len() >= PAGE;
    updates.extend(page);
    if updates.is_empty() {
        return Ok(false);
    }
    match follower.apply_batch(updates).await {
        Outcome::Continue => Ok(full),
        Outcome::Resync => Ok(true),
        Outcome::Broken(reason) => Err(reason),
    }
}
