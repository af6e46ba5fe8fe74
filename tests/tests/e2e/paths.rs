//! Paths are normalised before they are matched and forwarded: every spelling an
//! upstream would read as `/admin` meets `/admin`'s route and its auth policy, a path
//! cannot climb out of the `/v1/<app>` prefix, and what cannot be normalised is a 400.
//!
//! Requests are written by hand on a raw socket so that the proxy, not a client
//! library, sees the path exactly as a hostile client sends it.

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_filters::apikey::{KeyKind, generate};
use tollgate_tests::config::Config;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::upstream::Upstream;

const WAIT: Duration = Duration::from_secs(30);

/// Status and body of one raw `GET target` with `headers`.
async fn raw_get(addr: SocketAddr, host: &str, target: &str, headers: &str) -> (u16, String) {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req =
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        out
    };
    let out = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("answer in time");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The path the upstream saw, from its echo (chunked bodies are read loosely).
fn upstream_path(body: &str) -> String {
    let start = body
        .find('{')
        .unwrap_or_else(|| panic!("not an echo: {body}"));
    let end = body.rfind('}').unwrap_or(body.len() - 1);
    let v: Value =
        serde_json::from_str(&body[start..=end]).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["path"].as_str().unwrap_or_default().to_string()
}

fn error_code(body: &str) -> String {
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').unwrap_or(0);
    serde_json::from_str::<Value>(body.get(start..=end).unwrap_or("{}"))
        .map(|v| v["error"]["code"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// `alpha.test`: everything open, except `/admin` which needs an API key; `api.test`
/// serves `/v1/alpha/...` and `/v1/beta/...`.
async fn proxy(paths: &str) -> (ProxyProcess, Upstream, Upstream, String) {
    let alpha = Upstream::start("alpha").await;
    let beta = Upstream::start("beta").await;
    let (key, sha256) = generate(KeyKind::Secret, false, "alpha").expect("key");
    let cfg = Config::new()
        .top("api_hosts = [\"api.test\"]")
        .listener("http")
        .raw(paths)
        .app("alpha", &["alpha.test"], alpha.addr)
        .app("beta", &[], beta.addr)
        .raw(
            "[[routes]]\nhostname = \"alpha.test\"\npath_prefix = \"/admin\"\napp = \"alpha\"\n\
             [routes.auth]\napi_keys = true",
        )
        .raw(&format!(
            "[[api_keys]]\nkey_id = \"k\"\napp = \"alpha\"\nkind = \"secret\"\nsha256 = \"{sha256}\""
        ));
    let p = ProxyProcess::start(&cfg.build(), &[]).expect("proxy starts");
    (p, alpha, beta, key)
}

#[tokio::test]
async fn dot_segments_and_doubled_slashes_cannot_skip_a_routes_auth() {
    let (p, _alpha, _beta, key) = proxy("").await;
    let addr = p.addr("http");
    for target in [
        "/admin",
        "/x/../admin",
        "/x/%2e%2e/admin",
        "/x/%2E%2e/admin/",
        "/./admin",
        "//admin",
        "/admin/./",
        "/%61dmin",
    ] {
        let (status, body) = raw_get(addr, "alpha.test", target, "").await;
        assert_eq!(status, 401, "{target} without a key: {body}");
        let auth = format!("Authorization: Bearer {key}\r\n");
        let (status, body) = raw_get(addr, "alpha.test", target, &auth).await;
        assert_eq!(status, 200, "{target} with a key: {body}");
        assert!(
            upstream_path(&body).starts_with("/admin"),
            "{target}: {body}"
        );
    }
    // The open part of the host is forwarded in normal form.
    let (status, body) = raw_get(addr, "alpha.test", "/a//b/./c/../d", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream_path(&body), "/a/b/d");
}

#[tokio::test]
async fn a_path_cannot_climb_out_of_its_app_prefix() {
    let (p, _alpha, _beta, _key) = proxy("").await;
    let addr = p.addr("http");
    // Inside the app: normalised, then rewritten.
    let (status, body) = raw_get(addr, "api.test", "/v1/beta/x/../y", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream_path(&body), "/y");
    // Out of `/v1/beta`: never forwarded to beta as `/../../admin`.
    let (status, body) = raw_get(addr, "api.test", "/v1/beta/../../admin", "").await;
    assert_eq!(status, 404, "{body}");
    // Matched as what it is: alpha's path, sent to alpha, never to beta.
    let (status, body) = raw_get(addr, "api.test", "/v1/beta/../alpha/admin", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"upstream\":\"alpha\""), "{body}");
    assert_eq!(upstream_path(&body), "/admin");
    // Above the root: refused.
    let (status, body) = raw_get(addr, "api.test", "/v1/beta/../../../admin", "").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "path_above_root");
    let refused = p
        .metric(
            "tollgate_http_local_responses_total",
            &[r#"code="path_above_root""#],
        )
        .await
        .unwrap();
    assert_eq!(refused, 1.0);
}

#[tokio::test]
async fn escapes_are_checked_and_encoded_slashes_follow_the_policy() {
    let (p, _alpha, _beta, _key) = proxy("").await;
    let addr = p.addr("http");
    for (target, code) in [
        ("/a%2Fadmin", "path_escaped_slash"),
        ("/a%5cadmin", "path_escaped_slash"),
        ("/a%zz", "path_bad_escape"),
        ("/a%00", "path_encoded_nul"),
        ("/x/..\\admin", "path_backslash"),
    ] {
        let (status, body) = raw_get(addr, "alpha.test", target, "").await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (400, code),
            "{target}: {body}"
        );
    }
    drop(p);

    let (p, _alpha, _beta, _key) =
        proxy("[paths]\nescaped_slashes = \"keep\"\nmerge_slashes = false").await;
    let addr = p.addr("http");
    let (status, body) = raw_get(addr, "alpha.test", "/files/a%2fb//c", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream_path(&body), "/files/a%2Fb//c");
    let (status, body) = raw_get(addr, "alpha.test", "/x/..%2fadmin", "").await;
    assert_eq!(
        status, 200,
        "one opaque segment, not a way to /admin: {body}"
    );
    assert_eq!(upstream_path(&body), "/x/..%2Fadmin");
    drop(p);

    let (p, _alpha, _beta, _key) = proxy("[paths]\nescaped_slashes = \"decode\"").await;
    let (status, body) = raw_get(p.addr("http"), "alpha.test", "/x/..%2fadmin", "").await;
    assert_eq!(status, 401, "decoded, it is /admin and needs a key: {body}");
}
