//! The edge model: events build a config that validates, and misfit events are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_routing::{EdgeCert, EdgeConfig, EdgeError, EdgeEvent, Snapshot, validate};

fn ev(json: serde_json::Value) -> EdgeEvent {
    serde_json::from_value(json).expect("event parses")
}

fn built() -> EdgeConfig {
    let mut c = EdgeConfig::default();
    let events = [
        serde_json::json!({"type": "api_hosts_set", "hosts": ["api.example.com"]}),
        serde_json::json!({"type": "app_created", "app_id": "acme"}),
        serde_json::json!({"type": "instance_added", "app_id": "acme", "upstream": "default", "endpoint": {"address": "127.0.0.1:9000"}}),
        serde_json::json!({"type": "hostname_bound", "hostname": "acme.example.com", "app_id": "acme"}),
        serde_json::json!({"type": "route_created", "route": {"id": "r1", "hostname": "www.acme.example.com", "app": "acme", "path_prefix": "/api"}}),
        serde_json::json!({"type": "api_key_created", "key": {"key_id": "k1", "app": "acme", "kind": "secret", "sha256": "a".repeat(64)}}),
    ];
    for e in events {
        c.apply(&ev(e)).unwrap();
    }
    c
}

#[test]
fn events_build_a_valid_routing_spec() {
    let c = built();
    let spec = c.routing_spec();
    validate(&spec).unwrap();
    let s = Snapshot::build(spec, 7).unwrap();
    assert_eq!(
        s.table
            .lookup("acme.example.com", 443, "/x")
            .unwrap()
            .app
            .id,
        "acme"
    );
    assert_eq!(
        s.table
            .lookup("api.example.com", 443, "/v1/acme/x")
            .unwrap()
            .app
            .id,
        "acme"
    );
    assert_eq!(s.api_keys.len(), 1);
}

#[test]
fn an_app_without_instances_is_valid() {
    let mut c = EdgeConfig::default();
    c.apply(&ev(
        serde_json::json!({"type": "app_created", "app_id": "new"}),
    ))
    .unwrap();
    validate(&c.routing_spec()).unwrap();
}

#[test]
fn misfit_events_change_nothing() {
    let mut c = built();
    let before = c.clone();
    let bad = [
        (
            serde_json::json!({"type": "app_created", "app_id": "acme"}),
            EdgeError::AppExists("acme".into()),
        ),
        (
            serde_json::json!({"type": "hostname_bound", "hostname": "acme.example.com", "app_id": "acme"}),
            EdgeError::HostnameTaken {
                hostname: "acme.example.com".into(),
                app: "acme".into(),
            },
        ),
        (
            serde_json::json!({"type": "route_deleted", "route_id": "nope"}),
            EdgeError::NoRoute("nope".into()),
        ),
        (
            serde_json::json!({"type": "instance_added", "app_id": "ghost", "upstream": "default", "endpoint": {"address": "1.2.3.4:1"}}),
            EdgeError::NoApp("ghost".into()),
        ),
        (
            serde_json::json!({"type": "api_key_revoked", "key_id": "k9"}),
            EdgeError::NoKey("k9".into()),
        ),
    ];
    for (e, want) in bad {
        assert_eq!(c.apply(&ev(e)), Err(want));
        assert_eq!(c, before);
    }
}

#[test]
fn deletion_suspends_drops_keys_then_removes_everything() {
    let mut c = built();
    c.apply(&ev(
        serde_json::json!({"type": "app_deletion_scheduled", "app_id": "acme", "until_unix": 10}),
    ))
    .unwrap();
    let spec = c.routing_spec();
    assert_eq!(spec.apps[0].status, tollgate_routing::AppStatus::Suspended);
    assert!(
        spec.api_keys.is_empty(),
        "keys fail during the grace period"
    );
    c.apply(&ev(
        serde_json::json!({"type": "app_removed", "app_id": "acme"}),
    ))
    .unwrap();
    assert!(
        c.apps.is_empty() && c.routes.is_empty() && c.hostnames.is_empty() && c.api_keys.is_empty()
    );
}

#[test]
fn events_round_trip_as_json_with_their_type() {
    let e = EdgeEvent::CertificateUploaded {
        cert: EdgeCert {
            id: "c1".into(),
            cert_pem: "x".into(),
            key_pem: "y".into(),
            names: vec!["a.example".into()],
        },
    };
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["type"], e.event_type());
    assert_eq!(serde_json::from_value::<EdgeEvent>(v).unwrap(), e);
}

/// `same_routing` is only ever true when the routes are the same, and it is true for
/// the events proxies see most (keys, certificates), so they skip compiling routes.
#[test]
fn same_routing_is_sound_and_holds_for_keys_and_certificates() {
    let base = built();
    // The model keeps certificates as given; loading them is the proxy's job.
    let (cert_pem, key_pem) = ("a certificate", "its key");
    let events = [
        (
            serde_json::json!({"type": "api_key_created", "key": {"key_id": "k2", "app": "acme", "kind": "secret", "sha256": "b".repeat(64)}}),
            true,
        ),
        (
            serde_json::json!({"type": "api_key_revoked", "key_id": "k1"}),
            true,
        ),
        (
            serde_json::json!({"type": "certificate_uploaded", "cert": {"id": "c1", "cert_pem": cert_pem, "key_pem": key_pem, "names": ["acme.example.com"]}}),
            true,
        ),
        (
            serde_json::json!({"type": "app_created", "app_id": "other"}),
            false,
        ),
        (
            serde_json::json!({"type": "app_suspended", "app_id": "acme"}),
            false,
        ),
        (
            serde_json::json!({"type": "instance_added", "app_id": "acme", "upstream": "default", "endpoint": {"address": "127.0.0.1:9001"}}),
            false,
        ),
        (
            serde_json::json!({"type": "hostname_bound", "hostname": "b.example.com", "app_id": "acme"}),
            false,
        ),
        (
            serde_json::json!({"type": "route_deleted", "route_id": "r1"}),
            false,
        ),
        (
            serde_json::json!({"type": "limits_set", "app_id": "acme", "limits": {}}),
            false,
        ),
        (
            serde_json::json!({"type": "api_hosts_set", "hosts": ["api2.example.com"]}),
            false,
        ),
        (
            serde_json::json!({"type": "port_policy_set", "policy": {"allowed": [8443]}}),
            false,
        ),
        (
            serde_json::json!({"type": "app_deletion_scheduled", "app_id": "acme", "until_unix": 1}),
            false,
        ),
    ];
    for (event, same) in events {
        let mut next = base.clone();
        next.apply(&ev(event.clone())).unwrap();
        assert_eq!(base.same_routing(&next), same, "{event}");
        if base.same_routing(&next) {
            assert_eq!(
                base.routing_spec_without_keys(),
                next.routing_spec_without_keys(),
                "{event}"
            );
        } else {
            assert_ne!(
                base.routing_spec_without_keys(),
                next.routing_spec_without_keys(),
                "{event} changes routes"
            );
        }
    }
    assert!(base.same_routing(&base.clone()));
}
