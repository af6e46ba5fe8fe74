//! Route matching and validation against a spec written as the config file would be.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_routing::matcher::Miss;
use tollgate_routing::validate::cross_tenant_routes;
use tollgate_routing::{AppStatus, RoutingSpec, Snapshot};

const SPEC: &str = r#"
api_hosts = ["api.example.com"]

[[apps]]
id = "acme"
hostnames = ["acme.tenant.example"]
api_rewrite = "/"
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:9000" }]
[apps.upstreams.canary]
endpoints = [{ address = "127.0.0.1:9001" }]
[[apps.splits]]
header = "x-experiment"
value = "canary"
backends = [{ upstream = "canary", weight = 10 }, { upstream = "default", weight = 90 }]

[[apps]]
id = "globex"
status = "suspended"
api_rewrite = "/service"
max_body_bytes = 1024
[apps.upstreams.default]
endpoints = [{ address = "localhost:9002" }]

[[routes]]
hostname = "*.wild.example"
app = "globex"

[[routes]]
hostname = "acme.tenant.example"
path_prefix = "/static"
rewrite_prefix = "/assets/"
app = "acme"
max_body_bytes = 10

[[routes]]
hostname = "acme.tenant.example"
listen_port = 8443
path_prefix = "/static"
app = "acme"
"#;

fn snapshot() -> Snapshot {
    let spec: RoutingSpec = toml::from_str(SPEC).expect("fixture parses");
    Snapshot::build(spec, 1).expect("fixture is valid")
}

#[test]
fn api_host_routes_by_app_id_and_rewrites() {
    let s = snapshot();
    let m = s
        .table
        .lookup("api.example.com", 443, "/v1/acme/orders/1")
        .unwrap();
    assert_eq!(m.app.id, "acme");
    assert_eq!(m.rewrite("/v1/acme/orders/1").as_deref(), Some("/orders/1"));
    assert_eq!(m.rewrite("/v1/acme").as_deref(), Some("/"));
    let g = s
        .table
        .lookup("api.example.com", 443, "/v1/globex/x")
        .unwrap();
    assert_eq!(g.app.status, AppStatus::Suspended);
    assert_eq!(g.rewrite("/v1/globex/x").as_deref(), Some("/service/x"));
    assert_eq!(g.max_body_bytes, Some(1024));
    assert_eq!(
        s.table
            .lookup("api.example.com", 443, "/v1/nope/x")
            .unwrap_err(),
        Miss::UnknownApp("nope")
    );
    assert_eq!(
        s.table
            .lookup("api.example.com", 443, "/v2/acme")
            .unwrap_err(),
        Miss::NoRoute
    );
    assert_eq!(
        s.table.lookup("api.example.com", 443, "/v1/").unwrap_err(),
        Miss::NoRoute
    );
}

#[test]
fn tenant_host_longest_prefix_and_port() {
    let s = snapshot();
    let m = s
        .table
        .lookup("acme.tenant.example", 443, "/static/a.css")
        .unwrap();
    assert_eq!(m.app.id, "acme");
    assert_eq!(m.rewrite("/static/a.css").as_deref(), Some("/assets/a.css"));
    assert_eq!(m.max_body_bytes, Some(10));
    let p = s
        .table
        .lookup("acme.tenant.example", 8443, "/static/a.css")
        .unwrap();
    assert_eq!(
        (p.rewrite("/static/a.css"), p.max_body_bytes),
        (None, None),
        "port-bound route wins on its port"
    );
    let root = s
        .table
        .lookup("acme.tenant.example", 443, "/staticky")
        .unwrap();
    assert_eq!(root.app.id, "acme", "prefixes match whole segments");
    assert_eq!(root.rewrite("/staticky"), None);
}

#[test]
fn wildcard_matches_one_label() {
    let s = snapshot();
    assert_eq!(
        s.table.lookup("a.wild.example", 80, "/").unwrap().app.id,
        "globex"
    );
    assert!(s.table.lookup("a.b.wild.example", 80, "/").is_err());
    assert!(s.table.lookup("wild.example", 80, "/").is_err());
}

#[test]
fn invalid_specs_list_every_problem() {
    let mut spec: RoutingSpec = toml::from_str(SPEC).unwrap();
    std::sync::Arc::make_mut(&mut spec.routes[0]).app = "missing".into();
    std::sync::Arc::make_mut(&mut spec.apps[0].upstreams)
        .get_mut("default")
        .unwrap()
        .endpoints[0]
        .address = "nohostport".into();
    spec.apps[1].hostnames.push("acme.tenant.example".into());
    spec.apps[0].splits[0].backends[0].upstream = "ghost".into();
    let err = Snapshot::build(spec, 2).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.0.len(), 4, "{text}");
    assert!(text.contains("no app `missing`"), "{text}");
    assert!(text.contains("expected host:port"), "{text}");
    assert!(text.contains("already bound to app `acme`"), "{text}");
    assert!(text.contains("no upstream named `ghost`"), "{text}");
}

#[test]
fn a_route_cannot_send_a_hostname_of_one_app_to_another() {
    let with_route = |hostname: &str, app: &str| {
        let mut spec: RoutingSpec = toml::from_str(SPEC).unwrap();
        spec.apps[1].hostnames.push("*.globex.example".into());
        let mut route = (*spec.routes[1]).clone();
        route.id = Some("r1".into());
        route.hostname = hostname.into();
        route.path_prefix = "/admin".into();
        route.app = app.into();
        spec.routes.push(route.into());
        spec
    };
    let refused = [
        ("acme.tenant.example", "globex", "acme"),
        ("a.globex.example", "acme", "globex"),
        ("*.globex.example", "acme", "globex"),
    ];
    for (host, app, owner) in refused {
        let spec = with_route(host, app);
        let last = spec.routes.len() - 1;
        assert_eq!(cross_tenant_routes(&spec), vec![(last, owner)], "{host}");
        let err = Snapshot::build(spec, 2).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].at, "routes[r1].app");
        assert!(
            err.0[0]
                .reason
                .contains(&format!("belongs to app `{owner}`")),
            "{err}"
        );
    }
    // The owner's own routes, and names no app binds, stay free.
    for (host, app) in [
        ("acme.tenant.example", "acme"),
        ("a.globex.example", "globex"),
        ("a.b.globex.example", "acme"),
        ("elsewhere.example", "acme"),
    ] {
        let spec = with_route(host, app);
        assert!(cross_tenant_routes(&spec).is_empty(), "{host}");
        Snapshot::build(spec, 2).unwrap_or_else(|e| panic!("{host}: {e}"));
    }
}

#[test]
fn unknown_fields_are_refused() {
    let bad = SPEC.replace("api_rewrite = \"/\"", "api_rewrit = \"/\"");
    assert!(toml::from_str::<RoutingSpec>(&bad).is_err());
}

#[test]
fn every_route_has_one_dense_index_and_lookups_return_it() {
    let s = snapshot();
    let count = s.table.route_count();
    // Two API routes (one per app), one hostname route, three configured routes.
    assert_eq!(count, 6);
    let mut seen = vec![None; count];
    for m in s.table.routes() {
        assert!(m.index < count, "index {} out of range", m.index);
        assert!(seen[m.index].is_none(), "index {} given twice", m.index);
        seen[m.index] = Some((m.route_id.to_string(), m.app.id.clone()));
    }
    let probes = [
        ("api.example.com", 443, "/v1/acme/x"),
        ("api.example.com", 443, "/v1/globex/x"),
        ("acme.tenant.example", 443, "/"),
        ("acme.tenant.example", 443, "/static/a"),
        ("acme.tenant.example", 8443, "/static/a"),
        ("x.wild.example", 443, "/"),
    ];
    let mut hit = Vec::new();
    for (host, port, path) in probes {
        let m = s.table.lookup(host, port, path).unwrap();
        let (route, app) = seen[m.index]
            .clone()
            .expect("lookup index is a known route");
        assert_eq!(
            (route.as_str(), app.as_str()),
            (&**m.route_id, m.app.id.as_str())
        );
        hit.push(m.index);
    }
    hit.sort_unstable();
    hit.dedup();
    assert_eq!(hit.len(), count, "each probe reaches a different route");
    // A configured route carries its source; hostname and API routes do not.
    let m = s
        .table
        .lookup("acme.tenant.example", 443, "/static/a")
        .unwrap();
    assert_eq!(m.source.map(|r| r.path_prefix.as_str()), Some("/static"));
    assert!(
        s.table
            .lookup("acme.tenant.example", 443, "/")
            .unwrap()
            .source
            .is_none()
    );
    assert!(
        s.table
            .lookup("api.example.com", 443, "/v1/acme/")
            .unwrap()
            .source
            .is_none()
    );
}
