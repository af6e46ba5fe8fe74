//! Active health checks: each cluster with a `health_check` probes its endpoints on
//! an interval and flips them after `healthy_threshold`/`unhealthy_threshold` results.
//! A probe is an HTTP `GET` or a gRPC `grpc.health.v1.Health/Check` ([`grpc_health`]),
//! sent on the cluster's own client like any request, within the check's `timeout_ms`.

use super::client;
use super::cluster::Cluster;
use super::endpoint::Endpoint;
use super::grpc_health;
use crate::http::body::RequestBody;
use bytes::BytesMut;
use futures_util::future::join_all;
use http::{Request, StatusCode, Uri};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tollgate_routing::HealthCheckSpec;
use tollgate_routing::model::HealthCheckKind;

/// Starts the probe loop of `cluster`; it stops when the cluster is dropped.
pub fn start(cluster: &Arc<Cluster>) {
    let Some(hc) = cluster.spec.health_check.clone() else {
        return;
    };
    let weak = Arc::downgrade(cluster);
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(hc.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut streaks: Vec<(u32, u32)> = Vec::new();
        loop {
            tick.tick().await;
            let Some(cluster) = weak.upgrade() else { break };
            streaks.resize(cluster.endpoints.len(), (0, 0));
            let results =
                join_all(cluster.endpoints.iter().map(|ep| probe(&cluster, ep, &hc))).await;
            for ((ep, ok), (good, bad)) in cluster
                .endpoints
                .iter()
                .zip(results)
                .zip(streaks.iter_mut())
            {
                if ok {
                    *good += 1;
                    *bad = 0;
                    if *good >= hc.healthy_threshold {
                        ep.set_healthy(true);
                    }
                } else {
                    *bad += 1;
                    *good = 0;
                    if *bad >= hc.unhealthy_threshold {
                        ep.set_healthy(false);
                    }
                }
                ep.refresh_gauge();
            }
        }
    });
    if let Ok(mut slot) = cluster.health_task.lock() {
        *slot = Some(handle.abort_handle());
    }
}

async fn probe(cluster: &Cluster, ep: &Endpoint, hc: &HealthCheckSpec) -> bool {
    let timeout = Duration::from_millis(hc.timeout_ms);
    let checked = match hc.kind {
        HealthCheckKind::Http => tokio::time::timeout(timeout, http_probe(cluster, ep, hc)).await,
        HealthCheckKind::Grpc => {
            tokio::time::timeout(timeout, grpc_probe(cluster, ep, hc, timeout)).await
        }
    };
    match checked {
        Ok(Ok(())) => true,
        Ok(Err(why)) => {
            tracing::debug!(endpoint = %ep.address, %why, "health check failed");
            false
        }
        Err(_) => {
            tracing::debug!(endpoint = %ep.address, "health check timed out");
            false
        }
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
    #[error(transparent)]
    Send(#[from] client::Error),
    #[error("HTTP status {0}")]
    Status(StatusCode),
    #[error("response body: {0}")]
    Body(String),
    #[error(transparent)]
    Grpc(#[from] grpc_health::Unhealthy),
}

fn uri(cluster: &Cluster, ep: &Endpoint, path: &str) -> Result<Uri, http::Error> {
    Uri::builder()
        .scheme(cluster.scheme.clone())
        .authority(ep.authority.clone())
        .path_and_query(path)
        .build()
}

/// `GET path`: any 2xx is healthy.
async fn http_probe(
    cluster: &Cluster,
    ep: &Endpoint,
    hc: &HealthCheckSpec,
) -> Result<(), ProbeError> {
    let mut req = Request::get(uri(cluster, ep, &hc.path)?);
    if cluster.spec.protocol.is_http2() {
        req = req.version(http::Version::HTTP_2);
    }
    let req = req
        .header("user-agent", "tollgate-health-check")
        .body(RequestBody::empty())?;
    let (resp, _slot) = cluster.client.send(ep, req).await?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(ProbeError::Status(resp.status()))
    }
}

/// `grpc.health.v1.Health/Check` for the check's `service`: `SERVING` is healthy.
async fn grpc_probe(
    cluster: &Cluster,
    ep: &Endpoint,
    hc: &HealthCheckSpec,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let mut req = Request::post(uri(cluster, ep, grpc_health::PATH)?)
        .version(http::Version::HTTP_2)
        .body(RequestBody::once(grpc_health::request_body(&hc.service)))?;
    *req.headers_mut() = grpc_health::request_headers(timeout);
    // The stream's place on its connection is held until the answer is read.
    let (resp, _slot) = cluster.client.send(ep, req).await?;
    let (head, mut body) = resp.into_parts();
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProbeError::Body(e.to_string()))?;
        match frame.into_data() {
            Ok(chunk) => {
                if data.len() + chunk.len() > grpc_health::MAX_RESPONSE_BYTES {
                    return Err(ProbeError::Body("larger than a health response".into()));
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    grpc_health::verdict(head.status, &head.headers, &data, trailers.as_ref())?;
    Ok(())
}
