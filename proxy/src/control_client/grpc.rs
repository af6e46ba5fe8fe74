//! The `EdgeFeed.Watch` stream: open it at the cursor and fold what it sends.

use super::follower::{Follower, Outcome, Update};
use super::settings::ControlSettings;
use flate2::read::GzDecoder;
use futures_util::FutureExt;
use http::Uri;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use std::borrow::Cow;
use std::io::Read;
use std::time::Duration;
use tollgate_proto::control::v1::edge_feed_client::EdgeFeedClient;
use tollgate_proto::control::v1::watch_response::Kind;
use tollgate_proto::control::v1::{EdgeMarker as WireMarker, WatchRequest, WatchResponse};
use tollgate_routing::EdgeMarker;
use tonic::Streaming;
use tonic::transport::Endpoint;

/// Messages folded into one rebuild at most.
const MAX_BATCH: usize = 1024;
/// Snapshots carry every certificate and key: allow far more than tonic's 4 MiB.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// How a followed stream ended.
#[derive(Debug)]
pub(super) enum SessionEnd {
    /// The model diverged: reconnect at once asking for a snapshot.
    Resync,
    /// Closed or failed; `progressed` when it delivered something usable first.
    Ended { progressed: bool, reason: String },
}

/// Connects and calls `Watch(after_event_id = after, last_edge = marker)`.
pub(super) async fn open(
    settings: &ControlSettings,
    url: &Uri,
    after: i64,
    marker: Option<&EdgeMarker>,
) -> Result<Streaming<WatchResponse>, String> {
    let endpoint = Endpoint::from(url.clone())
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let channel = if url.scheme_str() == Some("https") {
        let tls = tollgate_certs::client_config(settings.ca_file.as_deref())
            .map_err(|e| format!("[control] ca_file: {e}"))?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http2()
            .wrap_connector(tcp);
        endpoint.connect_with_connector(connector).await
    } else {
        endpoint.connect().await
    }
    .map_err(|e| format!("connect {url}: {}", chain(&e)))?;
    let mut client = EdgeFeedClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let mut request = tonic::Request::new(WatchRequest {
        after_event_id: after,
        node_id: settings.node_id.clone(),
        last_edge: marker.map(|m| WireMarker {
            event_id: m.event_id,
            fingerprint: m.fingerprint.clone(),
        }),
        gzip_snapshot: true,
    });
    if let Some(bearer) = settings.bearer() {
        let value = bearer
            .parse()
            .map_err(|_| "the token is not a valid header value".to_string())?;
        request.metadata_mut().insert("authorization", value);
    }
    let response = client.watch(request).await.map_err(|s| status_text(&s))?;
    Ok(response.into_inner())
}

/// Folds the stream into `follower` until it ends, rebuilding once per batch of
/// messages that arrived together.
pub(super) async fn follow(
    follower: &mut Follower,
    mut stream: Streaming<WatchResponse>,
) -> SessionEnd {
    let mut progressed = false;
    loop {
        let first = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return ended(progressed, "the service closed the stream".into()),
            Err(s) => return ended(progressed, status_text(&s)),
        };
        let mut batch = Vec::new();
        push(&mut batch, first).await;
        let mut end = None;
        // Coalesce: take whatever else is already buffered without waiting, so a burst
        // of deltas costs one rebuild. `message()` keeps its state in the stream, so
        // dropping the pending future here loses nothing.
        while batch.len() < MAX_BATCH {
            match stream.message().now_or_never() {
                None => break,
                Some(Ok(Some(m))) => push(&mut batch, m).await,
                Some(Ok(None)) => {
                    end = Some("the service closed the stream".to_string());
                    break;
                }
                Some(Err(s)) => {
                    end = Some(status_text(&s));
                    break;
                }
            }
        }
        if batch.is_empty() {
            if let Some(reason) = end {
                return ended(progressed, reason);
            }
            continue;
        }
        match follower.apply_batch(batch).await {
            Outcome::Continue => progressed = true,
            Outcome::Resync => return SessionEnd::Resync,
            Outcome::Broken(reason) => return ended(false, reason),
        }
        if let Some(reason) = end {
            return ended(progressed, reason);
        }
    }
}

fn ended(progressed: bool, reason: String) -> SessionEnd {
    SessionEnd::Ended { progressed, reason }
}

async fn push(batch: &mut Vec<Update>, message: WatchResponse) {
    match message.kind {
        Some(Kind::Snapshot(s)) => {
            let last_edge = s
                .last_edge
                .and_then(|m| EdgeMarker::checked(m.event_id, m.fingerprint))
                .filter(|m| m.event_id <= s.event_id);
            let event_id = s.event_id;
            // Tens of MiB of JSON at tenant scale: decoded off the async workers.
            let decoded = tokio::task::spawn_blocking(move || {
                match plain_config(&s.config_json, &s.config_encoding) {
                    Ok(json) => Update::snapshot(event_id, &json, last_edge, &s.reason),
                    Err(error) => Update::BadSnapshot { event_id, error },
                }
            })
            .await;
            batch.push(decoded.unwrap_or_else(|e| Update::BadSnapshot {
                event_id,
                error: format!("decoding the snapshot: {e}"),
            }))
        }
        Some(Kind::Delta(d)) => batch.push(Update::delta(
            d.event_id,
            &d.event_type,
            &d.event_json,
            d.fingerprint,
        )),
        None => tracing::debug!("control feed message without a kind; ignored"),
    }
}

/// A snapshot's config as plain JSON: `config_json` itself, or inflated when the
/// service compressed it, up to [`MAX_MESSAGE_BYTES`].
fn plain_config<'a>(bytes: &'a [u8], encoding: &str) -> Result<Cow<'a, [u8]>, String> {
    match encoding {
        "" => Ok(Cow::Borrowed(bytes)),
        "gzip" => {
            let mut json = Vec::with_capacity(bytes.len().saturating_mul(8).min(MAX_MESSAGE_BYTES));
            GzDecoder::new(bytes)
                .take(MAX_MESSAGE_BYTES as u64 + 1)
                .read_to_end(&mut json)
                .map_err(|e| format!("inflating the snapshot: {e}"))?;
            if json.len() > MAX_MESSAGE_BYTES {
                return Err(format!(
                    "the snapshot inflates past {} MiB",
                    MAX_MESSAGE_BYTES >> 20
                ));
            }
            Ok(Cow::Owned(json))
        }
        other => Err(format!("unknown snapshot config_encoding `{other}`")),
    }
}

fn status_text(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {}", s.code(), s.message())
    }
}

/// An error and its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{MAX_MESSAGE_BYTES, plain_config};
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn snapshots_are_inflated_when_compressed_and_kept_when_plain() {
        let json = br#"{"apps":[]}"#;
        assert_eq!(&*plain_config(json, "").unwrap(), json);
        assert_eq!(&*plain_config(&gzip(json), "gzip").unwrap(), json);
        let err = plain_config(json, "br").unwrap_err();
        assert!(err.contains("config_encoding"), "{err}");
        let err = plain_config(b"not gzip", "gzip").unwrap_err();
        assert!(err.contains("inflating"), "{err}");
    }

    #[test]
    fn a_snapshot_inflating_past_the_cap_is_refused() {
        // A few hundred KiB of zeros that inflate past the message cap.
        let bomb = gzip(&vec![0u8; MAX_MESSAGE_BYTES + 1]);
        let err = plain_config(&bomb, "gzip").unwrap_err();
        assert!(err.contains("inflates past"), "{err}");
    }
}
