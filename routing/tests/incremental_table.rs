//! Updating the route table app by app serves what compiling the whole config serves:
//! on random configs and random events, the table [`EdgeConfig::routing_delta`] and
//! [`RouteTable::updated`] give answers every lookup the same way as a table compiled
//! from the new config, and the apps the delta leaves alone keep their slots.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{APPS, HOSTS, Rng, event, random_config, random_event};
use std::collections::BTreeSet;
use tollgate_routing::{EdgeConfig, RouteTable};

/// The table a full compile gives, cross-tenant routes left out as a proxy does.
fn full(config: &EdgeConfig) -> RouteTable {
    let mut spec = config.routing_spec_without_keys();
    spec.routes.retain(|r| !config.is_cross_tenant(r));
    RouteTable::compile(&spec)
}

/// Every lookup's answer without its slot, which the two tables may number apart.
fn answers(table: &RouteTable) -> Vec<String> {
    let hosts =
        HOSTS
            .iter()
            .copied()
            .chain(["q.t.example", "q.other.example", "elsewhere.example"]);
    let mut out = Vec::new();
    for host in hosts {
        for port in [443, 8443, 9000] {
            for path in [
                "/", "/a", "/a/b", "/ab", "/v1/a/x", "/v1/b", "/v1/zz/x", "/v1/",
            ] {
                let answer = match table.lookup(host, port, path) {
                    Ok(m) => format!(
                        "{} app={} strip={} replace={:?} upstream={:?} auth={:?} source={:?}",
                        m.route_id, m.app.id, m.strip, m.replace, m.upstream, m.auth, m.source
                    ),
                    Err(miss) => format!("{miss:?}"),
                };
                out.push(format!("{host}:{port}{path} -> {answer}"));
            }
        }
    }
    for app in APPS.iter().chain(&["zz"]) {
        out.push(format!("{app}: {:?}", table.app(app)));
    }
    out
}

/// The slots in use, each once and below the table's bound.
fn slots(table: &RouteTable) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    for m in table.routes() {
        assert!(
            m.index < table.route_count(),
            "slot {} out of range",
            m.index
        );
        assert!(seen.insert(m.index), "slot {} used twice", m.index);
    }
    seen
}

#[test]
fn updating_app_by_app_answers_like_a_full_compile() {
    let mut rng = Rng(0x0DDB_1A5E_5BAD_5EED);
    let (mut steps, mut changed, mut kept) = (0, 0, 0);
    for _ in 0..1500 {
        let mut current = random_config(&mut rng);
        let mut table = full(&current);
        for _ in 0..4 {
            let mut next = current.clone();
            for _ in 0..1 + rng.below(3) {
                let _ = next.apply(&event(random_event(&mut rng)));
            }
            let delta = current
                .routing_delta(&next)
                .expect("no platform-wide events are generated");
            let (updated, moved) = table.updated(delta.apps.clone());
            let context = || format!("delta {:?}\nconfig {next:?}", delta.apps);
            let want = answers(&full(&next));
            for (got, want) in answers(&updated).iter().zip(&want) {
                assert_eq!(got, want, "{}", context());
            }
            // Slots: the ones in use are the old ones, less those emptied, plus those
            // filled.
            let mut expected = slots(&table);
            for i in &moved.removed {
                assert!(expected.remove(i), "slot {i} emptied but not in use");
            }
            expected.extend(&moved.added);
            assert_eq!(slots(&updated), expected, "{}", context());
            // The slots filled are the routes of the apps named, which is how a proxy
            // finds what to compile for them.
            let mut filled: Vec<usize> = delta
                .apps
                .iter()
                .flat_map(|c| updated.app_routes(&c.id).map(|m| m.index))
                .collect();
            filled.sort_unstable();
            let mut added = moved.added.clone();
            added.sort_unstable();
            assert_eq!(filled, added, "{}", context());
            // An app the delta does not name keeps its route on the API hosts.
            let named: BTreeSet<&str> = delta.apps.iter().map(|c| c.id.as_str()).collect();
            for app in APPS.iter().filter(|a| !named.contains(**a)) {
                let path = format!("/v1/{app}/x");
                let before = table.lookup("api.example", 443, &path).map(|m| m.index);
                let after = updated.lookup("api.example", 443, &path).map(|m| m.index);
                assert_eq!(before, after, "{app} moved\n{}", context());
                kept += usize::from(before.is_ok());
            }
            changed += usize::from(!delta.apps.is_empty());
            steps += 1;
            table = updated;
            current = next;
        }
    }
    // The generator must change apps often and leave some alone, or this proves little.
    assert!(
        changed > steps / 4,
        "only {changed} of {steps} steps changed an app"
    );
    assert!(kept > 1000, "only {kept} untouched apps checked");
}

#[test]
fn compiled_routes_share_the_model_routes() {
    let mut rng = Rng(5);
    let mut checked = 0;
    for _ in 0..1_000 {
        let config = random_config(&mut rng);
        let mut next = config.clone();
        if next.apply(&event(random_event(&mut rng))).is_err() {
            continue;
        }
        let whole = full(&next);
        let updated = match config.routing_delta(&next) {
            Some(delta) => full(&config).updated(delta.apps).0,
            None => continue,
        };
        for table in [&whole, &updated] {
            for route in next.routes.values().filter(|r| !next.is_cross_tenant(r)) {
                let compiled = table.routes_of(&route.app);
                assert!(
                    compiled.iter().any(|c| std::sync::Arc::ptr_eq(c, route)),
                    "route {:?} is a copy in the table",
                    route.id
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "only {checked} routes checked");
}
