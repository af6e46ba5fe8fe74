//! Invalid inputs are rejected by `CertStore::build` / `server_config` with the right error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use tollgate_certs::{
    CertError, CertProblem, CertResolver, CertSource, CertStore, TlsOptions, TlsVersion,
    server_config,
};

fn problem(result: Result<CertStore, CertError>) -> (String, CertProblem, String) {
    match result {
        Err(err @ CertError::Source { .. }) => {
            let msg = err.to_string();
            let CertError::Source { cert, problem } = err else {
                unreachable!()
            };
            (cert, problem, msg)
        }
        other => panic!("expected a source error, got {other:?}"),
    }
}

#[test]
fn garbage_pem_is_rejected() {
    let mut bad = cert(&["a.example"]);
    bad.cert_pem = "this is not PEM at all".to_owned();
    let (who, what, msg) = problem(CertStore::build(&[bad]));
    assert_eq!(what, CertProblem::NoCertificate);
    assert_eq!(who, "source #1");
    assert_eq!(msg, "certificate for source #1: no PEM certificate found");

    let mut bad = cert(&["a.example"]);
    bad.cert_pem =
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n".into();
    let (_, what, _) = problem(CertStore::build(&[bad]));
    assert!(matches!(what, CertProblem::InvalidPem(_)), "{what:?}");

    let mut bad = cert(&["a.example"]);
    bad.cert_pem =
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n".into();
    let (_, what, _) = problem(CertStore::build(&[bad]));
    assert!(
        matches!(what, CertProblem::InvalidCertificate(_)),
        "{what:?}"
    );

    let mut bad = cert(&["a.example"]);
    bad.key_pem = "garbage".to_owned();
    let (who, what, _) = problem(CertStore::build(&[bad]));
    assert_eq!(
        (who.as_str(), what),
        ("[a.example]", CertProblem::NoPrivateKey)
    );
}

#[test]
fn key_of_another_certificate_is_rejected() {
    let a = cert(&["a.example"]);
    let b = cert(&["b.example"]);
    let mixed = CertSource {
        key_pem: b.key_pem,
        ..a
    };
    let (_, what, msg) = problem(CertStore::build(&[mixed]));
    assert_eq!(what, CertProblem::KeyMismatch);
    assert_eq!(
        msg,
        "certificate for [a.example]: private key does not match certificate"
    );
}

#[test]
fn expired_certificate_is_rejected() {
    let old = dated("old.example", (2020, 1, 1), (2024, 1, 1));
    let (_, what, msg) = problem(CertStore::build(&[old]));
    assert_eq!(
        what,
        CertProblem::Expired("2024-01-01T00:00:00Z".to_owned())
    );
    assert_eq!(
        msg,
        "certificate for [old.example]: certificate expired at 2024-01-01T00:00:00Z"
    );
}

#[test]
fn not_yet_valid_certificate_is_rejected() {
    let future = dated("future.example", (2100, 1, 1), (2101, 1, 1));
    let (_, what, _) = problem(CertStore::build(&[future]));
    assert_eq!(
        what,
        CertProblem::NotYetValid("2100-01-01T00:00:00Z".to_owned())
    );
}

#[test]
fn explicit_names_must_be_covered() {
    let a = CertSource {
        names: Some(names(&["b.example"])),
        ..cert(&["a.example"])
    };
    let (who, what, msg) = problem(CertStore::build(&[a]));
    assert_eq!(who, "[b.example]");
    assert!(matches!(&what, CertProblem::NameNotCovered { name, .. } if name == "b.example"));
    assert!(msg.contains("name `b.example` is not covered"), "{msg}");

    let wild = cert(&["*.tenant.example"]);
    let ok = CertSource {
        names: Some(names(&["a.tenant.example", "B.Tenant.Example."])),
        ..wild.clone()
    };
    let store = CertStore::build(&[ok]).expect("covered by wildcard");
    assert_eq!(
        store.summaries()[0].names,
        names(&["a.tenant.example", "b.tenant.example"])
    );
    assert!(
        store.resolve(Some("c.tenant.example")).is_none(),
        "only the explicit names are bound"
    );

    for uncovered in ["a.b.tenant.example", "tenant.example"] {
        let bad = CertSource {
            names: Some(names(&[uncovered])),
            ..wild.clone()
        };
        let (_, what, _) = problem(CertStore::build(&[bad]));
        assert!(
            matches!(what, CertProblem::NameNotCovered { .. }),
            "{uncovered}"
        );
    }
}

#[test]
fn invalid_or_empty_explicit_names_are_rejected() {
    let bad = CertSource {
        names: Some(names(&["not a host"])),
        ..cert(&["a.example"])
    };
    let (_, what, _) = problem(CertStore::build(&[bad]));
    assert_eq!(what, CertProblem::InvalidName("not a host".to_owned()));

    let none = CertSource {
        names: Some(Vec::new()),
        ..cert(&["a.example"])
    };
    let (_, what, _) = problem(CertStore::build(&[none]));
    assert_eq!(what, CertProblem::NoNames);
}

#[test]
fn certificate_without_dns_names_needs_explicit_names() {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "legacy.example");
    params.distinguished_name = dn;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let source = CertSource {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        names: None,
    };
    let (who, what, _) = problem(CertStore::build(std::slice::from_ref(&source)));
    assert_eq!((who.as_str(), what), ("source #1", CertProblem::NoNames));

    let named = CertSource {
        names: Some(names(&["legacy.example"])),
        ..source
    };
    let store = CertStore::build(&[named]).expect("explicit name matching the CN");
    assert!(store.resolve(Some("legacy.example")).is_some());
}

#[test]
fn duplicate_names_are_rejected() {
    let first = cert(&["a.example", "shared.example"]);
    let second = CertSource {
        names: Some(names(&["Shared.Example."])),
        ..cert(&["shared.example"])
    };
    match CertStore::build(&[first, second]) {
        Err(err @ CertError::DuplicateName { .. }) => {
            assert_eq!(
                err.to_string(),
                "name `shared.example` is claimed by both certificate for \
                 [a.example, shared.example] and certificate for [shared.example]"
            );
        }
        other => panic!("expected duplicate, got {other:?}"),
    }

    let wild = || cert(&["*.t.example"]);
    assert!(matches!(
        CertStore::build(&[wild(), wild()]),
        Err(CertError::DuplicateName { name, .. }) if name == "*.t.example"
    ));
}

#[test]
fn one_bad_source_fails_the_whole_build() {
    let mut bad = cert(&["b.example"]);
    bad.key_pem = cert(&["c.example"]).key_pem;
    let (who, what, _) = problem(CertStore::build(&[cert(&["a.example"]), bad]));
    assert_eq!(
        (who.as_str(), what),
        ("[b.example]", CertProblem::KeyMismatch)
    );
}

#[test]
fn default_must_be_covered() {
    let store = CertStore::build(&[cert(&["a.example"])]).unwrap();
    assert!(matches!(
        store.with_default("b.example"),
        Err(CertError::DefaultNotCovered(name)) if name == "b.example"
    ));
}

#[test]
fn cipher_suite_errors() {
    let resolver = Arc::new(CertResolver::new(CertStore::empty()));
    let opts = |min_version, suites: &[&str]| TlsOptions {
        min_version,
        cipher_suites: Some(names(suites)),
        ..TlsOptions::default()
    };

    let err = server_config(
        Arc::clone(&resolver),
        &opts(TlsVersion::Tls12, &["TLS_FOO"]),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("unknown cipher suite `TLS_FOO` (known: "),
        "{msg}"
    );
    assert!(msg.contains("TLS13_AES_128_GCM_SHA256"), "{msg}");

    let only12 = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"];
    let err = server_config(Arc::clone(&resolver), &opts(TlsVersion::Tls12, &only12)).unwrap_err();
    assert_eq!(err.to_string(), "cipher suites leave no suite for TLS 1.3");
    let err = server_config(Arc::clone(&resolver), &opts(TlsVersion::Tls13, &only12)).unwrap_err();
    assert!(matches!(
        err,
        CertError::NoSuiteForVersion(TlsVersion::Tls13)
    ));

    let only13 = ["TLS13_AES_128_GCM_SHA256"];
    let err = server_config(Arc::clone(&resolver), &opts(TlsVersion::Tls12, &only13)).unwrap_err();
    assert_eq!(err.to_string(), "cipher suites leave no suite for TLS 1.2");
    assert!(server_config(Arc::clone(&resolver), &opts(TlsVersion::Tls13, &only13)).is_ok());

    let empty: [&str; 0] = [];
    assert!(server_config(resolver, &opts(TlsVersion::Tls13, &empty)).is_err());
}
