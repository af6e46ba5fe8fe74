//! A fleet at tenant scale (issue 12): three real proxies follow one control service
//! (SQLite) through a bulk load made with `POST /api/v1/batch`, then through single
//! updates, and one tenant's invalid object.
//!
//! Scale: `TOLLGATE_FLEET_APPS` apps [2,000 in CI], each with an instance, a
//! hostname, a route and `TOLLGATE_FLEET_KEYS` API keys [5]; a real per-host
//! certificate for every tenth app. It passes at 10,000 apps and 100,000 keys too
//! (about 4 minutes with debug builds on two cores, too long for CI); the costs at
//! full scale are `bench/proxy-apply.sh` and `bench/control-load.sh`. This test is
//! about every proxy ending up with every change, not about time.
//!
//! Checked on each of the three proxies: every sampled tenant routes to its own
//! route, keys from the bulk load open the key-protected app, certificates are served
//! by SNI; after each single update every proxy serves that exact event (the log
//! position is the config version the fleet agrees on) and the change itself; an app
//! whose limits block the proxies cannot read is refused (503) alone while the others
//! and later updates go on. Waits are bounded polls, nothing depends on timing.

use serde_json::{Value, json};
use std::time::Duration;
use tollgate_tests::auth::{bearer, get};
use tollgate_tests::config::Config;
use tollgate_tests::control::{ApiClient, ControlProcess};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::tls::{self, TestCert, client_config};
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::settled_at;

/// Generous: three proxies and the service share two cores with other tests.
const CATCH_UP: Duration = Duration::from_secs(120);
const BATCH: usize = 900;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn app(i: usize) -> String {
    format!("t{i:05}")
}

fn host(i: usize) -> String {
    format!("h{i:05}.fleet.test")
}

async fn all_settled(fleet: &[ProxyProcess], event_id: i64) {
    for proxy in fleet {
        settled_at(proxy, event_id, CATCH_UP).await;
    }
}

/// Sends `commands` in batches; returns the answers' items and the last event id.
async fn load(api: &ApiClient, commands: Vec<Value>) -> (Vec<Value>, i64) {
    let mut items = Vec::new();
    let mut last = 0;
    for chunk in commands.chunks(BATCH) {
        let (status, v) = api
            .api("POST", "/api/v1/batch", Some(&json!({ "commands": chunk })))
            .await;
        assert_eq!(status, 200, "{v}");
        items.extend(v["items"].as_array().cloned().unwrap_or_default());
        last = v["event_id"].as_i64().expect("event_id");
    }
    (items, last)
}

/// The upstream name the echo answered with for `host` on `proxy`, or the status.
async fn routed(proxy: &ProxyProcess, host: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let auth = key.map(bearer);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let r = get(proxy.addr("http"), false, host, path, &headers).await;
    let body = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, body)
}

#[tokio::test]
async fn three_proxies_follow_a_bulk_load_single_updates_and_a_bad_tenant() {
    let apps = env("TOLLGATE_FLEET_APPS", 2000);
    let keys_per_app = env("TOLLGATE_FLEET_KEYS", 5);
    let upstream = Upstream::start("fleet").await;
    let cp = ControlProcess::start()
        .await
        .expect("control service starts");
    let api = cp.client();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let fleet: Vec<ProxyProcess> = dirs
        .iter()
        .enumerate()
        .map(|(n, dir)| {
            let config = Config::new()
                .listener("http")
                .tls_listener("tls", "")
                .raw(&cp.proxy_table(&format!("fleet-{n}"), dir.path()))
                .build();
            ProxyProcess::start(&config, &[]).expect("proxy starts")
        })
        .collect();

    // The bulk load, while the proxies follow.
    let mut commands = Vec::new();
    for i in 0..apps {
        let (id, name) = (app(i), host(i));
        commands.push(json!({"op": "create_app", "id": id}));
        commands.push(
            json!({"op": "add_instance", "app": id, "upstream": "default",
            "instance": {"address": upstream.addr.to_string()}}),
        );
        commands.push(json!({"op": "bind_hostname", "hostname": name, "app": id}));
        commands.push(json!({"op": "create_route", "route": {"id": format!("r{i:05}"),
            "hostname": name, "path_prefix": "/own", "rewrite_prefix": format!("/{id}"), "app": id}}));
        for k in 0..keys_per_app {
            commands.push(json!({"op": "create_key", "app": id,
                "key": {"key_id": format!("k{i:05}-{k}")}}));
        }
    }
    let (items, _) = load(&api, commands).await;
    // Keys are shown once, in the answers: keep the last app's.
    let last_keys: Vec<String> = items
        .iter()
        .filter(|item| item["key"]["app"] == json!(app(apps - 1)))
        .filter_map(|item| item["key"]["key"].as_str().map(String::from))
        .collect();
    assert_eq!(last_keys.len(), keys_per_app);
    let certs: Vec<(usize, TestCert)> = (0..apps)
        .step_by(10)
        .map(|i| (i, TestCert::new(&[&host(i)])))
        .collect();
    let uploads = certs
        .iter()
        .map(|(i, c)| {
            json!({"op": "upload_certificate", "certificate": {"id": format!("c{i:05}"),
                "cert_pem": c.cert_pem, "key_pem": c.key_pem}})
        })
        .collect();
    let (_, _) = load(&api, uploads).await;
    let (status, v) = api
        .api(
            "PUT",
            &format!("/api/v1/apps/{}/auth", app(apps - 1)),
            Some(&json!({"api_keys": true})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let head = v["event_id"].as_i64().expect("event_id");
    all_settled(&fleet, head).await;

    let samples = [0, apps / 3, apps / 2, apps - 2];
    for proxy in &fleet {
        for i in samples {
            let (status, body) = routed(proxy, &host(i), "/own/x", None).await;
            assert_eq!(status, 200, "{} on {}: {body}", host(i), proxy.addr("http"));
            assert_eq!(body["path"], json!(format!("/{}/x", app(i))), "{body}");
        }
        let last = host(apps - 1);
        assert_eq!(routed(proxy, &last, "/own/x", None).await.0, 401);
        for key in &last_keys {
            assert_eq!(routed(proxy, &last, "/own/x", Some(key)).await.0, 200);
        }
        for (i, cert) in certs.iter().step_by(certs.len().div_ceil(4).max(1)) {
            let cfg = client_config(&[cert], &[b"http/1.1"]);
            tls::connect(proxy.addr("tls"), &host(*i), cfg)
                .await
                .unwrap_or_else(|e| panic!("TLS for {}: {e}", host(*i)));
        }
    }

    // Single updates, one at a time: every proxy serves each one, and its effect.
    let protected = app(apps - 1);
    for n in 0..5 {
        let (status, v) = api
            .api(
                "POST",
                &format!("/api/v1/apps/{protected}/keys"),
                Some(&json!({"key_id": format!("late-{n}")})),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        let key = v["key"]["key"].as_str().expect("key").to_string();
        all_settled(&fleet, v["event_id"].as_i64().expect("event_id")).await;
        for proxy in &fleet {
            assert_eq!(
                routed(proxy, &host(apps - 1), "/own/", Some(&key)).await.0,
                200
            );
        }
        let extra = format!("extra{n}.fleet.test");
        let event_id = api
            .write(
                "PUT",
                &format!("/api/v1/hostnames/{extra}"),
                Some(&json!({"app": app(n)})),
            )
            .await;
        all_settled(&fleet, event_id).await;
        for proxy in &fleet {
            assert_eq!(routed(proxy, &extra, "/", None).await.0, 200);
        }
    }
    let event_id = api
        .write("DELETE", &format!("/api/v1/keys/k{:05}-0", apps - 1), None)
        .await;
    all_settled(&fleet, event_id).await;
    for proxy in &fleet {
        let (status, _) = routed(proxy, &host(apps - 1), "/own/", Some(&last_keys[0])).await;
        assert_eq!(status, 401, "a revoked key is refused everywhere");
    }

    // One tenant's limits block the proxies cannot read (the API refuses it; a newer
    // service or a hand-edited log may hold one): that tenant alone is refused.
    let bad = app(1);
    let event_id = cp
        .append_raw(
            "app",
            &bad,
            &json!({"type": "limits_set", "app_id": bad,
                "limits": {"rate": [{"key": "app", "per_second": 1, "shard_hint": 3}]}}),
        )
        .await;
    all_settled(&fleet, event_id).await;
    let event_id = api
        .write(
            "PUT",
            "/api/v1/hostnames/after-bad.fleet.test",
            Some(&json!({"app": app(2)})),
        )
        .await;
    all_settled(&fleet, event_id).await;
    for proxy in &fleet {
        assert_eq!(routed(proxy, &host(1), "/own/", None).await.0, 503);
        for i in [0, 2, apps / 2] {
            assert_eq!(routed(proxy, &host(i), "/own/", None).await.0, 200);
        }
        assert_eq!(
            routed(proxy, "after-bad.fleet.test", "/", None).await.0,
            200,
            "updates after the bad object still apply"
        );
        assert_eq!(
            proxy
                .metric("tollgate_config_apps_degraded", &[])
                .await
                .expect("metrics"),
            1.0
        );
    }
}
