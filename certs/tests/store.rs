//! Name resolution and summaries of a built store (no network).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use tollgate_certs::{CertStore, CertSummary};

fn leaf_of(store: &CertStore, sni: Option<&str>) -> Option<Vec<u8>> {
    store
        .resolve(sni)
        .and_then(|k| k.cert.first().map(|c| c.to_vec()))
}

#[test]
fn exact_beats_wildcard_and_lookup_is_case_insensitive() {
    let wild = cert(&["*.tenant.example"]);
    let exact = cert(&["special.tenant.example"]);
    let store = CertStore::build(&[wild.clone(), exact.clone()]).unwrap();
    let wild_der = Some(leaf_der(&wild).to_vec());
    let exact_der = Some(leaf_der(&exact).to_vec());

    assert_eq!(leaf_of(&store, Some("special.tenant.example")), exact_der);
    assert_eq!(leaf_of(&store, Some("SPECIAL.Tenant.Example.")), exact_der);
    assert_eq!(leaf_of(&store, Some("other.tenant.example")), wild_der);
    assert_eq!(leaf_of(&store, Some("Other.TENANT.example.")), wild_der);
    assert_eq!(leaf_of(&store, Some("tenant.example")), None);
    assert_eq!(leaf_of(&store, Some("a.b.tenant.example")), None);
    assert_eq!(leaf_of(&store, Some("")), None);
    assert_eq!(leaf_of(&store, Some(".")), None);
    assert_eq!(leaf_of(&store, None), None);
}

#[test]
fn default_serves_clients_without_sni() {
    let a = cert(&["a.example"]);
    let wild = cert(&["*.t.example"]);
    let store = CertStore::build(&[a, wild.clone()])
        .unwrap()
        .with_default("x.t.example")
        .unwrap();
    assert!(store.has_default());
    assert_eq!(leaf_of(&store, None), Some(leaf_der(&wild).to_vec()));
}

#[test]
fn empty_store_resolves_nothing() {
    let store = CertStore::empty();
    assert!(store.is_empty());
    assert_eq!(store.len(), 0);
    assert!(store.resolve(Some("a.example")).is_none());
    assert!(store.resolve(None).is_none());
    assert!(store.summaries().is_empty());
}

#[test]
fn summaries_describe_each_certificate() {
    let a = cert(&["a.example", "www.a.example"]);
    let b = cert(&["*.b.example"]);
    let store = CertStore::build(&[a, b]).unwrap();
    assert_eq!(store.len(), 2);
    let sums: Vec<CertSummary> = store.summaries();
    assert_eq!(sums[0].names, names(&["a.example", "www.a.example"]));
    assert_eq!(sums[1].names, names(&["*.b.example"]));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for s in &sums {
        assert_eq!(s.sha256_fingerprint.len(), 64);
        assert!(
            s.sha256_fingerprint
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let one_year = 365 * 86_400;
        assert!((s.not_after_unix - (now + one_year)).abs() < 3600, "{s:?}");
    }
    assert_ne!(sums[0].sha256_fingerprint, sums[1].sha256_fingerprint);
}

#[test]
fn self_signed_needs_a_name() {
    assert!(tollgate_certs::self_signed(&[]).is_err());
}
