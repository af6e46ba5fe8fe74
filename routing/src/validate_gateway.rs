//! Validation of the gateway settings of apps and routes ([`crate::gateway`]): every
//! value the proxy compiles into a header or a Location must parse here, so building
//! a snapshot never meets one that does not.

use crate::gateway::{
    HeaderOpsSpec, HeaderRulesSpec, HstsSpec, HttpsRedirectSpec, OFF, REDIRECT_STATUSES,
    REFERRER_POLICIES, RedirectSpec, SecurityHeadersSpec, Switch,
};
use crate::host::check_pattern;
use crate::model::{AppSpec, RouteSpec};
use crate::validate::Report;
use http::{HeaderName, HeaderValue, Uri};
use std::collections::HashSet;

/// Headers that describe one connection or frame the message; rules may not touch them
/// in either direction.
const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "content-length",
];

/// The prefix of the proxy's own identity and app headers.
const IDENTITY_PREFIX: &str = "x-tollgate-";

pub(crate) fn check_app(r: &mut Report, at: &str, app: &AppSpec) {
    check_common(
        r,
        at,
        app.https_redirect.as_ref(),
        app.hsts.as_ref(),
        app.headers.as_ref(),
        app.security_headers.as_ref(),
    );
}

pub(crate) fn check_route(r: &mut Report, at: &str, route: &RouteSpec) {
    check_common(
        r,
        at,
        route.https_redirect.as_ref(),
        route.hsts.as_ref(),
        route.headers.as_ref(),
        route.security_headers.as_ref(),
    );
    if route.is_l4()
        && (route.redirect.is_some()
            || route.https_redirect.is_some()
            || route.hsts.is_some()
            || route.headers.is_some()
            || route.security_headers.is_some())
    {
        r.add(
            at,
            "L4 routes see no HTTP: redirect, https_redirect, hsts, headers and security_headers do not apply",
        );
    }
    if let Some(redirect) = &route.redirect {
        check_redirect(r, &format!("{at}.redirect"), redirect, route);
    }
}

fn check_common(
    r: &mut Report,
    at: &str,
    https: Option<&Switch<HttpsRedirectSpec>>,
    hsts: Option<&Switch<HstsSpec>>,
    headers: Option<&HeaderRulesSpec>,
    security: Option<&Switch<SecurityHeadersSpec>>,
) {
    if let Some(spec) = https.and_then(Switch::on) {
        check_status(r, &format!("{at}.https_redirect.status"), spec.status);
        if spec.https_port == Some(0) {
            r.add(format!("{at}.https_redirect.https_port"), "must be 1-65535");
        }
    }
    if let Some(spec) = hsts.and_then(Switch::on) {
        check_hsts(r, &format!("{at}.hsts"), spec);
    }
    if let Some(rules) = headers {
        check_ops(r, &format!("{at}.headers.request"), &rules.request, true);
        check_ops(r, &format!("{at}.headers.response"), &rules.response, false);
    }
    if let Some(spec) = security.and_then(Switch::on) {
        check_security(r, &format!("{at}.security_headers"), spec);
    }
}

fn check_status(r: &mut Report, at: &str, status: u16) {
    if !REDIRECT_STATUSES.contains(&status) {
        r.add(
            at,
            format!("{status} is not a redirect status (301, 302, 307 or 308)"),
        );
    }
}

fn check_hsts(r: &mut Report, at: &str, spec: &HstsSpec) {
    if spec.preload && !spec.include_subdomains {
        r.add(
            format!("{at}.preload"),
            "preload requires include_subdomains (the preload list covers every subdomain)",
        );
    }
    if spec.preload && spec.max_age_seconds < crate::gateway::HSTS_PRELOAD_MIN_AGE {
        r.add(
            format!("{at}.max_age_seconds"),
            "preload requires max_age_seconds of at least 31536000 (one year)",
        );
    }
}

fn check_redirect(r: &mut Report, at: &str, spec: &RedirectSpec, route: &RouteSpec) {
    check_status(r, &format!("{at}.status"), spec.status);
    if spec.host.is_none() && spec.path_prefix.is_none() {
        r.add(at, "set host, path_prefix or both");
    }
    if route.rewrite_prefix.is_some() {
        r.add(
            at,
            "a redirect route forwards nothing: rewrite_prefix does not apply",
        );
    }
    let host_ok = match &spec.host {
        Some(host) => match check_authority(host) {
            Ok(()) => true,
            Err(why) => {
                r.add(format!("{at}.host"), format!("`{host}`: {why}"));
                false
            }
        },
        None => true,
    };
    let prefix_ok = match &spec.path_prefix {
        Some(prefix) => match check_path_prefix(prefix) {
            Ok(()) => true,
            Err(why) => {
                r.add(format!("{at}.path_prefix"), format!("`{prefix}`: {why}"));
                false
            }
        },
        None => true,
    };
    if host_ok && prefix_ok {
        let host = spec.host.as_deref().unwrap_or(&route.hostname);
        let prefix = spec.path_prefix.as_deref().unwrap_or(&route.path_prefix);
        if Uri::try_from(format!("https://{host}{prefix}")).is_err() {
            r.add(at, "host and path_prefix do not make a valid URL");
        }
        let same_host = spec.host.as_deref().is_none_or(|h| h == route.hostname);
        let same_path = spec
            .path_prefix
            .as_deref()
            .is_none_or(|p| p == route.path_prefix);
        if same_host && same_path {
            r.add(at, "redirects to this same route (a redirect loop)");
        }
    }
}

/// `host[:port]`: a lowercase DNS name (no wildcard) and an optional non-zero port.
fn check_authority(authority: &str) -> Result<(), String> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.starts_with("*.") {
        return Err("a redirect goes to one host, not a wildcard".into());
    }
    check_pattern(host)?;
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err("port must be 1-65535".into()),
        }
    }
    Ok(())
}

fn check_path_prefix(prefix: &str) -> Result<(), &'static str> {
    if !prefix.starts_with('/') {
        return Err("must start with `/`");
    }
    if prefix.contains(['?', '#']) {
        return Err("a path prefix has no query or fragment");
    }
    if http::uri::PathAndQuery::try_from(prefix).is_err() {
        return Err("not a valid URL path (percent-encode other characters)");
    }
    Ok(())
}

/// One direction's rules: valid names and values, names the proxy owns refused, and
/// no name both removed and set.
fn check_ops(r: &mut Report, at: &str, ops: &HeaderOpsSpec, request: bool) {
    let mut removed = HashSet::new();
    for name in &ops.remove {
        if let Some(n) = check_name(r, &format!("{at}.remove"), name, request)
            && !removed.insert(n)
        {
            r.add(format!("{at}.remove"), format!("`{name}` is listed twice"));
        }
    }
    for (kind, map) in [("set", &ops.set), ("add", &ops.add)] {
        let place = format!("{at}.{kind}");
        let mut seen = HashSet::new();
        for (name, value) in map {
            let Some(n) = check_name(r, &place, name, request) else {
                continue;
            };
            if removed.contains(&n) {
                r.add(&place, format!("`{name}` is both removed and {kind}"));
            }
            if !seen.insert(n) {
                r.add(
                    &place,
                    format!("`{name}` is listed twice (names ignore case)"),
                );
            }
            if let Err(why) = check_value(value) {
                r.add(&place, format!("`{name}`: {why}"));
            }
        }
    }
}

/// The parsed name, or `None` after reporting why it cannot be used.
fn check_name(r: &mut Report, at: &str, name: &str, request: bool) -> Option<HeaderName> {
    let Ok(parsed) = HeaderName::from_bytes(name.as_bytes()) else {
        r.add(at, format!("`{name}` is not a valid header name"));
        return None;
    };
    let lower = parsed.as_str();
    let refusal = if HOP_BY_HOP.contains(&lower) {
        Some("describes the connection or the message framing, which the proxy owns")
    } else if lower.starts_with(IDENTITY_PREFIX) {
        Some("`x-tollgate-*` headers are set by the proxy alone")
    } else if request && lower == "host" {
        Some("the proxy sets `host` from the request")
    } else if !request && lower == "strict-transport-security" {
        Some("set it with `hsts`, which never sends it over plaintext")
    } else {
        None
    };
    match refusal {
        Some(why) => {
            r.add(at, format!("`{name}`: {why}"));
            None
        }
        None => Some(parsed),
    }
}

fn check_value(value: &str) -> Result<(), &'static str> {
    if HeaderValue::from_str(value).is_err() {
        return Err("the value must be visible ASCII, spaces and tabs");
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err("the value may not start or end with whitespace");
    }
    Ok(())
}

fn check_security(r: &mut Report, at: &str, spec: &SecurityHeadersSpec) {
    let policy = spec.referrer_policy.as_str();
    let known = policy == OFF
        || policy
            .split(',')
            .all(|p| REFERRER_POLICIES.contains(&p.trim()));
    if !known {
        r.add(
            format!("{at}.referrer_policy"),
            format!(
                "`{policy}` is not a referrer policy ({}, or `off`)",
                REFERRER_POLICIES.join(", ")
            ),
        );
    }
    if let Some(csp) = &spec.content_security_policy {
        if csp.trim().is_empty() {
            r.add(
                format!("{at}.content_security_policy"),
                "empty; leave it out to send none",
            );
        } else if let Err(why) = check_value(csp) {
            r.add(format!("{at}.content_security_policy"), why);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::RoutingSpec;
    use crate::validate::validate;

    fn problems(toml_text: &str) -> Vec<String> {
        let base = r#"
            [[apps]]
            id = "web"
            hostnames = ["example.test"]
            [apps.upstreams.default]
            endpoints = [{ address = "127.0.0.1:8080" }]
        "#;
        let spec: RoutingSpec = toml::from_str(&format!("{toml_text}\n{base}")).unwrap();
        match validate(&spec) {
            Ok(()) => Vec::new(),
            Err(e) => e.0.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    fn route(extra: &str) -> String {
        format!("[[routes]]\nhostname = \"www.example.test\"\napp = \"web\"\n{extra}")
    }

    fn refused(toml_text: &str, needle: &str) {
        let found = problems(toml_text);
        assert!(
            found.iter().any(|p| p.contains(needle)),
            "expected a problem containing `{needle}`, got {found:?}"
        );
    }

    #[test]
    fn a_full_valid_config_passes() {
        let ok = route(
            r#"
            redirect = { host = "example.test", path_prefix = "/new", status = 301, keep_query = false }
            https_redirect = { status = 301, https_port = 8443 }
            hsts = { max_age_seconds = 63072000, include_subdomains = true, preload = true }
            security_headers = { frame_options = "SAMEORIGIN", referrer_policy = "no-referrer, strict-origin", content_security_policy = "default-src 'self'" }
            [routes.headers.request]
            set = { "X-Env" = "prod" }
            add = { "x-tag" = "a" }
            remove = ["x-debug"]
            [routes.headers.response]
            set = { "cache-control" = "no-store" }
            remove = ["server"]
            "#,
        );
        assert_eq!(problems(&ok), Vec::<String>::new());
        assert_eq!(
            problems(
                "[[routes]]\nhostname = \"a.example.test\"\napp = \"web\"\nhsts = true\nsecurity_headers = false\nhttps_redirect = true"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn hsts_preload_needs_subdomains_and_a_year() {
        refused(
            &route("hsts = { max_age_seconds = 31536000, preload = true }"),
            "preload requires include_subdomains",
        );
        refused(
            &route("hsts = { max_age_seconds = 600, include_subdomains = true, preload = true }"),
            "at least 31536000",
        );
    }

    #[test]
    fn redirects_are_checked() {
        refused(
            &route("redirect = { host = \"example.test\", status = 303 }"),
            "303 is not a redirect status",
        );
        refused(
            &route("https_redirect = { status = 200 }"),
            "200 is not a redirect status",
        );
        refused(
            &route("https_redirect = { https_port = 0 }"),
            "https_redirect.https_port",
        );
        refused(
            &route("redirect = { status = 301 }"),
            "set host, path_prefix or both",
        );
        refused(
            &route("redirect = { host = \"Evil Host\" }"),
            "redirect.host",
        );
        refused(
            &route("redirect = { host = \"*.example.test\" }"),
            "not a wildcard",
        );
        refused(
            &route("redirect = { host = \"example.test:0\" }"),
            "port must be",
        );
        refused(
            &route("redirect = { path_prefix = \"new\" }"),
            "must start with `/`",
        );
        refused(
            &route("redirect = { path_prefix = \"/a b\" }"),
            "not a valid URL path",
        );
        refused(
            &route("redirect = { path_prefix = \"/a?b=1\" }"),
            "no query",
        );
        refused(
            &route("redirect = { host = \"www.example.test\" }"),
            "redirect loop",
        );
        refused(
            &route("rewrite_prefix = \"/x\"\nredirect = { host = \"example.test\" }"),
            "rewrite_prefix does not apply",
        );
        refused(
            "[[routes]]\nhostname = \"db.example.test\"\napp = \"web\"\nlisten_port = 80\nprotocol_hint = \"tcp_raw\"\nhsts = true",
            "L4 routes see no HTTP",
        );
    }

    #[test]
    fn header_rules_refuse_what_the_proxy_owns() {
        for name in [
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "x-tollgate-subject",
            "X-Tollgate-App-Id",
        ] {
            refused(
                &route(&format!(
                    "headers = {{ request = {{ set = {{ \"{name}\" = \"v\" }} }} }}"
                )),
                &format!("`{name}`"),
            );
        }
        // `host` only matters upstream; responses may not touch framing either.
        assert_eq!(
            problems(&route(
                "headers = { response = { set = { \"host\" = \"v\" } } }"
            )),
            Vec::<String>::new()
        );
        refused(
            &route("headers = { response = { remove = [\"content-length\"] } }"),
            "framing",
        );
        refused(
            &route(
                "headers = { response = { set = { \"Strict-Transport-Security\" = \"max-age=1\" } } }",
            ),
            "set it with `hsts`",
        );
        refused(
            &route("headers = { request = { set = { \"bad name\" = \"v\" } } }"),
            "not a valid header name",
        );
        refused(
            &route("headers = { request = { add = { \"x-a\" = \"line\\nbreak\" } } }"),
            "visible ASCII",
        );
        refused(
            &route("headers = { request = { add = { \"x-a\" = \" padded\" } } }"),
            "whitespace",
        );
        refused(
            &route("headers = { request = { set = { \"x-a\" = \"1\" }, remove = [\"X-A\"] } }"),
            "both removed and set",
        );
        refused(
            &route("headers = { request = { set = { \"x-a\" = \"1\", \"X-A\" = \"2\" } } }"),
            "listed twice",
        );
    }

    #[test]
    fn security_headers_values_are_checked() {
        refused(
            &route("security_headers = { referrer_policy = \"sometimes\" }"),
            "not a referrer policy",
        );
        refused(
            &route("security_headers = { content_security_policy = \"\" }"),
            "leave it out",
        );
        assert_eq!(
            problems(&route(
                "security_headers = { referrer_policy = \"off\", frame_options = \"off\" }"
            )),
            Vec::<String>::new()
        );
    }

    #[test]
    fn app_settings_are_checked_too() {
        let found = problems(
            r#"
            [[apps]]
            id = "other"
            hsts = { preload = true }
            [apps.upstreams.default]
            endpoints = [{ address = "127.0.0.1:8081" }]
            "#,
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("apps[other].hsts.preload")),
            "{found:?}"
        );
    }
}
