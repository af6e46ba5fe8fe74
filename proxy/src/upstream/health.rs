//! Active health checks: each cluster with a `health_check` probes its endpoints on
//! an interval and flips them after `healthy_threshold`/`unhealthy_threshold` results.

use super::cluster::Cluster;
use super::endpoint::Endpoint;
use crate::http::body::RequestBody;
use futures_util::future::join_all;
use http::{Request, Uri};
use std::sync::Arc;
use std::time::Duration;
use tollgate_routing::HealthCheckSpec;

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
    let uri = Uri::builder()
        .scheme(cluster.scheme.clone())
        .authority(ep.authority.clone())
        .path_and_query(hc.path.as_str())
        .build();
    let Ok(uri) = uri else { return false };
    let mut req = Request::get(uri);
    if cluster.spec.protocol.is_http2() {
        req = req.version(http::Version::HTTP_2);
    }
    let Ok(req) = req
        .header("user-agent", "tollgate-health-check")
        .body(RequestBody::empty())
    else {
        return false;
    };
    let timeout = Duration::from_millis(hc.timeout_ms);
    match tokio::time::timeout(timeout, cluster.client.request(req)).await {
        Ok(Ok(resp)) => resp.status().is_success(),
        _ => false,
    }
}
