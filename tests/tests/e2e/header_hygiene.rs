//! Header and routing hygiene at the edge, end to end (issue 11, Medium and Low):
//! h2c upgrades never tunnel, the client's `Forwarded`/`X-Real-IP` never reach the
//! upstream, identity headers come only from the verified credential, a route cannot
//! send one app's hostname to another app (config file, control API, followed log),
//! a budget's `on_backend_error` holds with its store down and no rate rules, and
//! duplicate `Host` or padded HTTP/2 values are 400.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tollgate_filters::apikey::{KeyKind, generate};
use tollgate_tests::auth::{Reply, bearer, get};
use tollgate_tests::config::{Config, expect_start_failure};
use tollgate_tests::control::ControlProcess;
use tollgate_tests::helpers::{WAIT, json};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::redis::{self, Private};
use tollgate_tests::upstream::{Upstream, dead_addr};

const LOCAL_RESPONSES: &str = "tollgate_http_local_responses_total";

/// A proxy with one listener `http` and an echo app `web` at `web.test`.
async fn web_proxy() -> (ProxyProcess, Upstream) {
    let up = Upstream::start("web").await;
    let cfg = Config::new()
        .listener("http")
        .app("web", &["web.test"], up.addr)
        .build();
    (ProxyProcess::start(&cfg, &[]).expect("proxy starts"), up)
}

// ---------------------------------------------------------------------------
// h2c upgrades

const H2C_UPGRADE: &[(&str, &str)] = &[
    ("connection", "Upgrade, HTTP2-Settings"),
    ("upgrade", "h2c"),
    ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
];

/// An HTTP/1.1 upstream that switches to h2c whenever asked (as a vulnerable one
/// would), and answers `plain` otherwise. Remembers whether it was ever asked.
async fn switching_upstream() -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let asked = Arc::new(AtomicBool::new(false));
    let seen = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if head.contains("upgrade: h2c") {
                    seen.store(true, SeqCst);
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\ntunnel",
                        )
                        .await;
                    let _ = s.read(&mut buf).await;
                } else {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nplain",
                        )
                        .await;
                }
            });
        }
    });
    (addr, asked)
}

#[tokio::test]
async fn h2c_upgrades_are_forwarded_as_plain_requests_and_never_spliced() {
    let web = Upstream::start("web").await;
    let (switching, asked) = switching_upstream().await;
    let cfg = Config::new()
        .listener("http")
        .app("web", &["web.test"], web.addr)
        .app("switch", &["switch.test"], switching)
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");

    // The echo upstream sees a plain request: no Upgrade, HTTP2-Settings or Connection.
    let r = get(addr, false, "web.test", "/h2c", H2C_UPGRADE).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.seen();
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert!(seen.get(gone).is_none(), "upstream saw `{gone}`: {seen:?}");
    }

    // An upstream that would switch is never asked: the client gets its plain answer.
    let r = get(addr, false, "switch.test", "/", H2C_UPGRADE).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "plain"),
        "no 101, no tunnel"
    );
    assert!(
        !asked.load(SeqCst),
        "the upstream was asked to switch to h2c"
    );
}

// ---------------------------------------------------------------------------
// Forwarded and X-Real-IP

#[tokio::test]
async fn client_forwarded_and_x_real_ip_never_reach_the_upstream() {
    let (proxy, _up) = web_proxy().await;
    for h2 in [false, true] {
        let r = get(
            proxy.addr("http"),
            h2,
            "web.test",
            "/",
            &[
                ("forwarded", "for=6.6.6.6;host=evil.test;proto=https"),
                ("x-real-ip", "6.6.6.6"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "h2={h2}: {}", r.body);
        let seen = r.seen();
        assert!(seen.get("forwarded").is_none(), "h2={h2}: {seen:?}");
        assert!(seen.get("x-real-ip").is_none(), "h2={h2}: {seen:?}");
        assert_eq!(
            r.seen_header("x-forwarded-for").as_deref(),
            Some("127.0.0.1")
        );
    }
}

// ---------------------------------------------------------------------------
// Identity headers

const SPOOFED: &[(&str, &str)] = &[
    ("x-tenant-id", "globex"),
    ("x-actor-id", "admin"),
    ("x-user-id", "root"),
    ("x-org-id", "org-1"),
];

#[tokio::test]
async fn identity_headers_come_only_from_the_verified_credential() {
    let acme = Upstream::start("acme").await;
    let open = Upstream::start("open").await;
    let (key, sha256) = generate(KeyKind::Secret, false, "acme").expect("key");
    let apps = Config::new()
        .listener("http")
        .app("acme", &["acme.test"], acme.addr)
        .raw("[apps.auth]\napi_keys = true")
        .app("open", &["open.test"], open.addr)
        .raw(&format!(
            "[[api_keys]]\nkey_id = \"acme-reader\"\napp = \"acme\"\nkind = \"secret\"\n\
             sha256 = \"{sha256}\"\nscopes = []"
        ));
    let proxy = ProxyProcess::start(&apps.build(), &[]).expect("proxy starts");
    let addr = proxy.addr("http");
    let auth = bearer(&key);
    for h2 in [false, true] {
        let mut headers = SPOOFED.to_vec();
        headers.push(("authorization", auth.as_str()));
        let r = get(addr, h2, "acme.test", "/", &headers).await;
        assert_eq!(r.status, 200, "h2={h2}: {}", r.body);
        assert_eq!(r.seen_header("x-tenant-id").as_deref(), Some("acme"));
        assert_eq!(r.seen_header("x-actor-id").as_deref(), Some("acme-reader"));
        assert_eq!(r.seen_header("x-user-id"), None);
        assert_eq!(r.seen_header("x-org-id").as_deref(), Some("org-1"));

        // An open route: the client's copies are removed, none is set.
        let r = get(addr, h2, "open.test", "/", SPOOFED).await;
        assert_eq!(r.status, 200, "h2={h2}: {}", r.body);
        for name in ["x-tenant-id", "x-actor-id", "x-user-id"] {
            assert_eq!(r.seen_header(name), None, "h2={h2}: {name}");
        }
    }
    drop(proxy);

    // The list is configurable: here only `x-org-id` (the verified two are still set).
    let custom = apps.raw("[limits]\nidentity_headers = [\"X-Org-Id\"]");
    let proxy = ProxyProcess::start(&custom.build(), &[]).expect("proxy starts");
    let r = get(proxy.addr("http"), false, "open.test", "/", SPOOFED).await;
    assert_eq!(r.seen_header("x-org-id"), None);
    assert_eq!(r.seen_header("x-user-id").as_deref(), Some("root"));
    let mut headers = SPOOFED.to_vec();
    headers.push(("authorization", auth.as_str()));
    let r = get(proxy.addr("http"), false, "acme.test", "/", &headers).await;
    assert_eq!(r.seen_header("x-tenant-id").as_deref(), Some("acme"));
    assert_eq!(r.seen_header("x-actor-id").as_deref(), Some("acme-reader"));
    drop(proxy);

    let bad = Config::new()
        .listener("http")
        .raw("[limits]\nidentity_headers = [\"bad name\"]")
        .build();
    let (status, stderr) = expect_start_failure(&bad, &[], WAIT).expect("refused");
    assert!(!status.success());
    assert!(
        stderr.contains("`bad name` is not a header name"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// A hostname belongs to one app

const OWNED: &str = "belongs to app `acme`";

/// Apps `acme` (`acme.test`) and `globex` (`globex.test`), and `route` TOML.
fn two_tenants(acme: SocketAddr, globex: SocketAddr, route: &str) -> String {
    Config::new()
        .listener("http")
        .app("acme", &["acme.test"], acme)
        .app("globex", &["globex.test"], globex)
        .raw(route)
        .build()
}

const ADMIN_TO_ACME: &str =
    "[[routes]]\nhostname = \"acme.test\"\npath_prefix = \"/admin\"\napp = \"acme\"";
const ADMIN_TO_GLOBEX: &str =
    "[[routes]]\nhostname = \"acme.test\"\npath_prefix = \"/admin\"\napp = \"globex\"";

#[tokio::test]
async fn config_files_with_a_route_to_another_apps_hostname_are_refused() {
    let acme = Upstream::start("acme").await;
    let globex = Upstream::start("globex").await;
    let bad = two_tenants(acme.addr, globex.addr, ADMIN_TO_GLOBEX);
    let (status, stderr) = expect_start_failure(&bad, &[], WAIT).expect("refused");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(OWNED), "{stderr}");

    // A reload to it is refused as a whole; the running config keeps serving.
    let good = two_tenants(acme.addr, globex.addr, ADMIN_TO_ACME);
    let proxy = ProxyProcess::start(&good, &[]).expect("proxy starts");
    proxy.write_config(&bad).expect("write config");
    let errors = proxy
        .wait_metric(
            "tollgate_config_reloads_total",
            &["result=\"error\""],
            WAIT,
            |v| v >= 1.0,
        )
        .await
        .expect("metrics");
    assert_eq!(errors, 1.0, "{}", proxy.logs());
    let r = get(proxy.addr("http"), false, "acme.test", "/admin", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r.body)["upstream"], "acme");
    assert_eq!(globex.hits(), 0);
}

/// `status` and `error.problems[*].reason` joined.
fn refusal(answer: &(u16, Value)) -> (u16, String) {
    let reasons: Vec<&str> = answer.1["error"]["problems"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["reason"].as_str()).collect())
        .unwrap_or_default();
    (answer.0, reasons.join("; "))
}

#[tokio::test]
async fn the_control_service_refuses_routes_to_another_apps_hostname() {
    let cp = ControlProcess::start().await.expect("control starts");
    for id in ["acme", "globex"] {
        cp.write("POST", "/api/v1/apps", Some(&json!({ "id": id })))
            .await;
    }
    cp.write(
        "PUT",
        "/api/v1/hostnames/acme.test",
        Some(&json!({ "app": "acme" })),
    )
    .await;
    cp.write(
        "PUT",
        "/api/v1/hostnames/*.acme.test",
        Some(&json!({ "app": "acme" })),
    )
    .await;
    for host in ["acme.test", "www.acme.test"] {
        let route = json!({ "hostname": host, "path_prefix": "/admin", "app": "globex" });
        let answer = cp.api("POST", "/api/v1/routes", Some(&route)).await;
        let (status, reasons) = refusal(&answer);
        assert_eq!(status, 422, "{host}: {}", answer.1);
        assert_eq!(answer.1["error"]["code"], "validation_failed");
        assert!(reasons.contains(OWNED), "{host}: {}", answer.1);
    }
    // The owner's own route is fine; so is a route on a name no app binds, but then
    // binding that name to another app is refused.
    let own = json!({ "hostname": "acme.test", "path_prefix": "/admin", "app": "acme" });
    cp.write("POST", "/api/v1/routes", Some(&own)).await;
    let free = json!({ "hostname": "shared.test", "app": "globex" });
    cp.write("POST", "/api/v1/routes", Some(&free)).await;
    let answer = cp
        .api(
            "PUT",
            "/api/v1/hostnames/shared.test",
            Some(&json!({ "app": "acme" })),
        )
        .await;
    let (status, reasons) = refusal(&answer);
    assert_eq!(status, 422, "{}", answer.1);
    assert!(reasons.contains(OWNED), "{}", answer.1);
}

#[tokio::test]
async fn a_followed_log_holding_such_a_route_costs_only_that_route() {
    let acme = Upstream::start("acme").await;
    let globex = Upstream::start("globex").await;
    let cluster =
        |addr: SocketAddr| json!({ "default": { "endpoints": [{ "address": addr.to_string() }] } });
    let app = |id: &str, addr| json!({ "id": id, "status": "active", "upstreams": cluster(addr) });
    // What a proxy persisted from a log written before the rule existed.
    let persisted = json!({
        "event_id": 9,
        "config": {
            "apps": { "acme": app("acme", acme.addr), "globex": app("globex", globex.addr) },
            "hostnames": { "acme.test": "acme", "globex.test": "globex" },
            "routes": {
                "r_cross": { "id": "r_cross", "hostname": "acme.test", "path_prefix": "/admin", "app": "globex" },
                "r_own": { "id": "r_own", "hostname": "globex.test", "path_prefix": "/v2", "app": "globex" }
            }
        }
    });
    let state = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        state.path().join("edge-snapshot.json"),
        persisted.to_string(),
    )
    .expect("write snapshot");
    // The control service is unreachable: the proxy serves the persisted state.
    let dead = dead_addr();
    let cfg = Config::new()
        .listener("http")
        .raw(&format!(
            "[control]\ngrpc_url = \"http://{dead}\"\ntoken = \"t\"\nnode_id = \"edge\"\n\
             state_dir = \"{}\"",
            state.path().display()
        ))
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");
    let upstream = |r: &Reply| json(&r.body)["upstream"].clone();
    let r = get(addr, false, "acme.test", "/admin", &[]).await;
    assert_eq!(r.status, 200, "{}: {}", r.body, proxy.logs());
    assert_eq!(upstream(&r), "acme", "the cross-tenant route is left out");
    let r = get(addr, false, "globex.test", "/v2/x", &[]).await;
    assert_eq!(
        (r.status, upstream(&r)),
        (200, json!("globex")),
        "{}",
        r.body
    );
    assert_eq!(globex.hits(), 1);
    assert!(
        proxy
            .logs()
            .contains("route on a hostname of another app left out"),
        "{}",
        proxy.logs()
    );
}

// ---------------------------------------------------------------------------
// Budgets with their store down

#[tokio::test]
async fn a_budget_follows_its_on_backend_error_with_the_store_down_and_no_rate_rules() {
    let mut store = Private::start();
    let up = Upstream::start("web").await;
    // A store that is down refuses connections at once; the timeout only has to be long
    // enough for a store that is up (first connection included) on a busy machine.
    let mut cfg = Config::new().listener("http").raw(&format!(
        "[rate_limiting]\nredis_url = \"{}\"\nredis_timeout_ms = 1000\nbudget_store = \"redis\"\n\
         key_prefix = \"{}\"",
        store.url(),
        redis::prefix("budget-policy")
    ));
    let policies = ["allow", "deny", "local"];
    for policy in policies {
        cfg = cfg
            .app(policy, &[&format!("{policy}.test")], up.addr)
            .raw(&format!(
                "[apps.limits]\non_backend_error = \"{policy}\"\n\
                 [apps.limits.budget]\nperiod = \"day\"\nlimit = 1000\nunit = \"requests\""
            ));
    }
    let proxy = ProxyProcess::start(&cfg.build(), &[]).expect("proxy starts");
    let addr = proxy.addr("http");
    for policy in policies {
        let r = get(addr, false, &format!("{policy}.test"), "/", &[]).await;
        assert_eq!(r.status, 200, "{policy}, store up: {}", r.body);
    }
    store.stop();
    let before = up.hits();
    let r = get(addr, false, "allow.test", "/", &[]).await;
    assert_eq!(r.status, 200, "allow admits unmetered: {}", r.body);
    assert_eq!(up.hits(), before + 1);
    for policy in ["deny", "local"] {
        let r = get(addr, false, &format!("{policy}.test"), "/", &[]).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (503, "limit_backend_unavailable"),
            "{policy} refuses: {}",
            r.body
        );
    }
    assert_eq!(
        up.hits(),
        before + 1,
        "no refused request reached the upstream"
    );
}

// ---------------------------------------------------------------------------
// Malformed heads

#[tokio::test]
async fn duplicate_host_headers_are_400() {
    let (proxy, up) = web_proxy().await;
    // The client sends `Host: web.test`, then the second one.
    for second in ["other.test", "web.test"] {
        let r = get(
            proxy.addr("http"),
            false,
            "web.test",
            "/",
            &[("host", second)],
        )
        .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "duplicate_host"),
            "{}",
            r.body
        );
    }
    assert_eq!(up.hits(), 0);
    let counted = proxy
        .metric(LOCAL_RESPONSES, &["code=\"duplicate_host\""])
        .await
        .expect("metrics");
    assert_eq!(counted, 2.0);
}

#[tokio::test]
async fn http2_values_with_leading_or_trailing_whitespace_are_400() {
    let (proxy, up) = web_proxy().await;
    for value in [" padded", "padded ", "\tpadded", "padded\t"] {
        let r = get(
            proxy.addr("http"),
            true,
            "web.test",
            "/",
            &[("x-pad", value)],
        )
        .await;
        assert_eq!(r.status, 400, "{value:?}: {}", r.body);
        assert_eq!(r.code(), "header_whitespace", "{value:?}");
    }
    assert_eq!(up.hits(), 0);
    let r = get(
        proxy.addr("http"),
        true,
        "web.test",
        "/",
        &[("x-pad", "in side")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let counted = proxy
        .metric(LOCAL_RESPONSES, &["code=\"header_whitespace\""])
        .await
        .expect("metrics");
    assert_eq!(counted, 4.0);
}
