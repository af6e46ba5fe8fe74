//! Validation of a [`RoutingSpec`]: every problem found, each with where it is.
//!
//! The proxy refuses a config file and the control service refuses a command whose
//! result would not validate, so a bad route never reaches a running snapshot.

use crate::host::{check_pattern, wildcard_parent};
use crate::model::{
    AppSpec, BalancePolicy, ClusterSpec, HealthCheckKind, HealthCheckSpec, PortPolicy,
    ProtocolHint, RouteSpec, RoutingSpec, SplitSpec, UpstreamProtocol, default_health_path,
};
use crate::resume::ResumeSpec;
use crate::rpc::{CorsSpec, RpcSpec};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// One problem in a spec, located by a dotted path such as `apps[acme].upstreams.default`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct Problem {
    pub at: String,
    pub reason: String,
}

/// All problems found in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError(pub Vec<Problem>);

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s): ", self.0.len())?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

pub(crate) struct Report(Vec<Problem>);

impl Report {
    pub(crate) fn add(&mut self, at: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            at: at.into(),
            reason: reason.into(),
        });
    }
}

/// Checks a whole spec; `Ok` means [`crate::Snapshot::build`] will succeed.
pub fn validate(spec: &RoutingSpec) -> Result<(), ValidationError> {
    let mut r = Report(Vec::new());
    let api_hosts: HashSet<&str> = spec.api_hosts.iter().map(String::as_str).collect();
    for (i, h) in spec.api_hosts.iter().enumerate() {
        if h.starts_with("*.") {
            r.add(format!("api_hosts[{i}]"), "API hosts must be exact names");
        } else if let Err(e) = check_pattern(h) {
            r.add(format!("api_hosts[{i}]"), e);
        }
    }
    let mut apps: HashMap<&str, &AppSpec> = HashMap::new();
    let mut hostnames: HashMap<&str, &str> = HashMap::new();
    for app in &spec.apps {
        let at = format!("apps[{}]", app.id);
        if apps.insert(&app.id, app).is_some() {
            r.add(&at, "duplicate app id");
        }
        check_app(&mut r, &at, app);
        for h in &app.hostnames {
            if let Err(e) = check_pattern(h) {
                r.add(format!("{at}.hostnames"), format!("`{h}`: {e}"));
            }
            if api_hosts.contains(h.as_str()) {
                r.add(format!("{at}.hostnames"), format!("`{h}` is an API host"));
            }
            if let Some(other) = hostnames.insert(h, &app.id) {
                r.add(
                    format!("{at}.hostnames"),
                    format!("`{h}` is already bound to app `{other}`"),
                );
            }
        }
    }
    let mut seen_routes = HashSet::new();
    for (i, route) in spec.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        check_route(&mut r, &at, route, &apps, &spec.port_policy);
        let key = (&route.hostname, route.listen_port, &route.path_prefix);
        let clashes_app_host = !route.is_l4()
            && route.path_prefix == "/"
            && route.listen_port.is_none()
            && hostnames.contains_key(route.hostname.as_str());
        if !seen_routes.insert(key) || clashes_app_host {
            r.add(
                &at,
                "another route has the same hostname, port and path prefix",
            );
        }
        if !route.is_l4() && api_hosts.contains(route.hostname.as_str()) {
            r.add(
                &at,
                "API hosts are routed by `/v1/<app_id>`; use another hostname",
            );
        }
    }
    for (i, owner) in cross_tenant_routes(spec) {
        let route = &spec.routes[i];
        r.add(
            format!("routes[{}].app", route.metrics_id()),
            format!(
                "`{}` belongs to app `{owner}`; a route on it cannot send to app `{}`",
                route.hostname, route.app
            ),
        );
    }
    check_port_kinds(&mut r, &spec.routes);
    crate::validate_auth::check(&mut r, spec);
    if r.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationError(r.0))
    }
}

/// Routes on a hostname bound to one app that send to another (a hostname belongs to one
/// app): their indexes in `spec.routes`, each with the app the hostname belongs to. A
/// name is bound by an app's exact hostname, else by an app's wildcard covering it.
///
/// [`validate`] refuses them; a proxy following the control service leaves them out
/// instead, so one such route in an existing log costs only itself.
pub fn cross_tenant_routes(spec: &RoutingSpec) -> Vec<(usize, &str)> {
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for app in &spec.apps {
        for h in &app.hostnames {
            // A name bound twice is reported on its own; the first binding owns it.
            owners.entry(h).or_insert(&app.id);
        }
    }
    let owner = |host: &str| {
        owners.get(host).copied().or_else(|| {
            let parent = wildcard_parent(host).filter(|_| !host.starts_with("*."))?;
            owners.get(format!("*.{parent}").as_str()).copied()
        })
    };
    spec.routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| owner(&r.hostname).filter(|o| *o != r.app).map(|o| (i, o)))
        .collect()
}

/// The gRPC and CORS sections of an app or route.
fn check_rpc(r: &mut Report, at: &str, rpc: Option<&RpcSpec>, cors: Option<&CorsSpec>) {
    let rpc = rpc.map(|s| s.problems(&format!("{at}.rpc")));
    let cors = cors.map(|s| s.problems(&format!("{at}.cors")));
    for (place, reason) in rpc.into_iter().chain(cors).flatten() {
        r.add(place, reason);
    }
}

fn check_resume(r: &mut Report, at: &str, resume: Option<&ResumeSpec>) {
    if let Some(problem) = resume.and_then(ResumeSpec::problem) {
        r.add(format!("{at}.resume"), problem);
    }
}

fn check_app(r: &mut Report, at: &str, app: &AppSpec) {
    check_rpc(r, at, app.rpc.as_ref(), app.cors.as_ref());
    check_resume(r, at, app.resume.as_ref());
    crate::validate_gateway::check_app(r, at, app);
    for problem in app.limits.iter().flat_map(|l| l.validate()) {
        r.add(format!("{at}.limits"), problem);
    }
    if !is_app_id(&app.id) {
        r.add(
            at,
            "app id must be 1-63 of a-z, 0-9, `-`, `_`, starting with a letter or digit",
        );
    }
    if !app.api_rewrite.starts_with('/') {
        r.add(format!("{at}.api_rewrite"), "must start with `/`");
    }
    if app.upstreams.is_empty() {
        r.add(
            format!("{at}.upstreams"),
            "an app needs at least one upstream",
        );
    }
    if !app.upstreams.contains_key(&app.default_upstream) {
        r.add(
            format!("{at}.default_upstream"),
            format!("no upstream named `{}`", app.default_upstream),
        );
    }
    for (name, cluster) in app.upstreams.iter() {
        check_cluster(r, &format!("{at}.upstreams.{name}"), cluster);
    }
    for (i, split) in app.splits.iter().enumerate() {
        check_split(r, &format!("{at}.splits[{i}]"), split, app);
    }
    if app.max_body_bytes == Some(0) {
        r.add(format!("{at}.max_body_bytes"), "must be greater than 0");
    }
}

fn check_cluster(r: &mut Report, at: &str, c: &ClusterSpec) {
    // A cluster without endpoints is valid (an app before its first instance):
    // its requests get 503 `no_healthy_upstream`.
    for e in &c.endpoints {
        if let Err(reason) = check_address(&e.address) {
            r.add(
                format!("{at}.endpoints"),
                format!("`{}`: {reason}", e.address),
            );
        }
        if e.weight == 0 {
            r.add(
                format!("{at}.endpoints"),
                format!("`{}`: weight must be at least 1", e.address),
            );
        }
    }
    for (name, v) in [
        ("connect_timeout_ms", c.connect_timeout_ms),
        ("response_header_timeout_ms", c.response_header_timeout_ms),
        ("idle_timeout_ms", c.idle_timeout_ms),
    ] {
        if v == 0 {
            r.add(format!("{at}.{name}"), "must be greater than 0");
        }
    }
    if let BalancePolicy::ConsistentHash { headers } = &c.balance {
        if headers.is_empty() {
            r.add(
                format!("{at}.balance"),
                "consistent_hash needs at least one header",
            );
        }
        for h in headers {
            if !is_header_name(h) {
                r.add(
                    format!("{at}.balance"),
                    format!("`{h}` is not a lowercase header name"),
                );
            }
        }
    }
    if !(1..=MAX_CONNECTIONS_PER_ENDPOINT).contains(&c.max_connections_per_endpoint) {
        r.add(
            format!("{at}.max_connections_per_endpoint"),
            format!("must be 1 to {MAX_CONNECTIONS_PER_ENDPOINT}"),
        );
    }
    if let Some(hc) = &c.health_check {
        check_health(r, &format!("{at}.health_check"), hc, c.protocol);
    }
    if c.outlier.consecutive_failures == 0 {
        r.add(
            format!("{at}.outlier.consecutive_failures"),
            "must be at least 1",
        );
    }
    if c.outlier.max_ejection_percent > 100 {
        r.add(
            format!("{at}.outlier.max_ejection_percent"),
            "must be 0 to 100",
        );
    }
    if c.retry.max_retries > 5 {
        r.add(format!("{at}.retry.max_retries"), "at most 5 retries");
    }
    if !c.protocol.is_tls() && (c.tls_ca_file.is_some() || c.tls_server_name.is_some()) {
        r.add(
            at,
            "tls_ca_file and tls_server_name need protocol `https` or `h2`",
        );
    }
}

/// More connections than this to one endpoint is a misconfiguration, not a need: each
/// HTTP/2 connection carries `SETTINGS_MAX_CONCURRENT_STREAMS` streams (100 is usual).
const MAX_CONNECTIONS_PER_ENDPOINT: u32 = 1024;

fn check_health(r: &mut Report, at: &str, hc: &HealthCheckSpec, protocol: UpstreamProtocol) {
    match hc.kind {
        HealthCheckKind::Http => {
            if !hc.path.starts_with('/') {
                r.add(format!("{at}.path"), "must start with `/`");
            }
            if !hc.service.is_empty() {
                r.add(
                    format!("{at}.service"),
                    "only gRPC checks (`kind = \"grpc\"`) name a service",
                );
            }
        }
        HealthCheckKind::Grpc => {
            if !protocol.is_http2() {
                r.add(
                    format!("{at}.kind"),
                    "gRPC health checks need protocol `h2c` or `h2`",
                );
            }
            if hc.path != default_health_path() {
                r.add(
                    format!("{at}.path"),
                    "gRPC checks call grpc.health.v1.Health/Check; `path` is for HTTP checks",
                );
            }
        }
    }
    if hc.interval_ms == 0 || hc.timeout_ms == 0 {
        r.add(at, "interval and timeout must be positive");
    }
    if hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
        r.add(at, "thresholds must be at least 1");
    }
}

fn check_split(r: &mut Report, at: &str, s: &SplitSpec, app: &AppSpec) {
    if !is_header_name(&s.header) {
        r.add(
            format!("{at}.header"),
            format!("`{}` is not a lowercase header name", s.header),
        );
    }
    if s.backends.is_empty() || s.backends.iter().all(|b| b.weight == 0) {
        r.add(
            format!("{at}.backends"),
            "needs at least one backend with weight > 0",
        );
    }
    for b in &s.backends {
        if !app.upstreams.contains_key(&b.upstream) {
            r.add(
                format!("{at}.backends"),
                format!("no upstream named `{}`", b.upstream),
            );
        }
    }
}

fn check_route(
    r: &mut Report,
    at: &str,
    route: &RouteSpec,
    apps: &HashMap<&str, &AppSpec>,
    policy: &PortPolicy,
) {
    if let Err(e) = check_pattern(&route.hostname) {
        r.add(format!("{at}.hostname"), e);
    }
    if !apps.contains_key(route.app.as_str()) {
        r.add(format!("{at}.app"), format!("no app `{}`", route.app));
    }
    check_rpc(r, at, route.rpc.as_ref(), route.cors.as_ref());
    check_resume(r, at, route.resume.as_ref());
    crate::validate_gateway::check_route(r, at, route);
    if let Some(limits) = &route.limits {
        for problem in limits.validate() {
            r.add(format!("{at}.limits"), problem);
        }
        if limits.budget.is_some() {
            r.add(
                format!("{at}.limits.budget"),
                "budgets are per app; set it on the app",
            );
        }
    }
    if !route.path_prefix.starts_with('/') {
        r.add(format!("{at}.path_prefix"), "must start with `/`");
    }
    if let Some(rw) = &route.rewrite_prefix
        && !rw.starts_with('/')
    {
        r.add(format!("{at}.rewrite_prefix"), "must start with `/`");
    }
    if route.listen_port == Some(0) {
        r.add(format!("{at}.listen_port"), "must be 1-65535");
    }
    if route.max_body_bytes == Some(0) {
        r.add(format!("{at}.max_body_bytes"), "must be greater than 0");
    }
    if let (Some(name), Some(app)) = (&route.upstream, apps.get(route.app.as_str()))
        && !app.upstreams.contains_key(name)
    {
        r.add(
            format!("{at}.upstream"),
            format!("app `{}` has no upstream `{name}`", app.id),
        );
    }
    if route.is_l4() {
        check_l4_route(r, at, route, policy);
    } else if route.backend_port.is_some()
        || route.proxy_protocol
        || route.max_connections.is_some()
    {
        r.add(
            at,
            "backend_port, proxy_protocol and max_connections apply to tls_passthrough and tcp_raw routes only",
        );
    }
}

fn check_l4_route(r: &mut Report, at: &str, route: &RouteSpec, policy: &PortPolicy) {
    match route.listen_port {
        None => r.add(format!("{at}.listen_port"), "L4 routes need a listen_port"),
        Some(port) => {
            if let Some(reason) = policy.refuses(port) {
                r.add(format!("{at}.listen_port"), reason);
            }
        }
    }
    if route.rpc.is_some() || route.cors.is_some() || route.limits.is_some() {
        r.add(
            at,
            "L4 routes see no HTTP: rpc, cors and limits do not apply",
        );
    }
    if route.path_prefix != "/" || route.rewrite_prefix.is_some() || route.max_body_bytes.is_some()
    {
        r.add(
            at,
            "L4 routes see no HTTP: path_prefix, rewrite_prefix and max_body_bytes do not apply",
        );
    }
    if route.backend_port == Some(0) || route.max_connections == Some(0) {
        r.add(
            at,
            "backend_port and max_connections must be greater than 0",
        );
    }
}

/// A port carries one kind of route: HTTP, TLS passthrough, or a single raw TCP route.
fn check_port_kinds(r: &mut Report, routes: &[Arc<RouteSpec>]) {
    let mut kinds: HashMap<u16, (usize, usize, usize)> = HashMap::new();
    for route in routes {
        let Some(port) = route.listen_port else {
            continue;
        };
        let k = kinds.entry(port).or_default();
        match route.protocol_hint {
            ProtocolHint::HttpTerminate => k.0 += 1,
            ProtocolHint::TlsPassthrough => k.1 += 1,
            ProtocolHint::TcpRaw => k.2 += 1,
        }
    }
    let mut ports: Vec<_> = kinds.into_iter().collect();
    ports.sort();
    for (port, (http, pass, raw)) in ports {
        if raw > 1 {
            r.add(
                format!("port {port}"),
                "a port carries at most one tcp_raw route",
            );
        }
        if raw > 0 && http + pass > 0 || http > 0 && pass > 0 {
            r.add(
                format!("port {port}"),
                "routes of different kinds (http_terminate, tls_passthrough, tcp_raw) share this port",
            );
        }
    }
}

/// `host:port` with a non-zero port; the host is a name, IPv4 or bracketed IPv6.
fn check_address(addr: &str) -> Result<(), &'static str> {
    let (host, port) = addr.rsplit_once(':').ok_or("expected host:port")?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err("port must be 1-65535"),
    }
    if host.is_empty() {
        return Err("missing host");
    }
    if host.starts_with('[') != host.ends_with(']') {
        return Err("unbalanced brackets around IPv6 host");
    }
    Ok(())
}

/// An app id: 1 to 63 of `a-z 0-9 - _`, starting with a letter or digit.
pub fn is_app_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn is_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

#[cfg(test)]
mod tests {
    use crate::model::RoutingSpec;
    use crate::validate::validate;

    fn problems(cluster: &str) -> Vec<String> {
        let text = format!(
            "[[apps]]\nid = \"web\"\nhostnames = [\"example.test\"]\n\
             [apps.upstreams.default]\nendpoints = [{{ address = \"127.0.0.1:8080\" }}]\n{cluster}"
        );
        let spec: RoutingSpec = toml::from_str(&text).expect("parses");
        match validate(&spec) {
            Ok(()) => Vec::new(),
            Err(e) => e.0.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn health_checks_of_either_kind_are_checked() {
        let ok = [
            "health_check = { path = \"/ready\" }",
            "protocol = \"h2c\"\nhealth_check = { kind = \"grpc\" }",
            "protocol = \"h2\"\nhealth_check = { kind = \"grpc\", service = \"pkg.Svc\", interval_ms = 100 }",
        ];
        for cluster in ok {
            assert_eq!(problems(cluster), Vec::<String>::new(), "{cluster}");
        }
        let refused = [
            (
                "health_check = { path = \"ready\" }",
                "health_check.path: must start",
            ),
            (
                "health_check = { service = \"pkg.Svc\" }",
                "health_check.service",
            ),
            (
                "health_check = { kind = \"grpc\" }",
                "need protocol `h2c` or `h2`",
            ),
            (
                "protocol = \"h2c\"\nhealth_check = { kind = \"grpc\", path = \"/x\" }",
                "`path` is for HTTP checks",
            ),
            (
                "protocol = \"h2c\"\nhealth_check = { kind = \"grpc\", timeout_ms = 0 }",
                "interval and timeout",
            ),
            ("health_check = { unhealthy_threshold = 0 }", "thresholds"),
        ];
        for (cluster, needle) in refused {
            let found = problems(cluster);
            assert!(
                found.iter().any(|p| p.contains(needle)),
                "{cluster}: expected `{needle}` in {found:?}"
            );
        }
    }

    #[test]
    fn connections_per_endpoint_are_bounded() {
        assert!(problems("max_connections_per_endpoint = 1").is_empty());
        assert!(problems("max_connections_per_endpoint = 1024").is_empty());
        for n in [0, 1025] {
            let found = problems(&format!("max_connections_per_endpoint = {n}"));
            assert!(
                found
                    .iter()
                    .any(|p| p.contains("max_connections_per_endpoint: must be 1 to 1024")),
                "{n}: {found:?}"
            );
        }
    }
}
