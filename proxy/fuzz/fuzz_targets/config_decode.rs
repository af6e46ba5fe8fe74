//! The proxy's config file (`proxy/src/config.rs` `ProxyConfig::parse`, TOML) and what
//! loading does with it short of reading files: path policy, listener TLS options, the
//! `[control]` checks, the routing spec (`routing()`), its validation and compilation
//! (`tollgate_routing::validate`, `Snapshot::build`) and route lookups.
//!
//! `config::load` itself is not called: it reads the certificate files the config names,
//! and a fuzzed path (`/dev/zero`, a FIFO) would hang or exhaust memory for reasons that
//! are not bugs.
//!
//! Input: the file's text (invalid UTF-8 is skipped, as `load` refuses it).
//!
//! Properties (besides no panic):
//! - `Snapshot::build` succeeds exactly when `validate` does;
//! - the routing spec survives a JSON round trip (it is what the control service ships);
//! - in a built snapshot, looking up each HTTP route's own hostname and prefix does not
//!   panic, and a rewrite of a normalised path starts with `/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tollgate_proxy::ProxyConfig;
use tollgate_routing::path::normalize;
use tollgate_routing::{RoutingSpec, Snapshot, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = ProxyConfig::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    let policy = config.paths.policy();
    for l in &config.listeners {
        if let Some(tls) = &l.tls {
            let _ = tls.options();
        }
    }
    if let Some(control) = &config.control {
        let _ = control.check();
    }
    let spec = config.routing();
    let json = serde_json::to_vec(&spec).expect("serializes");
    let back: RoutingSpec = serde_json::from_slice(&json).expect("own JSON decodes");
    assert_eq!(back, spec, "JSON round trip changed the spec");

    let valid = validate(&spec).is_ok();
    let snapshot = Snapshot::build(spec, 1);
    assert_eq!(snapshot.is_ok(), valid);
    let Ok(snapshot) = snapshot else {
        return;
    };
    for route in snapshot.spec().routes.iter().filter(|r| !r.is_l4()) {
        let port = route.listen_port.unwrap_or(443);
        let path = format!("{}/x", route.path_prefix.trim_end_matches('/'));
        let Ok(path) = normalize(&path, policy) else {
            continue;
        };
        if let Ok(m) = snapshot.table.lookup(&route.hostname, port, &path)
            && let Some(rewritten) = m.rewrite(&path)
        {
            assert!(
                rewritten.starts_with('/'),
                "{path:?} rewritten to {rewritten:?}"
            );
        }
    }
});
