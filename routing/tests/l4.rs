//! L4 routes: port policy, one kind per port, SNI lookup and the no-SNI rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_routing::{RoutingSpec, Snapshot};

fn spec(routes: &str, policy: &str) -> RoutingSpec {
    let text = format!(
        r#"
{policy}
[[apps]]
id = "db"
[apps.upstreams.default]
endpoints = [{{ address = "10.0.0.1:5432" }}]
[apps.upstreams.replica]
endpoints = [{{ address = "10.0.0.2:5432" }}]
{routes}
"#
    );
    toml::from_str(&text).expect("fixture parses")
}

fn route(kind: &str, host: &str, port: u16, extra: &str) -> String {
    format!(
        "[[routes]]\nhostname = \"{host}\"\nlisten_port = {port}\napp = \"db\"\nprotocol_hint = \"{kind}\"\n{extra}\n"
    )
}

#[test]
fn passthrough_by_sni_with_wildcards() {
    let routes = [
        route(
            "tls_passthrough",
            "a.tenant.example",
            443,
            "proxy_protocol = true",
        ),
        route(
            "tls_passthrough",
            "*.tenant.example",
            443,
            "upstream = \"replica\"",
        ),
    ]
    .concat();
    let s = Snapshot::build(spec(&routes, ""), 1).unwrap();
    let a = s.l4.passthrough(443, Some("a.tenant.example")).unwrap();
    assert!(a.proxy_protocol);
    assert_eq!(a.upstream, "default");
    assert_eq!(
        s.l4.passthrough(443, Some("b.tenant.example"))
            .unwrap()
            .upstream,
        "replica"
    );
    assert!(s.l4.passthrough(443, Some("other.example")).is_none());
    assert!(
        s.l4.passthrough(443, None).is_none(),
        "two routes: no SNI means no route"
    );
    assert!(s.l4.passthrough(8443, Some("a.tenant.example")).is_none());
    assert!(
        s.table.lookup("a.tenant.example", 443, "/").is_err(),
        "L4 routes are not HTTP routes"
    );
}

#[test]
fn single_route_takes_connections_without_sni() {
    let s = Snapshot::build(
        spec(&route("tls_passthrough", "only.example", 443, ""), ""),
        1,
    )
    .unwrap();
    assert!(s.l4.passthrough(443, None).is_some());
}

#[test]
fn raw_tcp_by_port_with_policy() {
    let routes = route("tcp_raw", "pg.example", 5432, "backend_port = 6432");
    let err = Snapshot::build(spec(&routes, ""), 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("port 5432 is not in port_policy.allowed"),
        "{err}"
    );
    let ok = Snapshot::build(spec(&routes, "[port_policy]\nallowed = [5432]"), 1).unwrap();
    assert_eq!(ok.l4.raw(5432).unwrap().backend_port, Some(6432));
}

#[test]
fn risky_ports_need_explicit_permission() {
    let routes = route("tcp_raw", "smtp.example", 25, "");
    let err = Snapshot::build(spec(&routes, "[port_policy]\nallowed = [25]"), 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("port 25 is denied by default (risky)"),
        "{err}"
    );
    let policy = "[port_policy]\nallowed = [25]\nrisky_allowed = [25]";
    assert!(Snapshot::build(spec(&routes, policy), 1).is_ok());
}

#[test]
fn one_kind_per_port_and_l4_rules() {
    let mixed = [
        route("tcp_raw", "a.example", 443, ""),
        route("tls_passthrough", "b.example", 443, ""),
    ]
    .concat();
    let err = Snapshot::build(spec(&mixed, ""), 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("share this port"), "{err}");
    let two_raw = [
        route("tcp_raw", "a.example", 80, ""),
        route("tcp_raw", "b.example", 80, ""),
    ]
    .concat();
    assert!(
        Snapshot::build(spec(&two_raw, ""), 1)
            .unwrap_err()
            .to_string()
            .contains("at most one tcp_raw")
    );
    let no_port =
        "[[routes]]\nhostname = \"a.example\"\napp = \"db\"\nprotocol_hint = \"tcp_raw\"\n";
    assert!(
        Snapshot::build(spec(no_port, ""), 1)
            .unwrap_err()
            .to_string()
            .contains("need a listen_port")
    );
    let http_with_pp =
        "[[routes]]\nhostname = \"a.example\"\napp = \"db\"\nproxy_protocol = true\n";
    let err = Snapshot::build(spec(http_with_pp, ""), 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("apply to tls_passthrough and tcp_raw routes only"),
        "{err}"
    );
    let bad_upstream = route("tls_passthrough", "a.example", 443, "upstream = \"nope\"");
    assert!(
        Snapshot::build(spec(&bad_upstream, ""), 1)
            .unwrap_err()
            .to_string()
            .contains("has no upstream `nope`")
    );
}
