//! Random edge configs for the property tests: a deterministic generator of events
//! over few names, ports, hashes and apps, so routes clash, wildcards cover names,
//! keys share hashes and references dangle often.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_routing::{EdgeConfig, EdgeEvent};

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

pub const APPS: &[&str] = &["a", "b", "c", "d"];
pub const HOSTS: &[&str] = &[
    "x.t.example",
    "y.t.example",
    "*.t.example",
    "t.example",
    "api.example",
    "z.other.example",
    "*.other.example",
    "Bad..name",
];
pub const ROUTES: &[&str] = &["r1", "r2", "r3", "r4", "r5"];
pub const KEYS: &[&str] = &["k1", "k2", "k3", "k4"];

pub fn random_event(rng: &mut Rng) -> Value {
    let app = rng.pick(APPS);
    let host = rng.pick(HOSTS);
    match rng.below(16) {
        0 | 1 => json!({"type": "app_created", "app_id": app}),
        2 => {
            let address = rng.pick(&["127.0.0.1:9000", "not an address"]);
            let upstream = rng.pick(&["default", "other"]);
            json!({"type": "instance_added", "app_id": app, "upstream": upstream, "endpoint": {"address": address}})
        }
        3 | 4 => json!({"type": "hostname_bound", "hostname": host, "app_id": app}),
        5 => json!({"type": "hostname_unbound", "hostname": host}),
        6 => {
            let to = rng.pick(APPS);
            json!({"type": "hostname_rebound", "hostname": host, "from_app": app, "to_app": to})
        }
        7..=9 => {
            let prefix = rng.pick(&["/", "/a", "nope"]);
            let mut route = json!({
                "id": rng.pick(ROUTES),
                "hostname": host,
                "app": app,
                "path_prefix": prefix,
            });
            match rng.below(5) {
                0 => route["listen_port"] = json!(8443),
                1 => {
                    route["listen_port"] = json!(8443);
                    route["protocol_hint"] = json!("tls_passthrough");
                }
                2 => {
                    route["listen_port"] = json!(9000);
                    route["protocol_hint"] = json!("tcp_raw");
                }
                _ => {}
            }
            if rng.below(4) == 0 {
                route["upstream"] = json!("other");
            }
            if rng.below(5) == 0 {
                route["auth"] = json!({"api_keys": false, "issuers": ["ghost"]});
            }
            json!({"type": "route_created", "route": route})
        }
        10 => json!({"type": "route_deleted", "route_id": rng.pick(ROUTES)}),
        11 | 12 => {
            let hash = ["a", "b", "c"][rng.below(3)].repeat(64);
            json!({"type": "api_key_created", "key": {"key_id": rng.pick(KEYS), "app": app, "kind": "secret", "sha256": hash}})
        }
        13 => json!({"type": "api_key_revoked", "key_id": rng.pick(KEYS)}),
        14 => match rng.below(3) {
            0 => json!({"type": "app_removed", "app_id": app}),
            1 => json!({"type": "app_deletion_scheduled", "app_id": app, "until_unix": 10}),
            _ => {
                json!({"type": "app_auth_changed", "app_id": app, "auth": {"api_keys": false, "issuers": []}})
            }
        },
        15 => match rng.below(3) {
            0 => json!({"type": "limits_set", "app_id": app, "limits": {"rate": "nonsense"}}),
            // Certificates are not validated here; their name index must still follow.
            1 => {
                let id = rng.pick(&["c1", "c2", "c3"]);
                json!({"type": "certificate_uploaded", "cert": {"id": id, "cert_pem": "-", "key_pem": "-", "names": [host, rng.pick(HOSTS)]}})
            }
            _ => json!({"type": "certificate_removed", "cert_id": rng.pick(&["c1", "c2", "c3"])}),
        },
        _ => unreachable!("below(16)"),
    }
}

pub fn event(v: Value) -> EdgeEvent {
    serde_json::from_value(v).expect("a well-formed event")
}

/// A random config: API hosts, then up to 40 random events (those the model refuses
/// are skipped).
pub fn random_config(rng: &mut Rng) -> EdgeConfig {
    let mut config = EdgeConfig::default();
    config
        .apply(&event(
            json!({"type": "api_hosts_set", "hosts": ["api.example"]}),
        ))
        .expect("api hosts");
    for _ in 0..rng.below(40) {
        let _ = config.apply(&event(random_event(rng)));
    }
    config
}
