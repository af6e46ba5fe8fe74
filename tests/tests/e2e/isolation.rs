//! One tenant's bad object degrades that tenant alone, visibly, never the whole config.
//!
//! - A certificate that lapses is served on (its clients see the expiry), reported in
//!   metrics, `/config` and the log, and blocks no config: file start, file reload,
//!   control feed and the persisted snapshot. Newly added expired certificates are
//!   still refused.
//! - A limits block from the feed that this proxy cannot parse refuses that app (503),
//!   instead of serving it without limits or refusing every app.
//!
//! Waits are bounded polls; "later than a certificate's `notAfter`" is waited for
//! by the wall clock, never raced.

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tollgate_tests::auth::get;
use tollgate_tests::config::{Config, Files};
use tollgate_tests::control::ControlProcess;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::tls::{self, TestCert, client_config, now_unix};
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::{config_view, until};

const CATCH_UP: Duration = Duration::from_secs(60);
const DAY: u64 = 86_400;
const LAPSED_LOG: &str = "certificate outside its validity window";

/// Sleeps until the wall clock is past `unix` (plus a second for rounding).
async fn wait_past(unix: u64) {
    while now_unix() <= unix + 1 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `/config` certificate entry serving `name`.
fn cert_entry(view: &Value, name: &str) -> Option<Value> {
    view["certificates"]
        .as_array()?
        .iter()
        .find(|c| {
            c["names"]
                .as_array()
                .is_some_and(|n| n.contains(&json!(name)))
        })
        .cloned()
}

/// A TLS handshake for `sni` trusting `cert`; the error text when it fails.
async fn handshake(proxy: &ProxyProcess, sni: &str, cert: &TestCert) -> Result<(), String> {
    let cfg = client_config(&[cert], &[b"http/1.1"]);
    tls::connect(proxy.addr("tls"), sni, cfg)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_lapsed_certificate_in_the_config_file_is_served_reported_and_blocks_no_reload() {
    let upstream = Upstream::start("up").await;
    let now = now_unix();
    let fresh = TestCert::new(&["a.test"]);
    let lapsed = TestCert::valid_between(&["b.test"], now - 2 * DAY, now - DAY);
    let cfg = Config::new()
        .tls_listener("tls", "")
        .listener("http")
        .cert("a")
        .cert("b")
        .app("alpha", &["a.test"], upstream.addr)
        .app("beta", &["b.test"], upstream.addr);
    let files = Files::new().cert("a", &fresh).cert("b", &lapsed);
    let proxy = ProxyProcess::start(&cfg.build(), &files.refs())
        .expect("a lapsed certificate does not stop the proxy from starting");

    handshake(&proxy, "a.test", &fresh)
        .await
        .expect("the other tenant's certificate is served");
    let err = handshake(&proxy, "b.test", &lapsed)
        .await
        .expect_err("the client sees the expiry");
    assert!(err.to_lowercase().contains("expired"), "{err}");
    assert_eq!(
        get(proxy.addr("http"), false, "b.test", "/", &[])
            .await
            .status,
        200,
        "the tenant's routes still work"
    );

    assert_eq!(
        proxy
            .metric("tollgate_certificates_expired", &[])
            .await
            .unwrap(),
        1.0
    );
    let lapsed_at = now - DAY;
    let soonest = proxy
        .metric(
            "tollgate_certificates_soonest_expiry_timestamp_seconds",
            &[],
        )
        .await
        .unwrap();
    assert!(
        (soonest - lapsed_at as f64).abs() <= 1.0,
        "{soonest} vs {lapsed_at}"
    );
    let view = config_view(&proxy).await;
    assert_eq!(
        cert_entry(&view, "b.test").unwrap()["state"],
        "expired",
        "{view}"
    );
    assert_eq!(
        cert_entry(&view, "a.test").unwrap()["state"],
        "valid",
        "{view}"
    );

    // A reload keeps the certificate it already served, and logs it only once.
    let reloads_ok = r#"result="ok""#;
    proxy.signal("HUP").unwrap();
    let ok = proxy
        .wait_metric(
            "tollgate_config_reloads_total",
            &[reloads_ok],
            CATCH_UP,
            |v| v >= 1.0,
        )
        .await
        .unwrap();
    assert_eq!(ok, 1.0, "{}", proxy.logs());
    assert_eq!(
        proxy.logs().matches(LAPSED_LOG).count(),
        1,
        "{}",
        proxy.logs()
    );

    // A newly added certificate that is already expired is refused, as a whole.
    let stale = TestCert::valid_between(&["c.test"], now - 2 * DAY, now - DAY);
    proxy.write_file("c.crt", &stale.cert_pem).unwrap();
    proxy.write_file("c.key", &stale.key_pem).unwrap();
    proxy
        .write_config(
            &cfg.clone()
                .cert("c")
                .app("gamma", &["c.test"], upstream.addr)
                .build(),
        )
        .unwrap();
    let refused = proxy
        .wait_metric(
            "tollgate_config_reloads_total",
            &[r#"result="error""#],
            CATCH_UP,
            |v| v >= 1.0,
        )
        .await
        .unwrap();
    assert_eq!(refused, 1.0, "{}", proxy.logs());
    let view = config_view(&proxy).await;
    assert!(cert_entry(&view, "c.test").is_none(), "{view}");
    assert_eq!(
        get(proxy.addr("http"), false, "c.test", "/", &[])
            .await
            .status,
        404,
        "the refused reload changed nothing"
    );
}

/// A proxy following `cp` with a plain and a TLS listener.
fn edge_config(cp: &ControlProcess, state_dir: &Path) -> String {
    Config::new()
        .listener("http")
        .tls_listener("tls", "")
        .raw(&cp.proxy_table("edge-iso", state_dir))
        .build()
}

/// Creates app `id` with `upstream` and binds `host` to it; returns the last event id.
async fn tenant(cp: &ControlProcess, id: &str, host: &str, upstream: &Upstream) -> i64 {
    cp.write("POST", "/api/v1/apps", Some(&json!({"id": id})))
        .await;
    cp.write(
        "POST",
        &format!("/api/v1/apps/{id}/upstreams/default/instances"),
        Some(&json!({"address": upstream.addr.to_string()})),
    )
    .await;
    cp.write(
        "PUT",
        &format!("/api/v1/hostnames/{host}"),
        Some(&json!({"app": id})),
    )
    .await
}

async fn serves(proxy: &ProxyProcess, host: &str) {
    until(&format!("{host} to be served"), CATCH_UP, || async {
        (get(proxy.addr("http"), false, host, "/", &[]).await.status == 200).then_some(())
    })
    .await;
}

/// Seconds the short-lived certificate stays valid after it is made.
const LAPSE: u64 = 10;

#[tokio::test]
async fn a_certificate_that_lapses_under_the_control_service_takes_no_tenant_down() {
    let mut cp = ControlProcess::start()
        .await
        .expect("control service starts");
    let upstream = Upstream::start("up").await;
    tenant(&cp, "alpha", "a.test", &upstream).await;
    // Valid when uploaded (the API checks) and when the proxy first loads it, lapsing
    // seconds later: 10 s leaves a busy machine room for the upload and the start.
    let now = now_unix();
    let short = TestCert::valid_between(&["a.test"], now - DAY, now + LAPSE);
    let (status, v) = cp
        .api(
            "POST",
            "/api/v1/certificates",
            Some(&json!({"id": "a-cert", "cert_pem": short.cert_pem, "key_pem": short.key_pem})),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    let state = tempfile::tempdir().unwrap();
    let config = edge_config(&cp, state.path());
    let proxy = ProxyProcess::start(&config, &[]).expect("proxy starts");
    serves(&proxy, "a.test").await;
    wait_past(now + LAPSE).await;

    // Every later change still reaches the edge.
    let last = tenant(&cp, "beta", "b.test", &upstream).await;
    serves(&proxy, "b.test").await;
    let errors = proxy
        .metric("tollgate_control_apply_errors_total", &[])
        .await
        .unwrap();
    assert_eq!(errors, 0.0, "{}", proxy.logs());
    let expired = proxy
        .wait_metric("tollgate_certificates_expired", &[], CATCH_UP, |v| v >= 1.0)
        .await
        .unwrap();
    assert_eq!(expired, 1.0);
    let view = config_view(&proxy).await;
    assert_eq!(
        cert_entry(&view, "a.test").unwrap()["state"],
        "expired",
        "{view}"
    );
    let err = handshake(&proxy, "a.test", &short)
        .await
        .expect_err("expired");
    assert!(err.to_lowercase().contains("expired"), "{err}");

    // Restarted with the service down, the proxy serves its persisted snapshot.
    let snapshot = state.path().join("edge-snapshot.json");
    until("the persisted snapshot", CATCH_UP, || async {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&snapshot).ok()?).ok()?;
        (v["event_id"].as_i64()? >= last).then_some(())
    })
    .await;
    drop(proxy);
    cp.kill().expect("kill the control service");
    let proxy = ProxyProcess::start(&config, &[]).expect("proxy starts without the service");
    for host in ["a.test", "b.test"] {
        let r = get(proxy.addr("http"), false, host, "/", &[]).await;
        assert_eq!(r.status, 200, "{host}: {}\n{}", r.body, proxy.logs());
    }
}

#[tokio::test]
async fn a_limits_block_the_proxy_cannot_parse_refuses_that_app_alone() {
    let cp = ControlProcess::start()
        .await
        .expect("control service starts");
    let upstream = Upstream::start("up").await;
    tenant(&cp, "alpha", "a.test", &upstream).await;
    tenant(&cp, "beta", "b.test", &upstream).await;
    let state = tempfile::tempdir().unwrap();
    let proxy = ProxyProcess::start(&edge_config(&cp, state.path()), &[]).expect("proxy starts");
    serves(&proxy, "a.test").await;
    serves(&proxy, "b.test").await;

    // What a newer control service (or a hand-edited log) may hold: a limits block
    // this proxy does not understand. The API refuses it; write it to the log.
    cp.append_raw(
        "app",
        "alpha",
        &json!({"type": "limits_set", "app_id": "alpha",
               "limits": {"rate": [{"key": "app", "per_second": 1, "shard_hint": 3}]}}),
    )
    .await;
    until("alpha refused", CATCH_UP, || async {
        let r = get(proxy.addr("http"), false, "a.test", "/", &[]).await;
        (r.status == 503).then_some(r)
    })
    .await;
    let r = get(proxy.addr("http"), false, "a.test", "/", &[]).await;
    assert!(r.body.contains("app_config_invalid"), "{}", r.body);
    assert_eq!(
        get(proxy.addr("http"), false, "b.test", "/", &[])
            .await
            .status,
        200
    );
    assert_eq!(
        proxy
            .metric("tollgate_config_apps_degraded", &[])
            .await
            .unwrap(),
        1.0
    );
    assert_eq!(
        proxy
            .metric("tollgate_control_apply_errors_total", &[])
            .await
            .unwrap(),
        0.0
    );
    let view = config_view(&proxy).await;
    let alpha = view["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "alpha")
        .cloned()
        .unwrap();
    assert!(
        alpha["degraded"]
            .as_str()
            .is_some_and(|d| d.contains("limits")),
        "{alpha}"
    );

    // Fixed through the API, the app is served again.
    cp.write(
        "PUT",
        "/api/v1/apps/alpha/limits",
        Some(&json!({"rate": [{"key": "app", "per_second": 1000}]})),
    )
    .await;
    serves(&proxy, "a.test").await;
    assert_eq!(
        proxy
            .metric("tollgate_config_apps_degraded", &[])
            .await
            .unwrap(),
        0.0
    );
}
