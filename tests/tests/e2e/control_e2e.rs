//! The control plane end to end: the real `tollgate control` service (SQLite event
//! log, HTTP API, gRPC feed) and real `tollgate proxy` processes following it, with
//! echo upstreams and real TLS.
//!
//! Everything is configured through the API; the proxies' files hold only listeners,
//! admin and `[control]`. Waits are bounded polls of the proxies' admin `/config`
//! (`control.serving_event_id` against the `event_id` a write answered) or of a request
//! until it succeeds; nothing depends on timing.

use futures_util::future::join_all;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};
use tollgate_tests::auth::{Reply, bearer, get, get_on};
use tollgate_tests::config::Config;
use tollgate_tests::control::{ApiClient, ControlProcess};
use tollgate_tests::helpers::WAIT;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::session::TlsSession;
use tollgate_tests::tls::{TestCert, client_config};
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::{config_view, settled_at, until};

/// Generous bound for the proxies to catch up on a loaded 2-core machine.
const CATCH_UP: Duration = Duration::from_secs(60);
const H1_ONLY: &[&[u8]] = &[b"http/1.1"];
const APPLY_ERRORS: &str = "tollgate_control_apply_errors_total";
const UPDATES: &str = "tollgate_control_updates_total";

const SHOP: &str = "shop";
const SHOP_HOST: &str = "shop.test";
const SHOP_CERT: &str = "shop-cert";
const SHOP_KEY: &str = "ci";

// ---------------------------------------------------------------- proxies

/// A proxy following `cp`: a plain listener `http`, a TLS listener `tls` (certificates
/// from the service) and `[control]` with its snapshot in `state_dir`.
fn edge_config(cp: &ControlProcess, node: &str, state_dir: &Path) -> String {
    Config::new()
        .listener("http")
        .tls_listener("tls", "")
        .raw(&cp.proxy_table(node, state_dir))
        .build()
}

fn start_edge(cp: &ControlProcess, node: &str, state_dir: &Path) -> ProxyProcess {
    ProxyProcess::start(&edge_config(cp, node, state_dir), &[]).expect("proxy starts")
}

/// The `control` part of the proxy's `/config`.
async fn control_view(proxy: &ProxyProcess) -> Value {
    config_view(proxy).await["control"].clone()
}

/// Waits until the proxy serves a config current at `event_id` or later; returns its
/// `/config`.
async fn serving(proxy: &ProxyProcess, event_id: i64) -> Value {
    until(
        &format!("the proxy to serve event {event_id}"),
        CATCH_UP,
        || async {
            let view = config_view(proxy).await;
            let serving = view["control"]["serving_event_id"].as_i64()?;
            (serving >= event_id).then_some(view)
        },
    )
    .await
}

async fn wait_connected(proxy: &ProxyProcess) {
    until(
        "the proxy to reach the control service",
        CATCH_UP,
        || async { (control_view(proxy).await["connected"] == json!(true)).then_some(()) },
    )
    .await
}

/// Sum of `tollgate_control_apply_errors_total` over every kind.
async fn apply_errors(proxy: &ProxyProcess) -> f64 {
    proxy.metric(APPLY_ERRORS, &[]).await.expect("metrics")
}

async fn updates(proxy: &ProxyProcess, kind: &str) -> f64 {
    let label = format!("kind=\"{kind}\"");
    proxy.metric(UPDATES, &[&label]).await.expect("metrics")
}

// ---------------------------------------------------------------- the service's view

/// Route objects by id, from a list of `RouteSpec`s.
fn routes_by_id(routes: &Value) -> BTreeMap<String, Value> {
    let list = routes
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {routes}"));
    let map: BTreeMap<String, Value> = list
        .iter()
        .map(|r| (r["id"].as_str().expect("route id").to_string(), r.clone()))
        .collect();
    assert_eq!(map.len(), list.len(), "a route id appears twice: {routes}");
    map
}

fn app_ids(apps: &Value) -> BTreeSet<String> {
    apps.as_array()
        .unwrap_or_else(|| panic!("not a list: {apps}"))
        .iter()
        .map(|a| a["id"].as_str().expect("app id").to_string())
        .collect()
}

/// `(app, upstream) -> sorted endpoint addresses` of the proxy's `/config`.
fn proxy_endpoints(view: &Value) -> BTreeMap<(String, String), Vec<String>> {
    view["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .map(|u| {
            let mut eps: Vec<String> = u["endpoints"]
                .as_array()
                .expect("endpoints")
                .iter()
                .map(|e| e["address"].as_str().expect("address").to_string())
                .collect();
            eps.sort();
            (
                (
                    u["app"].as_str().unwrap().to_string(),
                    u["name"].as_str().unwrap().to_string(),
                ),
                eps,
            )
        })
        .collect()
}

/// The same from the service's `GET /api/v1/apps`.
fn service_endpoints(apps: &Value) -> BTreeMap<(String, String), Vec<String>> {
    let mut out = BTreeMap::new();
    for app in apps.as_array().expect("apps") {
        let id = app["id"].as_str().unwrap().to_string();
        for (name, cluster) in app["upstreams"].as_object().expect("upstreams") {
            let mut eps: Vec<String> = cluster["endpoints"]
                .as_array()
                .expect("endpoints")
                .iter()
                .map(|e| e["address"].as_str().expect("address").to_string())
                .collect();
            eps.sort();
            out.insert((id.clone(), name.clone()), eps);
        }
    }
    out
}

/// Asserts the proxy's `/config` holds exactly the service's apps, routes and
/// instances.
async fn assert_matches_service(api: &ApiClient, view: &Value) {
    let (status, routes) = api.api("GET", "/api/v1/routes", None).await;
    assert_eq!(status, 200, "{routes}");
    let (status, apps) = api.api("GET", "/api/v1/apps", None).await;
    assert_eq!(status, 200, "{apps}");
    assert_eq!(
        routes_by_id(&view["routes"]),
        routes_by_id(&routes["routes"]),
        "routes differ between the proxy and the service"
    );
    assert_eq!(app_ids(&view["apps"]), app_ids(&apps["apps"]));
    assert_eq!(proxy_endpoints(view), service_endpoints(&apps["apps"]));
}

/// Every edge event after `after`, from the feed endpoint.
async fn events_after(api: &ApiClient, after: i64) -> Vec<Value> {
    let (status, v) = api
        .api("GET", &format!("/v1/events?after={after}&limit=5000"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().expect("events").clone()
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------- the shop, by API

/// What [`create_shop`] set up.
struct Shop {
    cert: TestCert,
    /// The secret key, as the API showed it once.
    key: String,
    /// The event id of the last command.
    event_id: i64,
}

/// Through the API: app `shop`, the upstream as its instance, `shop.test` bound,
/// a certificate for it, route `/api` → `/`, key `ci`, and a policy requiring keys.
async fn create_shop(api: &ApiClient, upstream: SocketAddr) -> Shop {
    let (status, v) = api
        .api("POST", "/api/v1/apps", Some(&json!({"id": SHOP})))
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["app"]["id"], SHOP, "{v}");

    let (status, v) = api
        .api(
            "POST",
            &format!("/api/v1/apps/{SHOP}/upstreams/default/instances"),
            Some(&json!({"address": upstream.to_string()})),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    let (status, v) = api
        .api(
            "PUT",
            &format!("/api/v1/hostnames/{SHOP_HOST}"),
            Some(&json!({"app": SHOP})),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    let cert = TestCert::new(&[SHOP_HOST]);
    let (status, v) = api
        .api(
            "POST",
            "/api/v1/certificates",
            Some(&json!({"id": SHOP_CERT, "cert_pem": cert.cert_pem, "key_pem": cert.key_pem})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["certificate"]["names"], json!([SHOP_HOST]), "{v}");
    assert_eq!(
        v["certificate"]["sha256_fingerprint"],
        json!(sha256_hex(&cert.der())),
        "{v}"
    );
    assert!(
        !v.to_string().contains("PRIVATE KEY"),
        "the answer shows the key: {v}"
    );

    let (status, v) = api
        .api(
            "POST",
            "/api/v1/routes",
            Some(
                &json!({"id": "shop-api", "hostname": SHOP_HOST, "path_prefix": "/api",
                         "rewrite_prefix": "/", "app": SHOP}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    let (status, v) = api
        .api(
            "POST",
            &format!("/api/v1/apps/{SHOP}/keys"),
            Some(&json!({"key_id": SHOP_KEY, "scopes": ["orders:read"]})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let key = v["key"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {v}"))
        .to_string();
    assert!(key.starts_with("sk_live_"), "{key}");
    // Shown once: reading the key back never shows it (nor its hash).
    let (status, read) = api
        .api("GET", &format!("/api/v1/keys/{SHOP_KEY}"), None)
        .await;
    assert_eq!(status, 200, "{read}");
    assert!(!read.to_string().contains(&key), "{read}");
    assert!(read["key"].get("sha256").is_none(), "{read}");

    let (status, v) = api
        .api(
            "PUT",
            &format!("/api/v1/apps/{SHOP}/auth"),
            Some(&json!({"api_keys": true})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["changed"], json!(true), "{v}");
    let event_id = v["event_id"].as_i64().expect("event_id");
    Shop {
        cert,
        key,
        event_id,
    }
}

/// A fresh HTTP/1.1 TLS connection for `shop.test` trusting `trusted`.
async fn shop_session(proxy: &ProxyProcess, trusted: &[&TestCert]) -> TlsSession {
    TlsSession::open(
        proxy.addr("tls"),
        SHOP_HOST,
        client_config(trusted, H1_ONLY),
    )
    .await
    .expect("TLS handshake for shop.test")
}

/// `GET /api/orders` on `session`, with the key when given.
async fn shop_get(session: &mut TlsSession, key: Option<&str>) -> Reply {
    let auth = key.map(bearer);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    get_on(&mut session.sender, SHOP_HOST, "/api/orders", &headers).await
}

/// A control service with the shop, an upstream, and a proxy serving it.
struct ShopStack {
    cp: ControlProcess,
    upstream: Upstream,
    shop: Shop,
    proxy: ProxyProcess,
    _state: tempfile::TempDir,
}

async fn shop_stack() -> ShopStack {
    let cp = ControlProcess::start()
        .await
        .expect("control service starts");
    let upstream = Upstream::start("shop").await;
    let state = tempfile::tempdir().unwrap();
    let proxy = start_edge(&cp, "edge-1", state.path());
    let shop = create_shop(&cp.client(), upstream.addr).await;
    serving(&proxy, shop.event_id).await;
    ShopStack {
        cp,
        upstream,
        shop,
        proxy,
        _state: state,
    }
}

// ---------------------------------------------------------------- tests

/// 1. Everything created through the API is served: the uploaded certificate for the
/// bound hostname, the route with its rewrite, the key (identity headers upstream),
/// and the policy (no key: 401).
#[tokio::test]
async fn api_configured_app_is_served_with_its_certificate_route_and_key() {
    let s = shop_stack().await;
    let view = config_view(&s.proxy).await;
    assert_eq!(view["control"]["node_id"], "edge-1", "{view}");
    assert_eq!(view["control"]["connected"], json!(true), "{view}");
    assert_eq!(
        view["certificates"][0]["sha256"],
        json!(sha256_hex(&s.shop.cert.der())),
        "{view}"
    );

    let mut session = shop_session(&s.proxy, &[&s.shop.cert]).await;
    assert!(
        session.negotiated.peer_cert == s.shop.cert.der(),
        "the proxy presented another certificate for {SHOP_HOST}"
    );

    let ok = shop_get(&mut session, Some(&s.shop.key)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let echo: Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(echo["upstream"], "shop", "{echo}");
    assert_eq!(echo["path"], "/orders", "the route's rewrite: {echo}");
    assert_eq!(ok.seen_header("x-tollgate-app-id").as_deref(), Some(SHOP));
    assert_eq!(
        ok.seen_header("x-tollgate-auth").as_deref(),
        Some("api_key")
    );
    assert_eq!(
        ok.seen_header("x-tollgate-key-id").as_deref(),
        Some(SHOP_KEY)
    );
    assert_eq!(
        ok.seen_header("x-tollgate-scopes").as_deref(),
        Some("orders:read")
    );
    assert!(
        ok.seen_header("authorization").is_none(),
        "the key was forwarded: {}",
        ok.body
    );
    let hits = s.upstream.hits();

    let refused = shop_get(&mut session, None).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.challenge().is_some_and(|c| c.starts_with("Bearer")));
    let wrong = shop_get(&mut session, Some("sk_live_shop_not-a-real-key")).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(
        s.upstream.hits(),
        hits,
        "a refused request reached the upstream"
    );

    // The bound hostname routes the other paths to the same app.
    let auth = bearer(&s.shop.key);
    let root = get_on(
        &mut session.sender,
        SHOP_HOST,
        "/other",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(root.status, 200, "{}", root.body);
    assert_eq!(
        serde_json::from_str::<Value>(&root.body).unwrap()["path"],
        "/other"
    );

    // The plain listener routes by Host as well; an unknown host is not routed.
    let plain = get(
        s.proxy.addr("http"),
        false,
        SHOP_HOST,
        "/api/x",
        &[("x-api-key", &s.shop.key)],
    )
    .await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    let unknown = get(s.proxy.addr("http"), false, "nobody.test", "/", &[]).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(apply_errors(&s.proxy).await, 0.0);
}

/// 2. A key revoked through the API stops working once the proxy applies the event.
#[tokio::test]
async fn revoked_key_is_refused_after_the_proxy_applies_the_event() {
    let s = shop_stack().await;
    let mut session = shop_session(&s.proxy, &[&s.shop.cert]).await;
    assert_eq!(shop_get(&mut session, Some(&s.shop.key)).await.status, 200);

    let (status, v) =
        s.cp.api("DELETE", &format!("/api/v1/keys/{SHOP_KEY}"), None)
            .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["changed"], json!(true), "{v}");
    assert!(!v.to_string().contains(&s.shop.key), "{v}");
    let revoked_at = v["event_id"].as_i64().expect("event_id");
    assert!(revoked_at > s.shop.event_id, "{v}");
    serving(&s.proxy, revoked_at).await;

    // Refused on the open connection and on a new one.
    let hits = s.upstream.hits();
    let refused = shop_get(&mut session, Some(&s.shop.key)).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let mut fresh = shop_session(&s.proxy, &[&s.shop.cert]).await;
    assert_eq!(shop_get(&mut fresh, Some(&s.shop.key)).await.status, 401);
    assert_eq!(s.upstream.hits(), hits);

    let (status, v) =
        s.cp.api("GET", &format!("/api/v1/keys/{SHOP_KEY}"), None)
            .await;
    assert_eq!(status, 404, "{v}");
    // Revoking again: the key is gone.
    let (status, v) =
        s.cp.api("DELETE", &format!("/api/v1/keys/{SHOP_KEY}"), None)
            .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found", "{v}");
}

/// 3. A certificate rotated through the API is presented to new connections, while a
/// connection opened before keeps its handshake and keeps working.
#[tokio::test]
async fn rotated_certificate_reaches_new_connections_and_spares_open_ones() {
    let s = shop_stack().await;
    let old = s.shop.cert.clone();
    let new = TestCert::new(&[SHOP_HOST]);
    let mut open = shop_session(&s.proxy, &[&old, &new]).await;
    assert!(open.negotiated.peer_cert == old.der());
    assert_eq!(shop_get(&mut open, Some(&s.shop.key)).await.status, 200);

    let (status, v) =
        s.cp.api(
            "PUT",
            &format!("/api/v1/certificates/{SHOP_CERT}"),
            Some(&json!({"cert_pem": new.cert_pem, "key_pem": new.key_pem})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["certificate"]["sha256_fingerprint"],
        json!(sha256_hex(&new.der())),
        "{v}"
    );
    assert_eq!(v["certificate"]["names"], json!([SHOP_HOST]), "{v}");
    let rotated_at = v["event_id"].as_i64().expect("event_id");
    let view = serving(&s.proxy, rotated_at).await;
    assert_eq!(
        view["certificates"][0]["sha256"],
        json!(sha256_hex(&new.der())),
        "{view}"
    );

    let mut fresh = shop_session(&s.proxy, &[&old, &new]).await;
    assert!(
        fresh.negotiated.peer_cert == new.der(),
        "a new connection still gets the old certificate"
    );
    assert_eq!(shop_get(&mut fresh, Some(&s.shop.key)).await.status, 200);
    // A client trusting only the new certificate succeeds.
    let mut only_new = shop_session(&s.proxy, &[&new]).await;
    assert_eq!(shop_get(&mut only_new, Some(&s.shop.key)).await.status, 200);

    // The connection opened before the rotation still serves, on its old handshake.
    let again = shop_get(&mut open, Some(&s.shop.key)).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(open.negotiated.peer_cert == old.der());
    assert_eq!(apply_errors(&s.proxy).await, 0.0);
}

/// Commands of the restart test: routes `burst-<i>` on `burst.test/r<i>/`, each
/// rewritten to `/seen/<i>/` so a request shows which route served it.
const BURST: usize = 30;
const BURST_HOST: &str = "burst.test";

fn burst_route(i: usize) -> Value {
    json!({"id": format!("burst-{i}"), "hostname": BURST_HOST, "path_prefix": format!("/r{i}/"),
           "rewrite_prefix": format!("/seen/{i}/"), "app": "burst"})
}

/// Progress of the burst writer, shared with the test.
#[derive(Default)]
struct Burst {
    /// Commands the service took.
    done: AtomicUsize,
    /// Attempts that failed (service unreachable or unavailable), each retried.
    failed: AtomicUsize,
    /// Set by the test once it has stopped the service.
    stopped: AtomicBool,
}

/// Issues the burst, retrying each command until the service takes it. Past half-way
/// it waits for the test to have stopped the service, so the outage always falls
/// inside the burst whatever the machine's speed (the stop itself races with the
/// commands before that).
async fn write_burst(api: ApiClient, burst: Arc<Burst>) {
    for i in 0..BURST {
        if i == BURST / 2 {
            until("the test to stop the service", CATCH_UP, || async {
                burst.stopped.load(SeqCst).then_some(())
            })
            .await;
        }
        let body = burst_route(i);
        let mut retried = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts < 2000, "route {i}: the service never took it");
            match api.try_api("POST", "/api/v1/routes", Some(&body)).await {
                Ok((201, _)) => break,
                // A retry of a command the service applied before its answer was lost.
                Ok((409, v)) if retried && v["error"]["code"] == "conflict" => break,
                Ok((503, _)) | Err(_) => {
                    retried = true;
                    burst.failed.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok((status, v)) => panic!("route {i}: {status} {v}"),
            }
        }
        burst.done.fetch_add(1, SeqCst);
    }
}

/// Polls the proxy's `/config` until the burst is done; returns every view.
async fn watch_views(admin: SocketAddr, burst: Arc<Burst>) -> Vec<Value> {
    let mut views = Vec::new();
    while burst.done.load(SeqCst) < BURST {
        let (status, _, body) = tollgate_tests::client::get_plain(admin, "admin", "/config")
            .await
            .expect("GET /config");
        assert_eq!(status, 200, "{body}");
        views.push(serde_json::from_str(&body).expect("/config is JSON"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    views
}

/// 4. The service restarts in the middle of a stream of commands: commands during the
/// outage fail and are retried, and afterwards the proxy is exactly where the service
/// is: same cursor, same routes, apps and instances, every route routing, each event
/// applied once (one snapshot, one delta per event) and no apply errors. Throughout,
/// the proxy's `/config` never claims an event it does not serve.
#[tokio::test]
async fn restart_during_a_stream_of_commands_leaves_no_gap_and_no_duplicate() {
    let mut cp = ControlProcess::start()
        .await
        .expect("control service starts");
    let api = cp.client();
    let upstream = Upstream::start("burst").await;
    api.write("POST", "/api/v1/apps", Some(&json!({"id": "burst"})))
        .await;
    let setup = api
        .write(
            "POST",
            "/api/v1/apps/burst/upstreams/default/instances",
            Some(&json!({"address": upstream.addr.to_string()})),
        )
        .await;
    // Started after the setup, so the proxy's one snapshot is at `setup`.
    let state = tempfile::tempdir().unwrap();
    let proxy = start_edge(&cp, "edge-burst", state.path());
    settled_at(&proxy, setup, CATCH_UP).await;
    assert_eq!(updates(&proxy, "snapshot").await, 1.0);

    let burst = Arc::new(Burst::default());
    let writer = tokio::spawn(write_burst(api.clone(), burst.clone()));
    let monitor = tokio::spawn(watch_views(proxy.admin, burst.clone()));

    until("a third of the commands", CATCH_UP, || async {
        (burst.done.load(SeqCst) >= BURST / 3).then_some(())
    })
    .await;
    let status = cp.stop().await.expect("graceful stop");
    assert!(status.success(), "{status}\n{}", cp.logs());
    burst.stopped.store(true, SeqCst);
    until("a command to fail during the outage", CATCH_UP, || async {
        (burst.failed.load(SeqCst) >= 1).then_some(())
    })
    .await;
    assert!(burst.done.load(SeqCst) < BURST);
    cp.restart().await.expect("control service restarts");

    tokio::time::timeout(Duration::from_secs(180), writer)
        .await
        .expect("the writer finishes")
        .expect("the writer did not panic");
    assert_eq!(burst.done.load(SeqCst), BURST);
    assert!(burst.failed.load(SeqCst) >= 1);
    let views = monitor.await.expect("the monitor did not panic");

    let (status, version) = api.api("GET", "/api/v1/version", None).await;
    assert_eq!(status, 200, "{version}");
    let last = version["event_id"].as_i64().unwrap();
    assert_eq!(
        version["store_last_event_id"].as_i64(),
        Some(last),
        "{version}"
    );
    let view = settled_at(&proxy, last, CATCH_UP).await;
    assert_matches_service(&api, &view).await;

    // No gap: every route of the burst is there and routes.
    let routes = routes_by_id(&view["routes"]);
    for i in 0..BURST {
        let id = format!("burst-{i}");
        assert!(routes.contains_key(&id), "{id} missing: {view}");
        let r = get(
            proxy.addr("http"),
            false,
            BURST_HOST,
            &format!("/r{i}/x"),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        let echo: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(echo["path"], format!("/seen/{i}/x"), "{id}: {echo}");
    }
    assert_eq!(routes.len(), BURST, "{view}");

    // No duplicate: one snapshot, then each edge event of the log applied once.
    let edge_events = events_after(&api, setup).await;
    assert_eq!(edge_events.len(), BURST, "{edge_events:?}");

    // And at every moment seen during the burst, the proxy served every route up to
    // the event it said it served.
    let created: Vec<(i64, String)> = edge_events
        .iter()
        .map(|e| {
            assert_eq!(e["event_type"], "route_created", "{e}");
            let id = e["event"]["route"]["id"].as_str().expect("route id");
            (e["event_id"].as_i64().unwrap(), id.to_string())
        })
        .collect();
    assert!(
        views.len() > 1,
        "the monitor saw too little: {}",
        views.len()
    );
    for v in &views {
        let serving = v["control"]["serving_event_id"].as_i64().unwrap();
        let routes = routes_by_id(&v["routes"]);
        for (event_id, id) in &created {
            assert!(
                *event_id > serving || routes.contains_key(id),
                "/config said it served event {serving} but lacks {id} (event {event_id}): {v}"
            );
        }
    }
    assert_eq!(apply_errors(&proxy).await, 0.0, "{}", proxy.logs());
    assert_eq!(updates(&proxy, "snapshot").await, 1.0);
    assert_eq!(updates(&proxy, "delta").await, BURST as f64);
    wait_connected(&proxy).await;
}

/// 5. A proxy started while the service is down serves the snapshot it persisted,
/// says it is disconnected, and reconnects when the service is back.
#[tokio::test]
async fn proxy_started_while_the_service_is_down_serves_its_persisted_snapshot() {
    let mut cp = ControlProcess::start()
        .await
        .expect("control service starts");
    let api = cp.client();
    let upstream = Upstream::start("cold").await;
    api.write("POST", "/api/v1/apps", Some(&json!({"id": "cold"})))
        .await;
    api.write(
        "POST",
        "/api/v1/apps/cold/upstreams/default/instances",
        Some(&json!({"address": upstream.addr.to_string()})),
    )
    .await;
    let bound = api
        .write(
            "PUT",
            "/api/v1/hostnames/cold.test",
            Some(&json!({"app": "cold"})),
        )
        .await;

    let state = tempfile::tempdir().unwrap();
    let snapshot_file = state.path().join("edge-snapshot.json");
    let config = edge_config(&cp, "edge-cold", state.path());
    let first = ProxyProcess::start(&config, &[]).expect("proxy starts");
    serving(&first, bound).await;
    assert_eq!(
        get(first.addr("http"), false, "cold.test", "/", &[])
            .await
            .status,
        200
    );
    // The snapshot is written after the apply: wait until it holds `bound`.
    until("the persisted snapshot", CATCH_UP, || async {
        let text = std::fs::read_to_string(&snapshot_file).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        (v["event_id"].as_i64()? >= bound).then_some(())
    })
    .await;
    // Both go away: the proxy and (crashing) the service.
    drop(first);
    cp.kill().expect("kill the control service");

    // Only the proxy, same config, same state_dir.
    let proxy = ProxyProcess::start(&config, &[]).expect("proxy starts without the service");
    let r = get(proxy.addr("http"), false, "cold.test", "/path", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["upstream"],
        "cold"
    );
    let c = control_view(&proxy).await;
    assert_eq!(c["connected"], json!(false), "{c}");
    assert_eq!(c["transport"], Value::Null, "{c}");
    assert_eq!(c["event_id"].as_i64(), Some(bound), "{c}");
    assert_eq!(c["serving_event_id"].as_i64(), Some(bound), "{c}");
    // Ready on its persisted config; a new proxy with nothing persisted is not ready
    // (it would route nothing) until the service is back.
    assert_eq!(proxy.admin_get("/readyz").await.unwrap().0, 200);
    let empty = tempfile::tempdir().unwrap();
    let fresh = ProxyProcess::start(&edge_config(&cp, "edge-fresh", empty.path()), &[])
        .expect("proxy starts without the service");
    let (status, body) = fresh.admin_get("/readyz").await.unwrap();
    assert_eq!(
        (status, body.trim()),
        (503, "waiting for the first config from the control service")
    );

    cp.restart().await.expect("control service restarts");
    wait_connected(&proxy).await;
    until("the fresh proxy to be ready", CATCH_UP, || async {
        (fresh.admin_get("/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    // And follows again: a change made now reaches it.
    let unbound = api
        .write("DELETE", "/api/v1/hostnames/cold.test", None)
        .await;
    settled_at(&proxy, unbound, CATCH_UP).await;
    assert_eq!(
        get(proxy.addr("http"), false, "cold.test", "/", &[])
            .await
            .status,
        404
    );
    assert_eq!(apply_errors(&proxy).await, 0.0, "{}", proxy.logs());
}

/// 6. Two proxies following one service converge on the same cursor and the same
/// config after a burst of concurrent commands.
#[tokio::test]
async fn two_proxies_converge_after_a_burst() {
    let cp = ControlProcess::start()
        .await
        .expect("control service starts");
    let api = cp.client();
    let state_a = tempfile::tempdir().unwrap();
    let state_b = tempfile::tempdir().unwrap();
    let a = start_edge(&cp, "edge-a", state_a.path());
    let b = start_edge(&cp, "edge-b", state_b.path());
    let created = api
        .write("POST", "/api/v1/apps", Some(&json!({"id": "multi"})))
        .await;
    serving(&a, created).await;
    serving(&b, created).await;

    // 20 instances and 20 routes, all at once.
    let mut writes = Vec::new();
    for i in 0..20u16 {
        let c = api.clone();
        writes.push(tokio::spawn(async move {
            c.write(
                "POST",
                "/api/v1/apps/multi/upstreams/default/instances",
                Some(&json!({"address": format!("127.0.0.1:{}", 40000 + i)})),
            )
            .await
        }));
        let c = api.clone();
        writes.push(tokio::spawn(async move {
            c.write(
                "POST",
                "/api/v1/routes",
                Some(
                    &json!({"id": format!("multi-{i}"), "hostname": format!("m{i}.test"),
                             "app": "multi"}),
                ),
            )
            .await
        }));
    }
    let ids: Vec<i64> = join_all(writes)
        .await
        .into_iter()
        .map(|r| r.expect("write task"))
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "two commands answered one event id"
    );

    let last = cp.event_id().await;
    assert_eq!(last, *unique.last().unwrap());
    let view_a = settled_at(&a, last, CATCH_UP).await;
    let view_b = settled_at(&b, last, CATCH_UP).await;
    assert_eq!(view_a["routes"], view_b["routes"]);
    assert_eq!(view_a["apps"], view_b["apps"]);
    assert_eq!(proxy_endpoints(&view_a), proxy_endpoints(&view_b));
    assert_matches_service(&api, &view_a).await;
    assert_eq!(routes_by_id(&view_a["routes"]).len(), 20);
    assert_eq!(
        proxy_endpoints(&view_a)[&("multi".to_string(), "default".to_string())].len(),
        20
    );
    // Both route what the burst created (the instances are not listening: 502/503,
    // not 404).
    for p in [&a, &b] {
        let r = get(p.addr("http"), false, "m7.test", "/", &[]).await;
        assert_ne!(r.status, 404, "{}", r.body);
        assert_eq!(apply_errors(p).await, 0.0);
    }
}

/// 7. Invalid commands get a clear 4xx and change nothing: not the log, not the
/// service's view, not the proxies (which see only the next valid command).
#[tokio::test]
async fn invalid_commands_are_refused_and_change_nothing() {
    let s = shop_stack().await;
    let api = s.cp.client();
    let other = api
        .write("POST", "/api/v1/apps", Some(&json!({"id": "other"})))
        .await;
    let before_view = settled_at(&s.proxy, other, CATCH_UP).await;
    let (_, before_version) = api.api("GET", "/api/v1/version", None).await;
    let (_, before_routes) = api.api("GET", "/api/v1/routes", None).await;
    let (_, before_certs) = api.api("GET", "/api/v1/certificates", None).await;
    let deltas_before = updates(&s.proxy, "delta").await;

    // A route to an app that does not exist.
    let (status, v) = api
        .api(
            "POST",
            "/api/v1/routes",
            Some(&json!({"hostname": "ghost.test", "app": "ghost"})),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("ghost"),
        "{v}"
    );

    // A certificate with another certificate's key.
    let a = TestCert::new(&["mismatch.test"]);
    let b = TestCert::new(&["mismatch.test"]);
    let (status, v) = api
        .api(
            "POST",
            "/api/v1/certificates",
            Some(&json!({"id": "mismatch", "cert_pem": a.cert_pem, "key_pem": b.key_pem})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "validation_failed", "{v}");
    assert!(
        v.to_string().contains("does not match"),
        "the answer does not say what is wrong: {v}"
    );
    // Rotating the shop's certificate to a mismatched pair is refused too.
    let (status, v) = api
        .api(
            "PUT",
            &format!("/api/v1/certificates/{SHOP_CERT}"),
            Some(&json!({"cert_pem": a.cert_pem, "key_pem": s.shop.cert.key_pem})),
        )
        .await;
    assert_eq!(status, 422, "{v}");

    // A route that does not validate.
    let (status, v) = api
        .api(
            "POST",
            "/api/v1/routes",
            Some(&json!({"hostname": SHOP_HOST, "path_prefix": "no-slash", "app": SHOP})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "validation_failed", "{v}");
    assert!(
        !v["error"]["problems"].as_array().unwrap().is_empty(),
        "{v}"
    );

    // A hostname bound to another app, and a malformed body.
    let (status, v) = api
        .api(
            "PUT",
            &format!("/api/v1/hostnames/{SHOP_HOST}"),
            Some(&json!({"app": "other"})),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "conflict", "{v}");
    let (status, v) = api
        .api(
            "POST",
            "/api/v1/apps",
            Some(&json!({"id": "x", "bogus": 1})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");

    // Nothing was appended and the service's view is unchanged.
    let (_, after_version) = api.api("GET", "/api/v1/version", None).await;
    assert_eq!(after_version, before_version);
    assert_eq!(
        api.api("GET", "/api/v1/routes", None).await.1,
        before_routes
    );
    assert_eq!(
        api.api("GET", "/api/v1/certificates", None).await.1,
        before_certs
    );
    assert!(events_after(&api, other).await.is_empty());
    let (status, _) = api.api("GET", "/api/v1/apps/ghost", None).await;
    assert_eq!(status, 404);

    // The proxy sees exactly the next valid command, and nothing of the refused ones.
    let marker = api
        .write(
            "POST",
            "/api/v1/apps/other/upstreams/default/instances",
            Some(&json!({"address": "127.0.0.1:9"})),
        )
        .await;
    let events = events_after(&api, other).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event_id"].as_i64(), Some(marker));
    assert_eq!(events[0]["event_type"], "instance_added");
    let after_view = settled_at(&s.proxy, marker, CATCH_UP).await;
    assert_eq!(updates(&s.proxy, "delta").await, deltas_before + 1.0);
    assert_eq!(after_view["routes"], before_view["routes"]);
    assert_eq!(after_view["certificates"], before_view["certificates"]);
    assert_eq!(apply_errors(&s.proxy).await, 0.0);
    // The shop still serves with its certificate.
    let mut session = shop_session(&s.proxy, &[&s.shop.cert]).await;
    assert!(session.negotiated.peer_cert == s.shop.cert.der());
    assert_eq!(shop_get(&mut session, Some(&s.shop.key)).await.status, 200);
}

/// Today's billing period (UTC day), as the control service names it.
fn utc_today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// 8. Usage records: every request the proxy answers for the app (served or refused at
/// the edge) reaches the control service once, with the response bytes sent.
#[tokio::test]
async fn usage_totals_equal_the_traffic_sent() {
    let s = shop_stack().await;
    let today = utc_today();
    let mut session = shop_session(&s.proxy, &[&s.shop.cert]).await;
    let (mut requests, mut bytes_out) = (0u64, 0u64);
    for i in 0..25 {
        let key = (i % 5 != 0).then_some(s.shop.key.as_str());
        let reply = shop_get(&mut session, key).await;
        assert!(matches!(reply.status, 200 | 401), "{}", reply.body);
        requests += 1;
        bytes_out += reply.body.len() as u64;
    }
    let path = format!("/api/v1/apps/shop/usage?period={today}");
    let deadline = Instant::now() + WAIT;
    let totals = loop {
        let (status, v) = s.cp.api("GET", &path, None).await;
        assert_eq!(status, 200, "{v}");
        if v["totals"]["requests"].as_u64() == Some(requests) || Instant::now() > deadline {
            break v["totals"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(totals["requests"], json!(requests), "{totals}");
    assert_eq!(totals["bytes_out"], json!(bytes_out), "{totals}");
    // Nothing is counted twice: later flushes add nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, v) = s.cp.api("GET", &path, None).await;
    assert_eq!(v["totals"]["requests"], json!(requests), "{v}");
}
