//! Certificates that lapsed after they were accepted: served when the caller says so,
//! refused when introduced, and never the reason a whole store fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::*;
use tollgate_certs::{CertError, CertProblem, CertSource, CertStore, Expiry};

fn expired(name: &str) -> CertSource {
    dated(name, (2020, 1, 1), (2024, 1, 1))
}

fn is_expired(err: &CertError) -> bool {
    matches!(
        err,
        CertError::Source {
            problem: CertProblem::Expired(_),
            ..
        }
    )
}

#[test]
fn expired_certificates_are_served_when_asked() {
    let sources = [cert(&["a.example"]), expired("old.example")];
    let err = CertStore::build_with(&sources, Expiry::Refuse).unwrap_err();
    assert!(is_expired(&err), "{err}");

    let store = CertStore::build_with(&sources, Expiry::Serve).unwrap();
    assert!(store.resolve(Some("old.example")).is_some());
    assert!(store.resolve(Some("a.example")).is_some());
    let old = &store.summaries()[1];
    assert_eq!(old.not_after_unix, 1_704_067_200);
    assert!(old.out_of_window(1_704_067_201));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(!store.summaries()[0].out_of_window(now));
    assert!(old.out_of_window(now));
}

#[test]
fn only_known_expired_certificates_are_served_on_reload() {
    let old = expired("old.example");
    let served = CertStore::build_with(std::slice::from_ref(&old), Expiry::Serve).unwrap();
    let known: HashSet<String> = served.fingerprints();

    let again = [cert(&["a.example"]), old.clone()];
    let store = CertStore::build_with(&again, Expiry::ServeKnown(&known)).unwrap();
    assert_eq!(store.len(), 2);

    let introduced = [old, expired("new.example")];
    let err = CertStore::build_with(&introduced, Expiry::ServeKnown(&known)).unwrap_err();
    assert!(is_expired(&err), "{err}");
    assert!(err.to_string().contains("new.example"), "{err}");
}

#[test]
fn an_isolated_build_leaves_out_only_the_bad_source() {
    let mut mismatched = cert(&["b.example"]);
    mismatched.key_pem = cert(&["c.example"]).key_pem;
    let sources = [
        cert(&["a.example"]),
        mismatched,
        expired("old.example"),
        cert(&["a.example"]),
    ];
    let (store, errors) = CertStore::build_isolated(&sources);
    assert_eq!(store.len(), 2, "{errors:?}");
    assert!(store.resolve(Some("a.example")).is_some());
    assert!(store.resolve(Some("old.example")).is_some());
    assert!(store.resolve(Some("b.example")).is_none());
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(matches!(
        &errors[0],
        CertError::Source {
            problem: CertProblem::KeyMismatch,
            ..
        }
    ));
    assert!(matches!(&errors[1], CertError::DuplicateName { name, .. } if name == "a.example"));
}
