//! Updating a store one certificate at a time gives what a fresh build of the same
//! certificates gives, and a name clash is settled by who served first (no network).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use tollgate_certs::{CertSource, CertStore};

fn leaf_of(store: &CertStore, sni: &str) -> Option<Vec<u8>> {
    store
        .resolve(Some(sni))
        .and_then(|k| k.cert.first().map(|c| c.to_vec()))
}

fn der(source: &CertSource) -> Option<Vec<u8>> {
    Some(leaf_der(source).to_vec())
}

const PROBES: [&str; 6] = [
    "a.example",
    "b.example",
    "x.t.example",
    "t.example",
    "c.example",
    "new.example",
];

/// Every probe name resolves alike in both stores.
fn assert_same(updated: &CertStore, fresh: &CertStore) {
    for name in PROBES {
        assert_eq!(leaf_of(updated, name), leaf_of(fresh, name), "{name}");
    }
    assert_eq!(updated.summaries(), fresh.summaries());
    assert_eq!(updated.refused(), fresh.refused());
}

#[test]
fn updates_match_a_fresh_build_of_the_same_certificates() {
    let a = cert(&["a.example"]);
    let b = cert(&["b.example", "c.example"]);
    let b2 = cert(&["b.example", "c.example"]);
    let wild = cert(&["*.t.example"]);
    let mut bad = cert(&["new.example"]);
    bad.key_pem = cert(&["other.example"]).key_pem;
    // Ids sort as the list: "0000000000", "0000000001", ...
    let id = |i: usize| format!("{i:010}");

    let mut store = CertStore::empty();
    let mut current: Vec<Option<CertSource>> = vec![None; 4];
    let steps: Vec<(usize, Option<&CertSource>)> = vec![
        (0, Some(&a)),
        (1, Some(&b)),
        (2, Some(&wild)),
        (3, Some(&bad)),
        // Rotated: a new certificate for the same names.
        (1, Some(&b2)),
        (0, None),
        (3, None),
        (2, None),
        (0, Some(&wild)),
    ];
    for (slot, source) in steps {
        let key = id(slot);
        store = store.update([(key.as_str(), source)]);
        current[slot] = source.cloned();
        let list: Vec<CertSource> = current.iter().flatten().cloned().collect();
        // A fresh store of the slots in use, under the same ids.
        let ids: Vec<String> = (0..current.len()).map(id).collect();
        let fresh = CertStore::empty().update(
            ids.iter()
                .zip(&current)
                .filter_map(|(i, s)| Some((i.as_str(), Some(s.as_ref()?)))),
        );
        assert_same(&store, &fresh);
        assert_eq!(store.len() + store.refused().len(), list.len());
        let (built, _) = CertStore::build_isolated(&list);
        assert_eq!(built.summaries(), store.summaries(), "as a list build");
    }
    assert_eq!(leaf_of(&store, "x.t.example"), der(&wild));
    assert_eq!(leaf_of(&store, "b.example"), der(&b2), "slot 1 was rotated");
}

#[test]
fn a_clashing_certificate_waits_until_the_name_is_free() {
    let first = cert(&["a.example"]);
    let second = cert(&["a.example", "b.example"]);
    let store = CertStore::empty().update([("m", Some(&first))]);
    // A lower id does not take the name from the one serving it.
    let store = store.update([("k", Some(&second))]);
    assert_eq!(leaf_of(&store, "a.example"), der(&first));
    assert_eq!(leaf_of(&store, "b.example"), None, "refused as a whole");
    let refused = store.refused();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].contains("a.example"), "{refused:?}");

    let store = store.update([("m", None)]);
    assert_eq!(leaf_of(&store, "a.example"), der(&second));
    assert_eq!(leaf_of(&store, "b.example"), der(&second));
    assert!(store.refused().is_empty());
}

#[test]
fn the_default_follows_the_certificate_serving_its_name() {
    let old = cert(&["a.example"]);
    let new = cert(&["a.example"]);
    let store = CertStore::empty()
        .update([("a", Some(&old))])
        .with_default("a.example")
        .unwrap();
    let store = store.update([("a", Some(&new))]);
    let leaf = store
        .resolve(None)
        .and_then(|k| k.cert.first().map(|c| c.to_vec()));
    assert_eq!(leaf, der(&new));
    let store = store.update([("a", None)]);
    assert!(store.resolve(None).is_none());
}

#[test]
fn a_bad_certificate_without_names_is_reported_by_its_id() {
    let bad = CertSource {
        cert_pem: "not a certificate".into(),
        key_pem: "not a key".into(),
        names: None,
    };
    let store = CertStore::empty().update([("tenant-cert", Some(&bad))]);
    let refused = store.refused();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].contains("`tenant-cert`"), "{refused:?}");
    assert!(store.update([("tenant-cert", None)]).refused().is_empty());
}
