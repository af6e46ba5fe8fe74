//! The harness itself: a proxy starts from a file, routes to an upstream, stops.

use tollgate_tests::client;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::upstream::Upstream;

#[tokio::test]
async fn proxy_routes_api_host_to_upstream() {
    let up = Upstream::start("acme").await;
    let cfg = format!(
        r#"
api_hosts = ["api.test"]
[admin]
listen = "127.0.0.1:0"
[[listeners]]
name = "http"
listen = "127.0.0.1:0"
[[apps]]
id = "acme"
[apps.upstreams.default]
endpoints = [{{ address = "{}" }}]
"#,
        up.addr
    );
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let (status, headers, body) =
        client::get_plain(proxy.addr("http"), "api.test", "/v1/acme/x?y=1")
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-tollgate-app-id"], "acme");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "/x");
    assert_eq!(v["query"], "y=1");
    assert_eq!(up.hits(), 1);
}
