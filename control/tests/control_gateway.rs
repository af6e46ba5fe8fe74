//! The gateway settings of a route (redirects, HSTS, header rules, security headers,
//! CORS methods) through the control API: accepted, stored in the event, read back
//! and served to proxies unchanged; invalid ones refused with where and why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use tollgate_routing::{RouteSpec, Switch};

fn gateway_route() -> Value {
    json!({
        "id": "www",
        "hostname": "www.acme.example",
        "app": "acme",
        "redirect": { "host": "acme.example", "path_prefix": "/new", "status": 301, "keep_query": false },
        "https_redirect": { "status": 308, "https_port": 8443 },
        "hsts": { "max_age_seconds": 63072000, "include_subdomains": true, "preload": true },
        "headers": {
            "request": { "set": { "x-env": "prod" }, "add": { "x-tag": "edge" }, "remove": ["x-debug"] },
            "response": { "set": { "cache-control": "no-store" }, "add": {}, "remove": ["server"] }
        },
        "security_headers": {
            "content_type_options": true,
            "frame_options": "SAMEORIGIN",
            "referrer_policy": "no-referrer",
            "content_security_policy": "default-src 'self'"
        },
        "cors": { "allowed_origins": ["https://app.acme.example"], "allow_methods": ["GET", "PUT"] }
    })
}

#[tokio::test]
async fn gateway_settings_round_trip_through_the_api_and_the_feed() {
    let svc = start().await;
    let c = svc.http();
    app_with_instance(&c, "acme").await;
    let created = expect(c.post("/api/v1/routes", gateway_route()).await, 201);
    let got = expect(c.get("/api/v1/routes/www").await, 200);
    assert_eq!(got["route"], created["route"]);
    for field in [
        "redirect",
        "https_redirect",
        "hsts",
        "headers",
        "security_headers",
    ] {
        assert_eq!(got["route"][field], gateway_route()[field], "{field}");
    }
    assert_eq!(got["route"]["cors"]["allow_methods"], json!(["GET", "PUT"]));

    // Proxies get the same typed settings.
    let view = svc.running.projection().view();
    let spec = view.config.routing_spec();
    let route: &RouteSpec = spec
        .routes
        .iter()
        .find(|r| r.hostname == "www.acme.example")
        .unwrap();
    let hsts = route.hsts.as_ref().and_then(Switch::on).unwrap();
    assert!(hsts.preload && hsts.include_subdomains);
    assert_eq!(
        route.redirect.as_ref().unwrap().host.as_deref(),
        Some("acme.example")
    );
    assert_eq!(route.cors.as_ref().unwrap().allow_methods, ["GET", "PUT"]);

    // `true` and `false` are accepted and read back as the settings they stand for.
    let toggles = expect(
        c.post(
            "/api/v1/routes",
            json!({ "id": "t", "hostname": "t.acme.example", "app": "acme",
                    "hsts": true, "https_redirect": true, "security_headers": false }),
        )
        .await,
        201,
    );
    assert_eq!(toggles["route"]["hsts"]["max_age_seconds"], 31536000);
    assert_eq!(toggles["route"]["https_redirect"]["status"], 308);
    assert_eq!(toggles["route"]["security_headers"], false);
    // A route without them reads back without them.
    let plain = expect(
        c.post(
            "/api/v1/routes",
            json!({ "id": "p", "hostname": "p.acme.example", "app": "acme" }),
        )
        .await,
        201,
    );
    assert!(plain["route"].get("hsts").is_none(), "{plain}");
    assert!(plain["route"]["cors"].is_null());
    svc.stop().await;
}

#[tokio::test]
async fn invalid_gateway_settings_are_422_with_where_and_why() {
    let svc = start().await;
    let c = svc.http();
    app_with_instance(&c, "acme").await;
    let bad = expect(
        c.post(
            "/api/v1/routes",
            json!({
                "hostname": "www.acme.example", "app": "acme",
                "hsts": { "max_age_seconds": 60, "preload": true },
                "redirect": { "host": "www.acme.example", "status": 303 },
                "headers": { "request": { "set": { "host": "evil.example", "x-tollgate-subject": "root" } } },
                "cors": { "allowed_origins": ["*"], "allow_methods": ["GET POST"] }
            }),
        )
        .await,
        422,
    );
    let problems = bad["error"]["problems"].as_array().unwrap();
    let at: Vec<&str> = problems.iter().map(|p| p["at"].as_str().unwrap()).collect();
    for want in [
        ".hsts.preload",
        ".hsts.max_age_seconds",
        ".redirect.status",
        ".redirect",
        ".headers.request.set",
        ".cors.allow_methods",
    ] {
        assert!(at.iter().any(|a| a.ends_with(want)), "{want}: {problems:?}");
    }
    // A value that is not even the right shape is a 400.
    expect(
        c.post(
            "/api/v1/routes",
            json!({ "hostname": "x.acme.example", "app": "acme", "hsts": "yes" }),
        )
        .await,
        400,
    );
    svc.stop().await;
}
