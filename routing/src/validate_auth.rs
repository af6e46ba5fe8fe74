//! Validation of the auth section: policies, API key records and OIDC issuers.

use crate::auth::{AuthPolicy, SUPPORTED_ALGORITHMS};
use crate::model::RoutingSpec;
use crate::validate::Report;
use std::collections::HashSet;

pub(crate) fn check(r: &mut Report, spec: &RoutingSpec) {
    let mut names = HashSet::new();
    let mut urls = HashSet::new();
    for i in &spec.oidc_issuers {
        let at = format!("oidc_issuers[{}]", i.name);
        if !names.insert(i.name.as_str()) {
            r.add(&at, "duplicate issuer name");
        }
        if !urls.insert(i.issuer.as_str()) {
            r.add(&at, format!("issuer `{}` is configured twice", i.issuer));
        }
        if !(i.issuer.starts_with("https://") || is_loopback_http(&i.issuer)) {
            r.add(
                &at,
                "issuer must be an https:// URL (http:// only on loopback, for tests)",
            );
        }
        if i.audiences.is_empty() {
            r.add(&at, "at least one audience is required");
        }
        if i.algorithms.is_empty() {
            r.add(&at, "at least one algorithm is required");
        }
        for a in &i.algorithms {
            if !SUPPORTED_ALGORITHMS.contains(&a.as_str()) {
                r.add(
                    &at,
                    format!(
                        "algorithm `{a}` is not allowed (allowed: {})",
                        SUPPORTED_ALGORITHMS.join(", ")
                    ),
                );
            }
        }
        if i.jwks_refresh_secs == 0 {
            r.add(&at, "jwks_refresh_secs must be greater than 0");
        }
    }
    let apps: HashSet<&str> = spec.apps.iter().map(|a| a.id.as_str()).collect();
    let mut ids = HashSet::new();
    let mut hashes = HashSet::new();
    for k in &spec.api_keys {
        let at = format!("api_keys[{}]", k.key_id);
        if k.key_id.is_empty() || !ids.insert(k.key_id.as_str()) {
            r.add(&at, "key ids must be non-empty and unique");
        }
        if !apps.contains(k.app.as_str()) {
            r.add(&at, format!("no app `{}`", k.app));
        }
        let hex = k.sha256.len() == 64
            && k.sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            r.add(&at, "sha256 must be 64 lowercase hex digits");
        } else if !hashes.insert(k.sha256.as_str()) {
            r.add(&at, "another key has the same hash");
        }
    }
    for app in &spec.apps {
        if let Some(p) = &app.auth {
            check_policy(r, &format!("apps[{}].auth", app.id), p, &names);
        }
    }
    for (i, route) in spec.routes.iter().enumerate() {
        if let Some(p) = &route.auth {
            let at = format!("routes[{i}].auth");
            if route.is_l4() {
                r.add(
                    &at,
                    "L4 routes carry no HTTP credentials; auth does not apply",
                );
            }
            check_policy(r, &at, p, &names);
        }
    }
}

fn check_policy(r: &mut Report, at: &str, p: &AuthPolicy, issuers: &HashSet<&str>) {
    if !p.api_keys && p.issuers.is_empty() {
        r.add(
            at,
            "the policy accepts no credentials: enable api_keys or name issuers",
        );
    }
    if p.public_keys && !p.api_keys {
        r.add(at, "public_keys needs api_keys");
    }
    for name in &p.issuers {
        if !issuers.contains(name.as_str()) {
            r.add(at, format!("no OIDC issuer named `{name}`"));
        }
    }
}

fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', ':']).next().unwrap_or("");
    let host = if rest.starts_with('[') {
        rest.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}
