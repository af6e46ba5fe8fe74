//! Operating the proxy: the admin API, the metrics exposition (checked by promtool),
//! graceful drain on SIGTERM, and JSON access logs.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use tollgate_tests::client::{self, Sender};
use tollgate_tests::config::{Config, Files};
use tollgate_tests::proxy::{ProxyProcess, metric_value};
use tollgate_tests::session::TlsSession;
use tollgate_tests::tls::{TestCert, client_config};
use tollgate_tests::upstream::{Upstream, dead_addr};
use tollgate_tests::wait::{SOON, config_view, until};

const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// A proxy with a TLS and a plain listener, app `alpha` on `a.test` (detailed metrics)
/// and app `dead` on `dead.test` (bounded labels) whose only endpoint refuses connections.
async fn traffic_proxy(alpha: &Upstream, cert: &TestCert) -> ProxyProcess {
    let cfg = Config::new()
        .tls_listener("tls", "")
        .listener("http")
        .cert("a")
        .detailed_app("alpha", &["a.test"], alpha.addr)
        .app("dead", &["dead.test"], dead_addr())
        .build();
    ProxyProcess::start(&cfg, &Files::new().cert("a", cert).refs()).expect("proxy starts")
}

/// Sends one request of each kind the metrics should show; returns the open h2 session.
async fn send_traffic(proxy: &ProxyProcess, cert: &TestCert) -> TlsSession {
    let mut s = TlsSession::open(proxy.addr("tls"), "a.test", client_config(&[cert], H2_H1))
        .await
        .expect("handshake");
    assert!(s.negotiated.h2);
    assert_eq!(s.get("/h2").await.unwrap().0, 200);
    let plain = proxy.addr("http");
    assert_eq!(
        client::get_plain(plain, "a.test", "/h1").await.unwrap().0,
        200
    );
    assert_eq!(
        client::get_plain(plain, "dead.test", "/").await.unwrap().0,
        502
    );
    assert_eq!(
        client::get_plain(plain, "nobody.test", "/")
            .await
            .unwrap()
            .0,
        404
    );
    // Requests are counted when their body ends, which may trail the client by a moment.
    let counted = proxy
        .wait_metric("tollgate_http_requests_total", &[], SOON, |v| v >= 4.0)
        .await
        .unwrap();
    assert_eq!(counted, 4.0);
    s
}

#[tokio::test]
async fn admin_endpoints_and_metrics_after_traffic() {
    let alpha = Upstream::start("alpha").await;
    let cert = TestCert::new(&["a.test"]);
    let proxy = traffic_proxy(&alpha, &cert).await;

    assert_eq!(proxy.admin_get("/healthz").await.unwrap().0, 200);
    assert_eq!(proxy.admin_get("/readyz").await.unwrap().0, 200);
    assert_eq!(proxy.admin_get("/nope").await.unwrap().0, 404);
    let view = config_view(&proxy).await;
    assert_eq!(view["version"], 1, "{view}");
    let apps: Vec<&str> = view["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(apps, ["alpha", "dead"]);
    assert_eq!(view["certificates"][0]["names"][0], "a.test", "{view}");
    assert!(
        !view.to_string().contains("PRIVATE KEY"),
        "no key material in /config"
    );
    let endpoints = view["upstreams"].as_array().unwrap();
    assert!(
        endpoints
            .iter()
            .any(|u| u["app"] == "alpha" && u["endpoints"][0]["address"] == alpha.addr.to_string()),
        "{view}"
    );

    let _open = send_traffic(&proxy, &cert).await;
    let text = proxy.metrics().await.unwrap();
    let m = |name: &str, labels: &[&str]| metric_value(&text, name, labels);

    // Every family that exists once there has been traffic, with its type.
    for (name, kind) in [
        ("tollgate_http_requests_total", "counter"),
        ("tollgate_http_request_duration_seconds", "histogram"),
        ("tollgate_upstream_errors_total", "counter"),
        ("tollgate_upstream_retries_total", "counter"),
        ("tollgate_upstream_ejections_total", "counter"),
        ("tollgate_upstream_endpoint_healthy", "gauge"),
        ("tollgate_downstream_connections_active", "gauge"),
        ("tollgate_downstream_connections_total", "counter"),
        ("tollgate_http_streams_active", "gauge"),
        ("tollgate_tls_handshakes_total", "counter"),
        ("tollgate_config_version", "gauge"),
        ("tollgate_certificates_loaded", "gauge"),
        ("tollgate_http_upgrades_active", "gauge"),
        ("tollgate_config_apply_duration_seconds", "histogram"),
        ("tollgate_http_local_responses_total", "counter"),
        ("tollgate_metrics_detailed_apps", "gauge"),
        ("tollgate_metrics_detailed_apps_overflow", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} ({kind}) missing:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help:\n{text}"
        );
    }

    let route = r#"route="host:a.test""#;
    let alpha_l = r#"app="alpha""#;
    let ok = r#"status_class="2xx""#;
    let requests = "tollgate_http_requests_total";
    assert_eq!(
        m(requests, &[route, alpha_l, ok, r#"protocol="http2""#]),
        1.0,
        "{text}"
    );
    assert_eq!(
        m(requests, &[route, alpha_l, ok, r#"protocol="http1""#]),
        1.0,
        "{text}"
    );
    // `dead` has no detailed metrics: its series are those of every such host route.
    let other = [
        r#"app="_other""#,
        r#"route="_other""#,
        r#"route_kind="host""#,
    ];
    assert_eq!(
        m(requests, &[&other[..], &[r#"status_class="5xx""#]].concat()),
        1.0,
        "{text}"
    );
    assert!(!text.contains(r#"app="dead""#), "{text}");
    assert_eq!(
        m(
            requests,
            &[
                r#"route_kind="none""#,
                r#"route="-""#,
                r#"status_class="4xx""#
            ]
        ),
        1.0,
        "{text}"
    );
    let duration = "tollgate_http_request_duration_seconds";
    let h2 = r#"protocol="http2""#;
    assert_eq!(
        m(&format!("{duration}_count"), &[route, alpha_l, h2]),
        1.0,
        "{text}"
    );
    assert_eq!(
        m(
            &format!("{duration}_bucket"),
            &[route, alpha_l, h2, r#"le="+Inf""#]
        ),
        1.0
    );
    assert!(m(&format!("{duration}_sum"), &[route, alpha_l, h2]) > 0.0);
    assert!(
        m(
            "tollgate_upstream_errors_total",
            &[r#"app="_other""#, r#"kind="upstream_connect_failed""#]
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(m("tollgate_upstream_errors_total", &[alpha_l]), 0.0);
    assert_eq!(
        m("tollgate_http_local_responses_total", &[]),
        2.0,
        "502 and 404 are local"
    );
    assert_eq!(
        m(
            "tollgate_downstream_connections_total",
            &[r#"listener="tls""#]
        ),
        1.0
    );
    assert_eq!(
        m(
            "tollgate_downstream_connections_total",
            &[r#"listener="http""#]
        ),
        3.0
    );
    // The h2 session is still open.
    assert_eq!(
        m(
            "tollgate_downstream_connections_active",
            &[r#"listener="tls""#]
        ),
        1.0
    );
    assert_eq!(
        m(
            "tollgate_tls_handshakes_total",
            &[r#"listener="tls""#, r#"result="ok""#]
        ),
        1.0
    );
    let healthy = format!(r#"endpoint="{}""#, alpha.addr);
    assert_eq!(
        m("tollgate_upstream_endpoint_healthy", &[alpha_l, &healthy]),
        1.0,
        "{text}"
    );
    assert_eq!(m("tollgate_metrics_detailed_apps", &[]), 1.0);
    assert_eq!(m("tollgate_config_version", &[]), 1.0);
    assert_eq!(m("tollgate_certificates_loaded", &[]), 1.0);
    assert_eq!(
        m("tollgate_http_streams_active", &[]),
        0.0,
        "nothing in flight: {text}"
    );
}

/// `$PROMTOOL`, else `promtool` on `PATH`, else `target/tools/promtool` from
/// `scripts/fetch-promtool.sh`.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return p.into();
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("promtool");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let fetched = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/promtool");
    assert!(
        fetched.is_file(),
        "promtool not found (PROMTOOL, PATH, {}): run scripts/fetch-promtool.sh",
        fetched.display()
    );
    fetched
}

#[tokio::test]
async fn promtool_accepts_the_metrics_exposition() {
    let promtool = promtool();
    let alpha = Upstream::start("alpha").await;
    let cert = TestCert::new(&["a.test"]);
    let proxy = traffic_proxy(&alpha, &cert).await;
    let _open = send_traffic(&proxy, &cert).await;
    // A reload adds the reload counter and an apply-duration observation.
    proxy.signal("HUP").unwrap();
    proxy
        .wait_metric("tollgate_config_reloads_total", &[], SOON, |v| v >= 1.0)
        .await
        .unwrap();
    let text = proxy.metrics().await.unwrap();
    assert!(text.contains("tollgate_config_reloads_total{"), "{text}");

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (run scripts/fetch-promtool.sh)",
                promtool.display()
            )
        });
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(text.as_bytes())
            .expect("write metrics to promtool");
    }
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One admin GET over a fresh connection, with `authorization` when given.
async fn admin_get_as(
    proxy: &ProxyProcess,
    path: &str,
    authorization: Option<&str>,
) -> (u16, http::HeaderMap, String) {
    let mut s = client::connect_plain(proxy.admin, false).await.unwrap();
    let mut req = client::get(&s, "http", "admin", path);
    if let Some(a) = authorization {
        req.headers_mut()
            .insert("authorization", a.parse().unwrap());
    }
    client::text(s.send(req).await.unwrap()).await.unwrap()
}

#[tokio::test]
async fn admin_token_guards_metrics_and_config_not_the_probes() {
    const TOKEN: &str = "e2e-admin-token-0123456789";
    const ROTATED: &str = "rotated-admin-token-9876543210";
    let cfg = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n";
    let proxy =
        ProxyProcess::start(cfg, &[("admin.token", &format!("{TOKEN}\n"))]).expect("proxy starts");
    let bearer = |t: &str| format!("Bearer {t}");

    for path in ["/metrics", "/config", "/control"] {
        let (status, headers, _) = admin_get_as(&proxy, path, None).await;
        assert_eq!(status, 401, "{path} without a token");
        assert_eq!(
            headers["www-authenticate"], "Bearer realm=\"tollgate-admin\"",
            "{path}"
        );
        let wrong = bearer("not-the-admin-token-at-all");
        assert_eq!(
            admin_get_as(&proxy, path, Some(&wrong)).await.0,
            401,
            "{path} wrong token"
        );
        let basic = format!("Basic {TOKEN}");
        assert_eq!(
            admin_get_as(&proxy, path, Some(&basic)).await.0,
            401,
            "{path} Basic"
        );
    }
    let (status, _, body) = admin_get_as(&proxy, "/metrics", Some(&bearer(TOKEN))).await;
    assert_eq!(status, 200);
    assert!(body.contains("tollgate_config_version"), "{body}");
    let (status, _, body) = admin_get_as(&proxy, "/config", Some(&bearer(TOKEN))).await;
    assert_eq!(status, 200);
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["version"], 1, "{view}");
    // No [control]: nothing to report, said so.
    let (status, _, body) = admin_get_as(&proxy, "/control", Some(&bearer(TOKEN))).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("control service"), "{body}");
    // Probes send no credentials and stay open.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(admin_get_as(&proxy, path, None).await.0, 200, "{path}");
    }

    // A rotated file applies to the next request, without a restart or SIGHUP.
    proxy.write_file("admin.token", ROTATED).unwrap();
    assert_eq!(
        admin_get_as(&proxy, "/metrics", Some(&bearer(TOKEN)))
            .await
            .0,
        401,
        "the old token no longer works"
    );
    assert_eq!(
        admin_get_as(&proxy, "/metrics", Some(&bearer(ROTATED)))
            .await
            .0,
        200
    );
    // An unusable file closes the protected paths (503), never opens them.
    proxy.write_file("admin.token", "short").unwrap();
    assert_eq!(
        admin_get_as(&proxy, "/metrics", Some(&bearer("short")))
            .await
            .0,
        503
    );
    assert_eq!(admin_get_as(&proxy, "/metrics", None).await.0, 401);
    assert_eq!(admin_get_as(&proxy, "/readyz", None).await.0, 200);

    // At start, a token file that holds no usable token is refused, saying why.
    let (status, stderr) =
        ProxyProcess::start_expect_failure(cfg, &[("admin.token", "short\n")]).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("[admin] token_file ")
            && stderr.contains("the token must be at least 16 characters"),
        "{stderr}"
    );
}

/// Reads the next data frame of a response body.
async fn next_chunk(body: &mut Incoming) -> Bytes {
    loop {
        let frame = tokio::time::timeout(SOON, body.frame())
            .await
            .expect("a chunk within the deadline")
            .expect("body not ended")
            .expect("body frame");
        if let Ok(data) = frame.into_data() {
            return data;
        }
    }
}

/// Starts GET /stream on `sender` and returns the body after its first chunk.
async fn open_stream(sender: &mut Sender, scheme: &str) -> Incoming {
    let req = client::get(sender, scheme, "a.test", "/stream");
    let resp = sender.send(req).await.expect("stream response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    assert_eq!(next_chunk(&mut body).await, "first\n");
    body
}

#[tokio::test]
async fn sigterm_drains_in_flight_streams_then_exits_zero() {
    let alpha = Upstream::start("alpha").await;
    let cert = TestCert::new(&["a.test"]);
    let cfg = Config::new()
        .tls_listener("tls", "")
        .listener("http")
        .cert("a")
        .app("alpha", &["a.test"], alpha.addr)
        .raw("[limits]\ndrain_timeout_ms = 120000")
        .build();
    let mut proxy =
        ProxyProcess::start(&cfg, &Files::new().cert("a", &cert).refs()).expect("proxy starts");

    let mut h2 = TlsSession::open(proxy.addr("tls"), "a.test", client_config(&[&cert], H2_H1))
        .await
        .expect("handshake");
    assert!(h2.negotiated.h2);
    let mut h1 = client::connect_plain(proxy.addr("http"), false)
        .await
        .unwrap();
    let h2_body = open_stream(&mut h2.sender, "https").await;
    let h1_body = open_stream(&mut h1, "http").await;
    assert_eq!(
        proxy
            .metric("tollgate_http_streams_active", &[])
            .await
            .unwrap(),
        2.0
    );

    proxy.signal("TERM").unwrap();

    // Readiness flips so load balancers stop sending, and both listeners close.
    until("/readyz to report draining", SOON, || async {
        let (status, body) = proxy.admin_get("/readyz").await.ok()?;
        (status == 503).then(|| assert_eq!(body, "draining\n"))
    })
    .await;
    for listener in ["http", "tls"] {
        let addr = proxy.addr(listener);
        until(
            &format!("listener {listener} to refuse connections"),
            SOON,
            || async { tokio::net::TcpStream::connect(addr).await.err() },
        )
        .await;
    }
    // The process is still up, waiting for the two streams.
    assert_eq!(proxy.admin_get("/readyz").await.unwrap().0, 503);
    assert_eq!(
        proxy
            .metric("tollgate_http_streams_active", &[])
            .await
            .unwrap(),
        2.0
    );

    let rest = |mut body: Incoming| async move {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("stream completes cleanly").into_data() {
                out.extend_from_slice(&data);
            }
        }
        String::from_utf8(out).expect("utf-8")
    };
    let h2_rest = tokio::spawn(rest(h2_body));
    let h1_rest = tokio::spawn(rest(h1_body));
    // Each release lets one waiting stream finish; repeat until both have.
    until("both streams to finish", SOON, || async {
        alpha.release();
        (h2_rest.is_finished() && h1_rest.is_finished()).then_some(())
    })
    .await;
    assert_eq!(h2_rest.await.unwrap(), "second\n");
    assert_eq!(h1_rest.await.unwrap(), "second\n");

    // Well before the 120 s drain deadline, so it is the drain finishing that ends it.
    let status = proxy
        .wait_exit(Duration::from_secs(60))
        .expect("exits once drained");
    assert_eq!(status.code(), Some(0), "{status}");
    let logs = proxy.logs();
    assert!(logs.contains("all connections drained"), "{logs}");
    assert!(!logs.contains("drain deadline reached"), "{logs}");
}

#[tokio::test]
async fn json_access_log_has_one_line_per_request() {
    let alpha = Upstream::start("alpha").await;
    let cfg = Config::new()
        .listener("http")
        .app("alpha", &["a.test"], alpha.addr)
        .raw("[log]\nformat = \"json\"")
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");

    let mut s = client::connect_plain(addr, false).await.unwrap();
    let mut req = client::get(&s, "http", "a.test", "/logged?q=1");
    req.headers_mut()
        .insert("x-request-id", "req-e2e-1".parse().unwrap());
    let (status, headers, _) = client::text(s.send(req).await.unwrap()).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "req-e2e-1");
    let (status, headers, _) = client::get_plain(addr, "nobody.test", "/missing")
        .await
        .unwrap();
    assert_eq!(status, 404);
    let generated = headers["x-request-id"].to_str().unwrap().to_string();

    let access = until("two access-log lines", SOON, || async {
        let lines: Vec<serde_json::Value> = proxy
            .logs()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .filter(|v: &serde_json::Value| v["target"] == "access")
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    assert_eq!(access.len(), 2, "{access:?}");

    let hit = access
        .iter()
        .find(|v| v["request_id"] == "req-e2e-1")
        .expect("line for the routed request");
    assert_eq!(hit["status"], 200, "{hit}");
    assert_eq!(hit["route"], "host:a.test", "{hit}");
    assert_eq!(hit["app"], "alpha", "{hit}");
    assert_eq!(hit["upstream"], alpha.addr.to_string(), "{hit}");
    assert_eq!(hit["method"], "GET", "{hit}");
    assert_eq!(hit["path"], "/logged", "{hit}");
    assert_eq!(hit["host"], "a.test", "{hit}");
    assert_eq!(hit["outcome"], "complete", "{hit}");

    let miss = access
        .iter()
        .find(|v| v["request_id"] == generated.as_str())
        .expect("line for the 404");
    assert_eq!(miss["status"], 404, "{miss}");
    assert_eq!(miss["route"], "-", "{miss}");
    assert_eq!(miss["app"], "-", "{miss}");
    assert_eq!(miss["upstream"], "-", "{miss}");
}
