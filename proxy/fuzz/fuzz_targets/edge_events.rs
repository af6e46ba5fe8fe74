//! What the control service sends a following proxy, and what the proxy reads back from
//! disk at start: edge-feed deltas (`EdgeEvent` JSON, decoded by
//! `proxy/src/control_client/follower.rs` `Update::delta`), snapshots (`EdgeConfig` JSON,
//! `Update::snapshot`), the persisted state file (`PersistedState`,
//! `proxy/src/control_client/persist.rs`), folding events into the model
//! (`routing/src/edge.rs` `EdgeConfig::apply`), compiling it (`routing_spec`, `validate`,
//! `Snapshot::build`) and loading its certificates (`CertStore::build_isolated`).
//!
//! Input: newline-separated JSON. The first line is tried as a snapshot and as a persisted
//! state (the model starts from it when it decodes, else empty); every line is tried as a
//! delta and applied in order.
//!
//! Properties (besides no panic):
//! - a refused event leaves the model unchanged (`apply` documents "on error nothing changed");
//! - a decoded event's serde tag is its `event_type()`, and it survives a JSON round trip;
//! - the model and the persisted state survive a JSON round trip;
//! - `routing_spec` gives an app its limits exactly when they parse, and marks it degraded
//!   otherwise (a bad limits block never fails open); keys of apps being deleted are left out;
//! - `Snapshot::build` succeeds exactly when `validate` does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_certs::{CertSource, CertStore};
use tollgate_proxy::fuzzing::{PersistedState, Update, cert_source};
use tollgate_routing::limits::LimitsSpec;
use tollgate_routing::validate::cross_tenant_routes;
use tollgate_routing::{EdgeConfig, EdgeEvent, Snapshot, validate};

fn round_trips<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_vec(v).expect("serializes");
    let back: T = serde_json::from_slice(&json).expect("own JSON decodes");
    assert_eq!(
        &back,
        v,
        "JSON round trip changed it: {}",
        String::from_utf8_lossy(&json)
    );
}

fn check_event(event: &EdgeEvent) {
    let v = serde_json::to_value(event).expect("serializes");
    assert_eq!(
        v.get("type").and_then(Value::as_str),
        Some(event.event_type())
    );
    round_trips(event);
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let mut model = match Update::snapshot(1, first, None, "") {
        Update::Snapshot { config, .. } => config,
        _ => EdgeConfig::default(),
    };
    if let Ok(state) = serde_json::from_slice::<PersistedState>(first) {
        let json = serde_json::to_vec(&state).expect("serializes");
        let back: PersistedState = serde_json::from_slice(&json).expect("own JSON decodes");
        assert_eq!(back.event_id, state.event_id);
        assert_eq!(back.config, state.config);
    }
    round_trips(&model);

    for (i, line) in std::iter::once(first).chain(lines).enumerate() {
        let Update::Delta { event, .. } = Update::delta(i as i64 + 2, "fuzz", line, String::new())
        else {
            continue;
        };
        check_event(&event);
        let before = model.clone();
        if model.apply(&event).is_err() {
            assert_eq!(
                model,
                before,
                "a refused {} changed the model",
                event.event_type()
            );
        }
    }
    round_trips(&model);

    let spec = model.routing_spec();
    for app in &spec.apps {
        match model.limits.get(&app.id) {
            None => assert!(app.limits.is_none() && app.degraded.is_none()),
            Some(raw) => match LimitsSpec::from_json(raw) {
                Ok(l) => {
                    assert_eq!(app.limits.as_ref(), Some(&l));
                    assert!(app.degraded.is_none());
                }
                Err(_) => {
                    assert!(
                        app.limits.is_none(),
                        "unparsable limits served for {}",
                        app.id
                    );
                    assert!(
                        app.degraded.is_some(),
                        "unparsable limits of {} not reported",
                        app.id
                    );
                }
            },
        }
    }
    for key in &spec.api_keys {
        let app = model
            .apps
            .get(&key.app)
            .expect("keys of removed apps are removed");
        assert!(app.deleting_until.is_none());
    }
    let _ = cross_tenant_routes(&spec);
    let valid = validate(&spec).is_ok();
    assert_eq!(Snapshot::build(spec, 1).is_ok(), valid);

    let sources: Vec<CertSource> = model.certificates.values().map(cert_source).collect();
    if !sources.is_empty() {
        let _ = CertStore::build_isolated(&sources);
    }
});
