//! The gateway filters end to end (issue 13): the plaintext → HTTPS redirect, host and
//! path redirects, HSTS, request and response header rules, response security headers
//! and CORS preflights with configured methods, each through the real proxy binary.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tollgate_tests::auth::{Reply, get, send};
use tollgate_tests::client::{self, connect_plain};
use tollgate_tests::config::{Config, Files};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::session::TlsSession;
use tollgate_tests::tls::{TestCert, client_config};
use tollgate_tests::upstream::{Upstream, dead_addr};

const REDIRECTS: &str = "tollgate_http_redirects_total";
const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// An `[[apps]]` section with app-level `settings` lines and one upstream endpoint.
fn app(id: &str, hostnames: &[&str], upstream: SocketAddr, settings: &str) -> String {
    let hosts: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "[[apps]]\nid = \"{id}\"\nhostnames = [{}]\n{settings}\n[apps.upstreams.default]\nendpoints = [{{ address = \"{upstream}\" }}]",
        hosts.join(", ")
    )
}

/// A `[[routes]]` section of `hostname` to `app` with extra `settings` lines.
fn route(hostname: &str, app: &str, settings: &str) -> String {
    format!("[[routes]]\nhostname = \"{hostname}\"\napp = \"{app}\"\n{settings}")
}

/// A request with `method` and extra headers over a fresh plain HTTP/1.1 connection.
async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut s = connect_plain(addr, false).await.expect("connect");
    let mut req = client::request(&s, method, "http", host, path, client::empty());
    for (name, value) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    send(&mut s, req)
        .await
        .unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"))
}

async fn redirects(proxy: &ProxyProcess, kind: &str) -> f64 {
    proxy
        .metric(REDIRECTS, &[&format!("kind=\"{kind}\"")])
        .await
        .expect("metrics")
}

// ---------------------------------------------------------------------------
// HTTP → HTTPS

#[tokio::test]
async fn plaintext_requests_are_redirected_to_https_and_tls_requests_pass() {
    let up = Upstream::start("web").await;
    let cert = TestCert::new(&["web.test", "alt.test"]);
    let cfg = Config::new()
        .listener("http")
        .tls_listener("tls", "")
        .cert("web")
        .raw(&app("web", &["web.test"], up.addr, "https_redirect = true"))
        .raw(&route(
            "alt.test",
            "web",
            "https_redirect = { status = 301, https_port = 8443 }",
        ))
        .raw(&route("open.test", "web", "https_redirect = false"))
        .build();
    let files = Files::new().cert("web", &cert);
    let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");
    let plain = proxy.addr("http");

    // HTTP/1.1 and h2c alike: 308 to the same host, path and query, before the upstream.
    for h2 in [false, true] {
        let r = get(plain, h2, "web.test:80", "/a/b%20c?x=1&y=two", &[]).await;
        assert_eq!(r.status, 308, "h2={h2}: {}", r.body);
        assert_eq!(
            r.header("location"),
            Some("https://web.test/a/b%20c?x=1&y=two"),
            "h2={h2}"
        );
    }
    assert_eq!(up.hits(), 0, "nothing went upstream in clear text");
    assert_eq!(redirects(&proxy, "https").await, 2.0);

    // A route's own setting: 301 and a port; `false` turns the app's off.
    let r = get(plain, false, "alt.test", "/p?q", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://alt.test:8443/p?q"));
    let r = get(plain, false, "open.test", "/p", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Over TLS the request reaches the upstream, query and all.
    let mut s = TlsSession::open(
        proxy.addr("tls"),
        "web.test",
        client_config(&[&cert], H2_H1),
    )
    .await
    .expect("handshake");
    let (status, _, body) = s.get("/a/b?x=1").await.expect("request");
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).expect("echo");
    assert_eq!(
        (echo["path"].as_str(), echo["query"].as_str()),
        (Some("/a/b"), Some("x=1"))
    );
}

// ---------------------------------------------------------------------------
// Host and path redirects

#[tokio::test]
async fn www_redirects_to_the_apex_and_old_paths_to_new_ones() {
    let up = Upstream::start("site").await;
    let cfg = Config::new()
        .listener("http")
        .raw(&app("site", &["example.test"], up.addr, ""))
        .raw(&route(
            "www.example.test",
            "site",
            "redirect = { host = \"example.test\" }",
        ))
        .raw(&route(
            "example.test",
            "site",
            "path_prefix = \"/old\"\nredirect = { path_prefix = \"/new\", status = 301, keep_query = false }",
        ))
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");

    for h2 in [false, true] {
        let r = get(addr, h2, "www.example.test", "/docs/a%2Bb?q=1&r", &[]).await;
        assert_eq!(r.status, 308, "h2={h2}: {}", r.body);
        assert_eq!(
            r.header("location"),
            Some("http://example.test/docs/a%2Bb?q=1&r"),
            "h2={h2}: the path is copied, never escaped again"
        );
    }
    let r = get(addr, false, "www.example.test", "/", &[]).await;
    assert_eq!(r.header("location"), Some("http://example.test/"));

    // The route's prefix is replaced; the query is dropped as configured.
    let r = get(addr, false, "example.test", "/old/x/y?secret=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/new/x/y"));
    let r = get(addr, false, "example.test", "/old", &[]).await;
    assert_eq!(r.header("location"), Some("/new"));
    assert_eq!(up.hits(), 0);
    assert_eq!(redirects(&proxy, "route").await, 5.0);

    // The apex itself is served.
    let r = get(addr, false, "example.test", "/oldest", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

// ---------------------------------------------------------------------------
// HSTS

#[tokio::test]
async fn hsts_is_sent_over_tls_and_never_over_plaintext() {
    let up = Upstream::start("web").await;
    let cert = TestCert::new(&["web.test", "down.test"]);
    let hsts = "hsts = { max_age_seconds = 63072000, include_subdomains = true, preload = true }";
    let cfg = Config::new()
        .listener("http")
        .tls_listener("tls", "")
        .cert("web")
        .raw(&app("web", &["web.test"], up.addr, hsts))
        .raw(&app("down", &["down.test"], dead_addr(), hsts))
        .build();
    let files = Files::new().cert("web", &cert);
    let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");
    const POLICY: &str = "max-age=63072000; includeSubDomains; preload";

    for alpn in [H2_H1, &[b"http/1.1".as_slice()][..]] {
        let mut s = TlsSession::open(proxy.addr("tls"), "web.test", client_config(&[&cert], alpn))
            .await
            .expect("handshake");
        let (status, headers, body) = s.get("/").await.expect("request");
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["strict-transport-security"], POLICY);
        // The proxy's own answers carry it too (no upstream to reach).
        let mut s = TlsSession::open(
            proxy.addr("tls"),
            "down.test",
            client_config(&[&cert], alpn),
        )
        .await
        .expect("handshake");
        let (status, headers, body) = s.get("/").await.expect("request");
        assert!(status >= 500, "{body}");
        assert_eq!(headers["strict-transport-security"], POLICY);
    }
    let r = get(proxy.addr("http"), false, "web.test", "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("strict-transport-security").is_none(),
        "RFC 6797 §7.2: {:?}",
        r.headers
    );
}

// ---------------------------------------------------------------------------
// Header rules and security headers

#[tokio::test]
async fn request_header_rules_are_what_the_upstream_sees() {
    let up = Upstream::start("web").await;
    let rules = r#"headers = { request = { set = { "X-Env" = "prod" }, add = { "x-tag" = "edge" }, remove = ["x-debug", "cookie"] } }"#;
    let cfg = Config::new()
        .listener("http")
        .raw(&app("web", &["web.test"], up.addr, rules))
        .raw(&route(
            "own.test",
            "web",
            r#"headers = { request = { set = { "x-route" = "own" } } }"#,
        ))
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");
    let sent = [
        ("x-env", "dev"),
        ("x-debug", "1"),
        ("cookie", "a=b"),
        ("x-keep", "k"),
    ];

    for h2 in [false, true] {
        let r = get(addr, h2, "web.test", "/", &sent).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.seen_header("x-env").as_deref(),
            Some("prod"),
            "set replaces"
        );
        assert_eq!(r.seen_header("x-tag").as_deref(), Some("edge"), "add adds");
        assert_eq!(r.seen_header("x-keep").as_deref(), Some("k"));
        let seen = r.seen();
        assert!(
            seen.get("x-debug").is_none() && seen.get("cookie").is_none(),
            "{seen:?}"
        );
        // The proxy's own headers are still there.
        assert_eq!(
            r.seen_header("x-forwarded-for").as_deref(),
            Some("127.0.0.1")
        );
    }

    // A route's rules replace the app's whole.
    let r = get(addr, false, "own.test", "/", &sent).await;
    assert_eq!(r.seen_header("x-route").as_deref(), Some("own"));
    assert_eq!(r.seen_header("x-env").as_deref(), Some("dev"));
    assert_eq!(r.seen_header("x-debug").as_deref(), Some("1"));
}

/// An HTTP/1.1 upstream that sets its own security and server headers.
async fn opinionated_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Frame-Options: SAMEORIGIN\r\n\
                          Server: upstream/1.0\r\nX-Powered-By: php\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn response_rules_and_security_headers_keep_the_upstreams_own() {
    let up = opinionated_upstream().await;
    let settings = r#"security_headers = true
headers = { response = { set = { "cache-control" = "no-store" }, add = { "x-served-by" = "edge" }, remove = ["x-powered-by", "server"] } }"#;
    let cfg = Config::new()
        .listener("http")
        .raw(&app("web", &["web.test"], up, settings))
        .raw(&app("down", &["down.test"], dead_addr(), settings))
        .raw(&route(
            "strict.test",
            "web",
            "security_headers = { frame_options = \"DENY\", referrer_policy = \"off\", content_security_policy = \"default-src 'self'\" }",
        ))
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");

    let r = get(addr, false, "web.test", "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(
        r.header("x-frame-options"),
        Some("SAMEORIGIN"),
        "the upstream's own stands"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    assert!(r.header("content-security-policy").is_none());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-served-by"), Some("edge"));
    assert!(
        r.header("x-powered-by").is_none() && r.header("server").is_none(),
        "{:?}",
        r.headers
    );

    // The proxy's own answer (no upstream to reach) gets them too.
    let r = get(addr, false, "down.test", "/", &[]).await;
    assert!(r.status >= 500, "{}", r.body);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // A route's table replaces the app's settings; the upstream's frame options still stand.
    let r = get(addr, false, "strict.test", "/", &[]).await;
    assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'self'")
    );
    assert!(r.header("referrer-policy").is_none(), "{:?}", r.headers);
}

// ---------------------------------------------------------------------------
// CORS methods

#[tokio::test]
async fn cors_preflight_allows_configured_methods_and_refuses_others() {
    const ORIGIN: &str = "https://app.test";
    let up = Upstream::start("web").await;
    let cors = format!(
        "cors = {{ allowed_origins = [\"{ORIGIN}\"], allow_methods = [\"GET\", \"PUT\"] }}"
    );
    let cfg = Config::new()
        .listener("http")
        .raw(&app("web", &["web.test"], up.addr, &cors))
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");
    let preflight = |method: &'static str| {
        [
            ("origin", ORIGIN),
            ("access-control-request-method", method),
        ]
    };

    let r = request(addr, "OPTIONS", "web.test", "/items/1", &preflight("PUT")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    for refused in ["DELETE", "POST"] {
        let r = request(addr, "OPTIONS", "web.test", "/items/1", &preflight(refused)).await;
        assert_eq!(r.status, 403, "{refused}: {}", r.body);
        assert!(r.header("access-control-allow-methods").is_none());
    }
    assert_eq!(up.hits(), 0, "preflights are answered at the edge");

    // The actual PUT goes through with the grant.
    let r = request(addr, "PUT", "web.test", "/items/1", &[("origin", ORIGIN)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
}
