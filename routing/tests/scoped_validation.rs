//! Scoped validation agrees with whole-config validation: on random configs and random
//! commands (one or two events), the problems `validate` finds in
//! [`EdgeConfig::scoped_spec`] are problems of the whole spec, and the problems a
//! command adds to the whole spec are exactly those it adds to the scoped one. The
//! configs are small but dense (few names, ports, hashes and apps), so routes clash,
//! wildcards cover names, keys share hashes and references dangle often.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Rng, event, random_config, random_event};
use serde_json::json;
use std::collections::BTreeSet;
use tollgate_routing::{EdgeConfig, EdgeEvent, RoutingSpec, Scope, validate};

/// The problems of `spec`, with route indexes replaced by route ids (the scoped spec
/// orders fewer routes).
fn problems(spec: &RoutingSpec) -> BTreeSet<String> {
    let Err(e) = validate(spec) else {
        return BTreeSet::new();
    };
    e.0.into_iter()
        .map(|p| {
            let at = match p.at.strip_prefix("routes[").and_then(|r| r.split_once(']')) {
                Some((i, rest)) => match i.parse::<usize>() {
                    Ok(i) => format!("routes[{}]{rest}", spec.routes[i].metrics_id()),
                    Err(_) => p.at.clone(),
                },
                None => p.at.clone(),
            };
            format!("{at}: {}", p.reason)
        })
        .collect()
}

#[test]
fn scoped_validation_finds_what_whole_validation_finds() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut checked = 0;
    let mut refused = 0;
    for _ in 0..12_000 {
        let current = random_config(&mut rng);
        let command: Vec<EdgeEvent> = (0..1 + rng.below(2))
            .map(|_| event(random_event(&mut rng)))
            .collect();
        let mut next = current.clone();
        if command.iter().any(|e| next.apply(e).is_err()) {
            continue;
        }
        assert!(
            current.index_is_current() && next.index_is_current(),
            "index drifted"
        );
        let scope = Scope::of(&command).expect("no platform-wide events are generated");
        let full_next = problems(&next.routing_spec());
        let full_new: BTreeSet<_> = full_next
            .difference(&problems(&current.routing_spec()))
            .cloned()
            .collect();
        let (before, after) = current.scoped_specs(&next, &scope);
        let scoped_next = problems(&after);
        let scoped_new: BTreeSet<_> = scoped_next
            .difference(&problems(&before))
            .cloned()
            .collect();
        let context = || format!("command {command:?}\nconfig {next:?}");
        assert!(
            scoped_next.is_subset(&full_next),
            "the scoped spec found problems the whole spec does not have: {:?}\n{}",
            scoped_next.difference(&full_next).collect::<Vec<_>>(),
            context()
        );
        assert_eq!(scoped_new, full_new, "new problems differ\n{}", context());
        checked += 1;
        refused += usize::from(!full_new.is_empty());
    }
    // The generator must exercise both outcomes, or the test proves little.
    assert!(checked > 2000, "only {checked} commands applied");
    assert!(
        refused > 100 && refused < checked - 100,
        "{refused} of {checked} commands added problems"
    );
}

#[test]
fn a_deserialized_config_validates_like_the_one_it_came_from() {
    let mut rng = Rng(7);
    for _ in 0..200 {
        let mut config = EdgeConfig::default();
        for _ in 0..30 {
            let _ = config.apply(&event(random_event(&mut rng)));
        }
        let copy: EdgeConfig =
            serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(copy, config);
        assert!(copy.index_is_current());
        let command = [event(random_event(&mut rng))];
        let scope = Scope::of(&command).unwrap();
        assert_eq!(copy.scoped_spec(&scope), config.scoped_spec(&scope));
        let (mut a, mut b) = (config.clone(), copy);
        assert_eq!(a.apply(&command[0]).is_ok(), b.apply(&command[0]).is_ok());
        assert!(
            b.index_is_current(),
            "a deserialized config indexes itself on apply"
        );
        assert_eq!(a.scoped_spec(&scope), b.scoped_spec(&scope));
    }
}

#[test]
fn platform_wide_events_have_no_scope() {
    let hosts = event(json!({"type": "api_hosts_set", "hosts": ["api.example"]}));
    assert_eq!(Scope::of(&[hosts]), None);
    let app = event(json!({"type": "app_created", "app_id": "a"}));
    assert!(Scope::of(&[app]).is_some());
}

#[test]
fn a_proxy_index_answers_as_the_control_service_index() {
    let mut rng = Rng(11);
    for _ in 0..300 {
        let mut config = EdgeConfig::default();
        for _ in 0..30 {
            let _ = config.apply(&event(random_event(&mut rng)));
        }
        let mut edge = config.clone();
        edge.refresh_edge_index();
        for _ in 0..5 {
            let command = [event(random_event(&mut rng))];
            let scope = Scope::of(&command).unwrap();
            assert_eq!(
                config.apply(&command[0]).is_ok(),
                edge.apply(&command[0]).is_ok()
            );
            assert!(edge.index_is_current(), "the proxy index drifted");
            // Key scopes read keys by hash: the proxy's index scans for them instead.
            assert_eq!(edge.scoped_spec(&scope), config.scoped_spec(&scope));
            for app in config.apps.keys() {
                assert_eq!(edge.keys_of(app), config.keys_of(app));
            }
        }
    }
}
