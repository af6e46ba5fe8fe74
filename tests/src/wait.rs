//! Bounded polling: retry a check until it yields a value or a generous deadline passes.

use crate::proxy::ProxyProcess;
use std::future::Future;
use std::time::{Duration, Instant};

/// Deadline for things that should happen "soon" on a loaded machine.
pub const SOON: Duration = Duration::from_secs(30);

/// Calls `check` every 50 ms until it returns `Some`; panics naming `what` after `timeout`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The admin `/config` view as JSON.
pub async fn config_view(proxy: &ProxyProcess) -> serde_json::Value {
    let (status, body) = proxy.admin_get("/config").await.expect("GET /config");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/config is not JSON ({e}): {body}"))
}

/// `available` of each endpoint of `app`'s clusters in the admin `/config`, by address.
pub async fn availability(
    proxy: &ProxyProcess,
    app: &str,
) -> std::collections::HashMap<String, bool> {
    let v = config_view(proxy).await;
    let mut out = std::collections::HashMap::new();
    for c in v["upstreams"].as_array().expect("upstreams") {
        if c["app"] != app {
            continue;
        }
        for e in c["endpoints"].as_array().expect("endpoints") {
            let address = e["address"].as_str().expect("address").to_string();
            out.insert(address, e["available"].as_bool().expect("available"));
        }
    }
    out
}

/// The active config version from `/config`.
pub async fn config_version(proxy: &ProxyProcess) -> u64 {
    let v = config_view(proxy).await;
    v["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in /config: {v}"))
}

/// Waits until `/config` reports `version`; returns it.
pub async fn config_version_reaches(proxy: &ProxyProcess, version: u64) -> u64 {
    until(&format!("config version {version}"), SOON, || async {
        let v = config_version(proxy).await;
        (v >= version).then_some(v)
    })
    .await
}

/// Waits until a proxy following the control service has both its cursor and its
/// served config at exactly `event_id`; returns its `/config`.
pub async fn settled_at(
    proxy: &ProxyProcess,
    event_id: i64,
    within: Duration,
) -> serde_json::Value {
    until(
        &format!("the proxy to settle at event {event_id}"),
        within,
        || async {
            let view = config_view(proxy).await;
            let c = &view["control"];
            (c["event_id"].as_i64() == Some(event_id)
                && c["serving_event_id"].as_i64() == Some(event_id))
            .then_some(view)
        },
    )
    .await
}
