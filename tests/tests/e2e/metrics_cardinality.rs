//! Metrics that survive 10,000 tenants: request series carry bounded labels, so
//! `/metrics` does not grow with the number of apps; apps marked
//! `metrics = "detailed"` get series of their own, up to the proxy's cap.

use std::net::SocketAddr;
use tollgate_tests::client;
use tollgate_tests::config::Config;
use tollgate_tests::proxy::{ProxyProcess, metric_value};
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::SOON;

const REQUESTS: &str = "tollgate_http_requests_total";
const DURATION: &str = "tollgate_http_request_duration_seconds";

/// `apps` apps `app0`.. on `app<i>.test`; those in `detailed` are marked for detailed
/// metrics; `app3` has a route `/orders` marked on its own; `extra` is appended.
fn fleet(apps: usize, detailed: &[usize], upstream: SocketAddr, extra: &str) -> ProxyProcess {
    let mut cfg = Config::new().listener("http").raw(extra);
    for i in 0..apps {
        let id = format!("app{i}");
        cfg = if detailed.contains(&i) {
            cfg.detailed_app(&id, &[&format!("{id}.test")], upstream)
        } else {
            cfg.app(&id, &[&format!("{id}.test")], upstream)
        };
    }
    let cfg = cfg.raw(
        "[[routes]]\nid = \"app3-orders\"\nhostname = \"app3.test\"\npath_prefix = \"/orders\"\n\
         app = \"app3\"\nmetrics = \"detailed\"",
    );
    ProxyProcess::start(&cfg.build(), &[]).expect("proxy starts")
}

/// One request to each app (and one to `app3`'s detailed route); returns `/metrics`.
async fn one_request_each(proxy: &ProxyProcess, apps: usize) -> String {
    let addr = proxy.addr("http");
    for i in 0..apps {
        let (status, _, body) = client::get_plain(addr, &format!("app{i}.test"), "/")
            .await
            .expect("response");
        assert_eq!(status, 200, "app{i}: {body}");
    }
    let (status, _, _) = client::get_plain(addr, "app3.test", "/orders/1")
        .await
        .expect("response");
    assert_eq!(status, 200);
    // Requests are counted when their body ends, which may trail the client a little.
    let total = (apps + 1) as f64;
    let counted = proxy
        .wait_metric(REQUESTS, &[], SOON, |v| v >= total)
        .await
        .expect("metrics");
    assert_eq!(counted, total);
    proxy.metrics().await.expect("metrics")
}

/// Lines of the request counter and duration histogram.
fn request_series(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with(REQUESTS) || l.starts_with(DURATION))
        .count()
}

#[tokio::test]
async fn request_series_do_not_grow_with_the_number_of_apps() {
    let up = Upstream::start("up").await;
    let detailed = [7];
    let small = fleet(30, &detailed, up.addr, "");
    let large = fleet(300, &detailed, up.addr, "");
    let small_text = one_request_each(&small, 30).await;
    let text = one_request_each(&large, 300).await;

    assert_eq!(
        request_series(&small_text),
        request_series(&text),
        "30 apps:\n{small_text}\n300 apps:\n{text}"
    );
    // No id of an app without detailed metrics appears anywhere in the exposition.
    for i in (0..300).filter(|i| *i != 7 && *i != 3) {
        assert!(
            !text.contains(&format!("app{i}")),
            "app{i} in /metrics:\n{text}"
        );
    }
    let m = |labels: &[&str]| metric_value(&text, REQUESTS, labels);
    // Every other app's request is in the one bounded series of host routes.
    assert_eq!(
        m(&[
            r#"route_kind="host""#,
            r#"app="_other""#,
            r#"route="_other""#
        ]),
        298.0,
        "{text}"
    );
    // The detailed app has its own series, with its route id.
    assert_eq!(
        m(&[r#"app="app7""#, r#"route="host:app7.test""#]),
        1.0,
        "{text}"
    );
    // A route marked on its own: its app's id and its route id; the app's other
    // routes carry its id only.
    assert_eq!(
        m(&[
            r#"route_kind="route""#,
            r#"app="app3""#,
            r#"route="app3-orders""#
        ]),
        1.0,
        "{text}"
    );
    assert_eq!(
        m(&[r#"route_kind="host""#, r#"app="app3""#, r#"route="_other""#]),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "tollgate_metrics_detailed_apps", &[]),
        2.0
    );
    // Endpoint health is exported for detailed apps only.
    let healthy: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tollgate_upstream_endpoint_healthy{"))
        .collect();
    assert_eq!(healthy.len(), 2, "{healthy:#?}");
}

#[tokio::test]
async fn detailed_apps_beyond_the_cap_fall_back_to_bounded_labels() {
    let up = Upstream::start("up").await;
    // app0 and app1 ask at app level, app3 through its route: the cap admits two.
    let proxy = fleet(
        5,
        &[0, 1],
        up.addr,
        "[limits]\nmax_detailed_metrics_apps = 2",
    );
    let text = one_request_each(&proxy, 5).await;
    let m = |name: &str, labels: &[&str]| metric_value(&text, name, labels);
    assert_eq!(m("tollgate_metrics_detailed_apps", &[]), 2.0, "{text}");
    assert_eq!(
        m("tollgate_metrics_detailed_apps_overflow", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(m(REQUESTS, &[r#"app="app0""#]), 1.0, "{text}");
    assert_eq!(m(REQUESTS, &[r#"app="app1""#]), 1.0, "{text}");
    assert!(!text.contains("app3"), "app3 is over the cap:\n{text}");
    // app2, app3 (both its routes) and app4 share the bounded series.
    assert_eq!(m(REQUESTS, &[r#"app="_other""#]), 4.0, "{text}");
    let warnings = proxy
        .logs()
        .matches("beyond limits.max_detailed_metrics_apps")
        .count();
    assert_eq!(warnings, 1, "one warning:\n{}", proxy.logs());
}
