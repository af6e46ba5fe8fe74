//! The HTTP API end to end on a SQLite file: commands become events, events become
//! the projection, errors map to 400/401/404/409/422.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use tollgate_control::store::EventStore;
use tollgate_routing::{EdgeConfig, EdgeEvent};

async fn raw_events(svc: &Svc) -> Vec<tollgate_control::store::StoredEvent> {
    svc.running
        .commands
        .store()
        .read_after(0, 10_000)
        .await
        .unwrap()
}

#[tokio::test]
async fn command_event_projection_round_trip() {
    let svc = start().await;
    let c = svc.http();
    let app = expect(c.post("/api/v1/apps", json!({ "id": "acme" })).await, 201);
    assert_eq!(app["app"]["id"], "acme");
    assert_eq!(app["version"], 1);
    expect(
        c.put(
            "/api/v1/apps/acme/upstreams/default",
            json!({ "protocol": "h2c", "connect_timeout_ms": 500 }),
        )
        .await,
        200,
    );
    expect(
        c.post(
            "/api/v1/apps/acme/upstreams/default/instances",
            json!({ "address": "10.0.0.1:8080", "weight": 2 }),
        )
        .await,
        201,
    );
    let route = expect(
        c.post(
            "/api/v1/routes",
            json!({ "hostname": "api.acme.example", "path_prefix": "/v2", "app": "acme" }),
        )
        .await,
        201,
    );
    let route_id = route["route"]["id"].as_str().unwrap().to_string();
    assert!(route_id.starts_with("r_"), "{route_id}");
    expect(
        c.put("/api/v1/hostnames/Acme.Example.", json!({ "app": "acme" }))
            .await,
        201,
    );
    expect(
        c.put(
            "/api/v1/apps/acme/limits",
            json!({ "rate": [{ "key": "app", "per_second": 100 }] }),
        )
        .await,
        200,
    );

    // The projection shows it.
    let got = expect(c.get("/api/v1/apps/acme").await, 200);
    let a = &got["app"];
    assert_eq!(a["hostnames"], json!(["acme.example"]));
    assert_eq!(a["routes"], json!([route_id]));
    assert_eq!(a["upstreams"]["default"]["protocol"], "h2c");
    assert_eq!(a["upstreams"]["default"]["connect_timeout_ms"], 500);
    assert_eq!(
        a["upstreams"]["default"]["endpoints"],
        json!([{ "address": "10.0.0.1:8080", "weight": 2 }])
    );
    assert_eq!(a["limits"]["rate"][0]["per_second"], 100);
    assert_eq!(got["version"], 4);

    // The log holds exactly those events, each payload the EdgeEvent JSON.
    let events = raw_events(&svc).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "app_created",
            "upstream_configured",
            "instance_added",
            "route_created",
            "hostname_bound",
            "limits_set"
        ]
    );
    assert_eq!(events[3].aggregate_type, "route");
    assert_eq!(events[3].aggregate_id, route_id);
    assert_eq!(events[4].aggregate_id, "acme.example");
    assert!(events.iter().all(|e| e.actor_id == "admin"));
    let mut replay = EdgeConfig::default();
    for e in &events {
        let ev: EdgeEvent = serde_json::from_value(e.payload.clone()).unwrap();
        assert_eq!(ev.event_type(), e.event_type);
        replay.apply(&ev).unwrap();
    }
    let view = svc.running.projection().view();
    assert_eq!(view.config, replay);
    assert_eq!(view.event_id, events.last().unwrap().event_id);
    let version = expect(c.get("/api/v1/version").await, 200);
    assert_eq!(version["event_id"], view.event_id);

    // Deleting the route and unbinding the hostname.
    expect(c.delete(&format!("/api/v1/routes/{route_id}")).await, 200);
    expect(c.get(&format!("/api/v1/routes/{route_id}")).await, 404);
    let unbound = expect(c.delete("/api/v1/hostnames/acme.example").await, 200);
    assert_eq!(unbound["hostname"]["app"], "acme");
    expect(c.get("/api/v1/hostnames/acme.example").await, 404);
    svc.stop().await;
}

#[tokio::test]
async fn read_your_writes() {
    let svc = start().await;
    let c = svc.http();
    expect(c.post("/api/v1/apps", json!({ "id": "ryw" })).await, 201);
    for i in 0..20 {
        let created = expect(
            c.post(
                "/api/v1/routes",
                json!({ "hostname": format!("h{i}.ryw.example"), "app": "ryw" }),
            )
            .await,
            201,
        );
        let id = created["route"]["id"].as_str().unwrap();
        let got = expect(c.get(&format!("/api/v1/routes/{id}")).await, 200);
        assert_eq!(got["route"], created["route"]);
        assert!(got["event_id"].as_i64().unwrap() >= created["event_id"].as_i64().unwrap());
        let listed = expect(c.get("/api/v1/routes?app=ryw").await, 200);
        assert_eq!(listed["routes"].as_array().unwrap().len(), i + 1);
    }
    svc.stop().await;
}

#[tokio::test]
async fn structural_errors_map_to_404_and_409() {
    let svc = start().await;
    let c = svc.http();
    expect(c.post("/api/v1/apps", json!({ "id": "one" })).await, 201);
    expect(c.post("/api/v1/apps", json!({ "id": "two" })).await, 201);
    let dup = expect(c.post("/api/v1/apps", json!({ "id": "one" })).await, 409);
    assert_eq!(dup["error"]["code"], "conflict");
    let missing = expect(
        c.post(
            "/api/v1/routes",
            json!({ "hostname": "x.example", "app": "nope" }),
        )
        .await,
        404,
    );
    assert_eq!(missing["error"]["code"], "not_found");
    expect(c.post("/api/v1/apps/nope/suspend", json!({})).await, 404);
    expect(
        c.post(
            "/api/v1/apps/one/upstreams/missing/instances",
            json!({ "address": "a:1" }),
        )
        .await,
        404,
    );
    expect(c.delete("/api/v1/keys/none").await, 404);
    expect(c.delete("/api/v1/certificates/none").await, 404);

    // A hostname belongs to one app at a time; moving it is an explicit rebind.
    expect(
        c.put("/api/v1/hostnames/shop.example", json!({ "app": "one" }))
            .await,
        201,
    );
    expect(
        c.put("/api/v1/hostnames/shop.example", json!({ "app": "one" }))
            .await,
        200,
    );
    let taken = expect(
        c.put("/api/v1/hostnames/shop.example", json!({ "app": "two" }))
            .await,
        409,
    );
    assert!(taken["error"]["message"].as_str().unwrap().contains("one"));
    expect(
        c.post(
            "/api/v1/hostnames/shop.example/rebind",
            json!({ "from": "two", "to": "one" }),
        )
        .await,
        409,
    );
    let moved = expect(
        c.post(
            "/api/v1/hostnames/shop.example/rebind",
            json!({ "from": "one", "to": "two" }),
        )
        .await,
        200,
    );
    assert_eq!(moved["hostname"]["app"], "two");
    let h = expect(c.get("/api/v1/hostnames/shop.example").await, 200);
    assert_eq!(h["hostname"]["app"], "two");

    // Route id taken.
    let r = json!({ "id": "fixed", "hostname": "r.example", "app": "one" });
    expect(c.post("/api/v1/routes", r.clone()).await, 201);
    expect(c.post("/api/v1/routes", r).await, 409);
    svc.stop().await;
}

#[tokio::test]
async fn bad_requests_are_400() {
    let svc = start().await;
    let c = svc.http();
    let a = c
        .send_raw("POST", "/api/v1/apps", Some("{not json"), &[])
        .await;
    let body = expect(a, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    expect(
        c.post("/api/v1/apps", json!({ "id": "a", "bogus": 1 }))
            .await,
        400,
    );
    expect(c.post("/api/v1/apps", json!({ "id": "ok" })).await, 201);
    expect(
        c.post(
            "/api/v1/routes",
            json!({ "id": "bad/id", "hostname": "x.example", "app": "ok" }),
        )
        .await,
        400,
    );
    expect(
        c.put(
            "/api/v1/apps/ok/upstreams/default",
            json!({ "endpoints": [{ "address": "a:1" }] }),
        )
        .await,
        400,
    );
    expect(c.get("/api/v1/nothing-here").await, 404);
    let ifm = c
        .send(
            "POST",
            "/api/v1/apps/ok/suspend",
            None,
            &[("if-match", "abc")],
        )
        .await;
    expect(ifm, 400);
    svc.stop().await;
}

#[tokio::test]
async fn invalid_routes_are_422_with_problems() {
    let svc = start().await;
    let c = svc.http();
    expect(c.post("/api/v1/apps", json!({ "id": "acme" })).await, 201);
    let bad = expect(
        c.post(
            "/api/v1/routes",
            json!({ "hostname": "Bad Host!", "path_prefix": "nope", "app": "acme" }),
        )
        .await,
        422,
    );
    assert_eq!(bad["error"]["code"], "validation_failed");
    let problems = bad["error"]["problems"].as_array().unwrap();
    let at: Vec<&str> = problems.iter().map(|p| p["at"].as_str().unwrap()).collect();
    assert!(at.iter().any(|a| a.ends_with(".hostname")), "{problems:?}");
    assert!(
        at.iter().any(|a| a.ends_with(".path_prefix")),
        "{problems:?}"
    );

    // L4 on a risky port is refused by the port policy.
    let l4 = expect(
        c.post(
            "/api/v1/routes",
            json!({ "hostname": "db.example", "app": "acme", "listen_port": 25,
                    "protocol_hint": "tcp_raw" }),
        )
        .await,
        422,
    );
    assert!(
        l4["error"]["problems"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("risky")
    );

    // An invalid app id, an upstream with a zero timeout, a policy naming no issuer.
    expect(
        c.post("/api/v1/apps", json!({ "id": "Not_OK!" })).await,
        422,
    );
    expect(
        c.put(
            "/api/v1/apps/acme/upstreams/default",
            json!({ "idle_timeout_ms": 0 }),
        )
        .await,
        422,
    );
    expect(
        c.put("/api/v1/apps/acme/auth", json!({ "issuers": ["ghost"] }))
            .await,
        422,
    );
    // A hostname that is an API host.
    expect(
        c.put(
            "/api/v1/platform/api-hosts",
            json!({ "hosts": ["api.example"] }),
        )
        .await,
        200,
    );
    expect(
        c.put("/api/v1/hostnames/api.example", json!({ "app": "acme" }))
            .await,
        422,
    );
    // Nothing of that reached the log.
    let types: Vec<String> = svc
        .running
        .commands
        .store()
        .read_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["app_created", "api_hosts_set"]);
    svc.stop().await;
}

#[tokio::test]
async fn certificates_are_validated() {
    let svc = start().await;
    let c = svc.http();
    let (cert, key) = cert(&["shop.example", "*.shop.example"]);
    let up = expect(
        c.post(
            "/api/v1/certificates",
            json!({ "id": "shop", "cert_pem": cert, "key_pem": key }),
        )
        .await,
        201,
    );
    assert_eq!(
        up["certificate"]["names"],
        json!(["shop.example", "*.shop.example"])
    );
    assert!(up["certificate"]["not_after_unix"].as_i64().unwrap() > 0);
    assert_eq!(
        up["certificate"]["sha256_fingerprint"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // A key of another certificate.
    let (other_cert, other_key) = common::cert(&["other.example"]);
    let mismatch = expect(
        c.post(
            "/api/v1/certificates",
            json!({ "cert_pem": other_cert, "key_pem": key }),
        )
        .await,
        422,
    );
    assert!(
        mismatch["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{mismatch}"
    );
    // Names the certificate does not cover.
    let uncovered = expect(
        c.post(
            "/api/v1/certificates",
            json!({ "cert_pem": other_cert, "key_pem": other_key, "names": ["else.example"] }),
        )
        .await,
        422,
    );
    assert!(
        uncovered["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not covered")
    );
    // Expired.
    let (old_cert, old_key) = expired_cert();
    let expired = expect(
        c.post(
            "/api/v1/certificates",
            json!({ "cert_pem": old_cert, "key_pem": old_key }),
        )
        .await,
        422,
    );
    assert!(
        expired["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{expired}"
    );
    // Garbage.
    expect(
        c.post(
            "/api/v1/certificates",
            json!({ "cert_pem": "nope", "key_pem": "nope" }),
        )
        .await,
        422,
    );
    // A second certificate for a name already served.
    let (dup_cert, dup_key) = common::cert(&["shop.example"]);
    expect(
        c.post(
            "/api/v1/certificates",
            json!({ "cert_pem": dup_cert, "key_pem": dup_key }),
        )
        .await,
        422,
    );
    // A certificate for names no app has bound is fine.
    let ok = expect(
        c.post(
            "/api/v1/certificates",
            json!({ "cert_pem": other_cert, "key_pem": other_key }),
        )
        .await,
        201,
    );
    let other_id = ok["certificate"]["id"].as_str().unwrap().to_string();
    assert!(other_id.starts_with("c_"));

    // Rotation must still cover the names; then it replaces the chain.
    let (wrong, wrong_key) = common::cert(&["unrelated.example"]);
    expect(
        c.put(
            "/api/v1/certificates/shop",
            json!({ "cert_pem": wrong, "key_pem": wrong_key }),
        )
        .await,
        422,
    );
    let (new_cert, new_key) = common::cert(&["shop.example", "*.shop.example"]);
    let rotated = expect(
        c.put(
            "/api/v1/certificates/shop",
            json!({ "cert_pem": new_cert, "key_pem": new_key }),
        )
        .await,
        200,
    );
    assert_ne!(
        rotated["certificate"]["sha256_fingerprint"],
        up["certificate"]["sha256_fingerprint"]
    );

    // Listing never shows a key.
    let list = c.get("/api/v1/certificates").await;
    assert_eq!(list.status, 200);
    let text = list.body.to_string();
    assert!(!text.contains("PRIVATE KEY") && !text.contains("key_pem"));
    assert_eq!(list.body["certificates"].as_array().unwrap().len(), 2);

    expect(
        c.delete(&format!("/api/v1/certificates/{other_id}")).await,
        200,
    );
    expect(
        c.get(&format!("/api/v1/certificates/{other_id}")).await,
        404,
    );
    svc.stop().await;
}

#[tokio::test]
async fn api_key_secret_is_shown_once_and_only_its_hash_is_logged() {
    let svc = start().await;
    let c = svc.http();
    expect(
        c.post("/api/v1/apps", json!({ "id": "acme-prod" })).await,
        201,
    );
    let created = expect(
        c.post(
            "/api/v1/apps/acme-prod/keys",
            json!({ "key_id": "ci", "scopes": ["read"] }),
        )
        .await,
        201,
    );
    let key = created["key"]["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk_live_acmeprod_"), "{key}");
    let hash = tollgate_filters::apikey::sha256_hex(&key);
    assert_eq!(created["key"]["sha256"], hash);

    // Only the hash is in the log, in the projection, and in what proxies get.
    let events = raw_events(&svc).await;
    let logged: String = events.iter().map(|e| e.payload.to_string()).collect();
    assert!(!logged.contains(&key));
    assert!(!logged.contains(&key[key.len() - 32..]));
    assert!(logged.contains(&hash));
    let snapshot = expect(c.get("/v1/snapshot").await, 200);
    assert!(!snapshot.to_string().contains(&key));
    assert_eq!(snapshot["config"]["api_keys"]["ci"]["sha256"], hash);

    // Reads never show the key again (nor its hash).
    for path in [
        "/api/v1/keys",
        "/api/v1/keys/ci",
        "/api/v1/apps/acme-prod/keys",
    ] {
        let body = expect(c.get(path).await, 200).to_string();
        assert!(
            !body.contains(&key) && !body.contains(&hash),
            "{path}: {body}"
        );
        assert!(body.contains("\"ci\""));
    }

    // Public keys need origins; the second key differs.
    expect(
        c.post("/api/v1/apps/acme-prod/keys", json!({ "kind": "public" }))
            .await,
        422,
    );
    expect(
        c.post(
            "/api/v1/apps/acme-prod/keys",
            json!({ "kind": "public", "allowed_origins": ["not an origin"] }),
        )
        .await,
        422,
    );
    let public = expect(
        c.post(
            "/api/v1/apps/acme-prod/keys",
            json!({ "kind": "public", "live": false, "allowed_origins": ["https://acme.example"] }),
        )
        .await,
        201,
    );
    assert!(
        public["key"]["key"]
            .as_str()
            .unwrap()
            .starts_with("pk_test_acmeprod_")
    );
    expect(
        c.post("/api/v1/apps/acme-prod/keys", json!({ "key_id": "ci" }))
            .await,
        409,
    );

    let revoked = expect(c.delete("/api/v1/keys/ci").await, 200);
    assert!(!revoked.to_string().contains(&hash));
    expect(c.get("/api/v1/keys/ci").await, 404);
    svc.stop().await;
}

#[tokio::test]
async fn admin_token_is_required() {
    let svc = start().await;
    let c = svc.http();
    for token in [None, Some("wrong-token-0123456789"), Some(PROXY)] {
        let anon = c.with_token(token);
        for (method, path) in [
            ("GET", "/api/v1/apps"),
            ("POST", "/api/v1/apps"),
            ("GET", "/api/v1/version"),
            ("DELETE", "/api/v1/keys/x"),
        ] {
            let a = anon
                .send(method, path, Some(&json!({ "id": "sneaky" })), &[])
                .await;
            assert_eq!(a.status, 401, "{method} {path} with {token:?}");
            assert_eq!(a.body["error"]["code"], "unauthorized");
            assert!(
                a.headers
                    .to_ascii_lowercase()
                    .contains("www-authenticate: bearer")
            );
        }
    }
    // The feed takes the admin or the proxy token, nothing else.
    for (token, status) in [
        (None, 401),
        (Some("x"), 401),
        (Some(PROXY), 200),
        (Some(ADMIN), 200),
    ] {
        let a = c.with_token(token);
        assert_eq!(a.get("/v1/snapshot").await.status, status, "{token:?}");
        assert_eq!(
            a.get("/v1/events?after=0").await.status,
            status,
            "{token:?}"
        );
    }
    // Probes need none.
    assert_eq!(c.with_token(None).get("/healthz").await.status, 200);
    // Nothing was written.
    assert_eq!(
        svc.running.commands.store().last_event_id().await.unwrap(),
        0
    );
    svc.stop().await;
}

#[tokio::test]
async fn suspend_resume_and_platform_settings() {
    let svc = start().await;
    let c = svc.http();
    expect(c.post("/api/v1/apps", json!({ "id": "acme" })).await, 201);
    let s = expect(c.post("/api/v1/apps/acme/suspend", json!({})).await, 200);
    assert_eq!(s["app"]["status"], "suspended");
    let again = expect(c.post("/api/v1/apps/acme/suspend", json!({})).await, 200);
    assert_eq!(again["changed"], false);
    let r = expect(c.post("/api/v1/apps/acme/resume", json!({})).await, 200);
    assert_eq!(r["app"]["status"], "active");

    let issuer = json!({ "issuer": "https://login.example", "audiences": ["api"] });
    expect(c.put("/api/v1/issuers/corp", issuer).await, 201);
    expect(
        c.put(
            "/api/v1/apps/acme/auth",
            json!({ "api_keys": true, "issuers": ["corp"] }),
        )
        .await,
        200,
    );
    // An issuer a policy names cannot go.
    expect(c.delete("/api/v1/issuers/corp").await, 422);
    expect(c.put("/api/v1/apps/acme/auth", Value::Null).await, 200);
    expect(c.delete("/api/v1/issuers/corp").await, 200);

    expect(
        c.put("/api/v1/platform/port-policy", json!({ "allowed": [5432] }))
            .await,
        200,
    );
    expect(
        c.post(
            "/api/v1/routes",
            json!({ "hostname": "db.example", "app": "acme", "listen_port": 5432,
                    "protocol_hint": "tcp_raw" }),
        )
        .await,
        201,
    );
    // Narrowing the policy under the route is refused.
    expect(c.put("/api/v1/platform/port-policy", json!({})).await, 422);
    let p = expect(c.get("/api/v1/platform").await, 200);
    assert_eq!(p["platform"]["port_policy"]["allowed"], json!([5432]));
    svc.stop().await;
}

#[tokio::test]
async fn deletion_runs_after_the_grace_period() {
    let svc = start().await;
    let c = svc.http();
    expect(c.post("/api/v1/apps", json!({ "id": "gone" })).await, 201);
    expect(
        c.post("/api/v1/apps/gone/keys", json!({ "key_id": "k1" }))
            .await,
        201,
    );
    expect(
        c.post(
            "/api/v1/routes",
            json!({ "hostname": "gone.example", "app": "gone" }),
        )
        .await,
        201,
    );
    let d = expect(c.delete("/api/v1/apps/gone?grace_seconds=2").await, 200);
    assert_eq!(d["app"]["status"], "suspended");
    assert!(d["app"]["deleting_until"].as_i64().is_some());
    // During the grace period: suspended (503 at the edge) and no keys served.
    let spec = svc.running.projection().view().config.routing_spec();
    assert!(spec.api_keys.is_empty());
    assert_eq!(spec.apps[0].status, tollgate_routing::AppStatus::Suspended);
    // Keys cannot be created for it.
    expect(c.post("/api/v1/apps/gone/keys", json!({})).await, 409);

    // Removed once the grace period ends, with its routes and keys.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if c.get("/api/v1/apps/gone").await.status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not removed in time");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let view = svc.running.projection().view();
    assert!(view.config.routes.is_empty() && view.config.api_keys.is_empty());
    let events = raw_events(&svc).await;
    let last = events.last().unwrap();
    assert_eq!(last.event_type, "app_removed");
    assert_eq!(last.actor_id, "system:grace");

    // Resuming during the grace period cancels the deletion; 0 removes at once.
    expect(c.post("/api/v1/apps", json!({ "id": "kept" })).await, 201);
    expect(c.delete("/api/v1/apps/kept?grace_seconds=1").await, 200);
    let r = expect(c.post("/api/v1/apps/kept/resume", json!({})).await, 200);
    assert_eq!(r["app"]["deleting_until"], Value::Null);
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    expect(c.get("/api/v1/apps/kept").await, 200);
    let now = expect(c.delete("/api/v1/apps/kept?grace_seconds=0").await, 200);
    assert_eq!(now["app"], Value::Null);
    expect(c.get("/api/v1/apps/kept").await, 404);
    svc.stop().await;
}

#[tokio::test]
async fn overdue_deletions_complete_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let running = start_in(tmp.path()).await;
    let c = Client {
        addr: running.http_addr,
        token: Some(ADMIN.into()),
    };
    expect(c.post("/api/v1/apps", json!({ "id": "late" })).await, 201);
    expect(c.delete("/api/v1/apps/late?grace_seconds=1").await, 200);
    // Stop before the grace task can act, and stay down past the deadline.
    running.shutdown();
    running.wait().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let running = start_in(tmp.path()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running.projection().view().config.apps.contains_key("late") {
        assert!(
            std::time::Instant::now() < deadline,
            "not removed after restart"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let removed = running
        .commands
        .store()
        .read_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "app_removed")
        .count();
    assert_eq!(removed, 1);
    running.shutdown();
    running.wait().await.unwrap();
}
