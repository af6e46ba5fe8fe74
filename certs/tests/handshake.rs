//! Real TLS handshakes over loopback TCP against the resolver and server config.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use rustls::crypto::ring::{cipher_suite, default_provider};
use rustls::version::{TLS12, TLS13};
use rustls::{CipherSuite, ClientConfig, RootCertStore};
use tollgate_certs::{CertResolver, CertStore, TlsOptions, TlsVersion, server_config};

const BOTH: &[&rustls::SupportedProtocolVersion] = &[&TLS13, &TLS12];

fn resolver(sources: &[tollgate_certs::CertSource]) -> Arc<CertResolver> {
    Arc::new(CertResolver::new(CertStore::build(sources).expect("store")))
}

#[tokio::test]
async fn each_hostname_gets_its_own_certificate() {
    let a = cert(&["a.example"]);
    let b = cert(&["b.example"]);
    let config = server_config(resolver(&[a.clone(), b.clone()]), &TlsOptions::default()).unwrap();
    let (addr, mut events) = spawn_server(config).await;

    for (name, want) in [("a.example", &a), ("b.example", &b)] {
        let mut tls = connect(addr, client(&[&a, &b], BOTH), name)
            .await
            .expect(name);
        assert_eq!(peer_leaf(&tls), leaf_der(want), "{name}");
        assert!(matches!(
            next_event(&mut events).await,
            ServerEvent::HandshakeOk
        ));
        assert_echo(&mut tls, name.as_bytes()).await;
    }
    assert_ne!(leaf_der(&a), leaf_der(&b));
}

#[tokio::test]
async fn wildcard_certificate_serves_one_label_below() {
    let wild = cert(&["*.tenant.example"]);
    let config = server_config(
        resolver(std::slice::from_ref(&wild)),
        &TlsOptions::default(),
    )
    .unwrap();
    let (addr, mut events) = spawn_server(config).await;

    let mut tls = connect(addr, client(&[&wild], BOTH), "a.tenant.example")
        .await
        .expect("wildcard handshake");
    assert_eq!(peer_leaf(&tls), leaf_der(&wild));
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::HandshakeOk
    ));
    assert_echo(&mut tls, b"hello").await;

    let deeper = connect(addr, client(&[&wild], BOTH), "a.b.tenant.example").await;
    assert!(
        deeper.is_err(),
        "two labels below the wildcard must not match"
    );
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::HandshakeFailed(_)
    ));
}

#[tokio::test]
async fn unknown_sni_fails_on_both_ends_without_panic() {
    let a = cert(&["a.example"]);
    let config = server_config(resolver(std::slice::from_ref(&a)), &TlsOptions::default()).unwrap();
    let (addr, mut events) = spawn_server(config).await;

    let err = connect(addr, client(&[&a], BOTH), "nobody.example")
        .await
        .expect_err("handshake must fail");
    assert!(!err.to_string().is_empty());
    match next_event(&mut events).await {
        ServerEvent::HandshakeFailed(msg) => assert!(!msg.is_empty()),
        other => panic!("server side: {other:?}"),
    }

    // The server keeps serving known names afterwards.
    let tls = connect(addr, client(&[&a], BOTH), "a.example")
        .await
        .expect("known name");
    assert_eq!(peer_leaf(&tls), leaf_der(&a));
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::HandshakeOk
    ));
}

#[tokio::test]
async fn missing_sni_uses_default_or_fails() {
    let a = cert(&["a.example"]);
    let mut no_sni = client(&[&a], BOTH);
    no_sni.enable_sni = false;

    let without =
        server_config(resolver(std::slice::from_ref(&a)), &TlsOptions::default()).unwrap();
    let (addr, mut events) = spawn_server(without).await;
    assert!(connect(addr, no_sni.clone(), "a.example").await.is_err());
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::HandshakeFailed(_)
    ));

    let store = CertStore::build(std::slice::from_ref(&a))
        .unwrap()
        .with_default("a.example")
        .unwrap();
    let with = server_config(Arc::new(CertResolver::new(store)), &TlsOptions::default()).unwrap();
    let (addr, mut events) = spawn_server(with).await;
    let tls = connect(addr, no_sni, "a.example")
        .await
        .expect("default cert");
    assert_eq!(peer_leaf(&tls), leaf_der(&a));
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::HandshakeOk
    ));
}

#[tokio::test]
async fn swap_affects_new_connections_only() {
    let old = cert(&["a.example"]);
    let new = cert(&["a.example"]);
    let resolver = resolver(std::slice::from_ref(&old));
    let config = server_config(Arc::clone(&resolver), &TlsOptions::default()).unwrap();
    let (addr, mut events) = spawn_server(config).await;
    let trust = || client(&[&old, &new], BOTH);

    let mut before = connect(addr, trust(), "a.example")
        .await
        .expect("before swap");
    assert_eq!(peer_leaf(&before), leaf_der(&old));
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::HandshakeOk
    ));

    resolver.swap(CertStore::build(std::slice::from_ref(&new)).unwrap());
    assert_eq!(
        resolver.current().summaries()[0].sha256_fingerprint,
        CertStore::build(std::slice::from_ref(&new))
            .unwrap()
            .summaries()[0]
            .sha256_fingerprint
    );

    let mut after = connect(addr, trust(), "a.example")
        .await
        .expect("after swap");
    assert_eq!(peer_leaf(&after), leaf_der(&new));
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::HandshakeOk
    ));

    assert_echo(&mut before, b"still here").await;
    assert_echo(&mut after, b"new one").await;
}

#[tokio::test]
async fn tls13_only_refuses_tls12_client() {
    let a = cert(&["a.example"]);
    let opts = TlsOptions {
        min_version: TlsVersion::Tls13,
        ..TlsOptions::default()
    };
    let config = server_config(resolver(std::slice::from_ref(&a)), &opts).unwrap();
    let (addr, mut events) = spawn_server(config).await;

    assert!(
        connect(addr, client(&[&a], &[&TLS12]), "a.example")
            .await
            .is_err()
    );
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::HandshakeFailed(_)
    ));

    let tls = connect(addr, client(&[&a], BOTH), "a.example")
        .await
        .expect("tls 1.3 client");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn default_config_still_accepts_tls12_client() {
    let a = cert(&["a.example"]);
    let config = server_config(resolver(std::slice::from_ref(&a)), &TlsOptions::default()).unwrap();
    let (addr, _events) = spawn_server(config).await;
    let mut tls = connect(addr, client(&[&a], &[&TLS12]), "a.example")
        .await
        .expect("tls 1.2");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_echo(&mut tls, b"twelve").await;
}

#[tokio::test]
async fn cipher_suite_restriction_is_honored() {
    let a = cert(&["a.example"]);
    let opts = TlsOptions {
        min_version: TlsVersion::Tls12,
        cipher_suites: Some(vec![
            "TLS13_AES_256_GCM_SHA384".to_owned(),
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".to_owned(),
        ]),
        ..TlsOptions::default()
    };
    let config = server_config(resolver(std::slice::from_ref(&a)), &opts).unwrap();
    let (addr, mut events) = spawn_server(config).await;

    // The default client prefers AES-128; the server only allows AES-256.
    let mut tls13 = connect(addr, client(&[&a], BOTH), "a.example")
        .await
        .expect("1.3");
    assert_eq!(
        tls13
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| s.suite()),
        Some(CipherSuite::TLS13_AES_256_GCM_SHA384)
    );
    assert_echo(&mut tls13, b"aes256").await;
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::HandshakeOk
    ));

    let tls12 = connect(addr, client(&[&a], &[&TLS12]), "a.example")
        .await
        .expect("1.2");
    assert_eq!(
        tls12
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| s.suite()),
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
    );
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::HandshakeOk
    ));

    // A client offering only an excluded suite cannot connect.
    let mut provider = default_provider();
    provider.cipher_suites = vec![cipher_suite::TLS13_AES_128_GCM_SHA256];
    let mut roots = RootCertStore::empty();
    roots.add(leaf_der(&a)).unwrap();
    let narrow = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert!(connect(addr, narrow, "a.example").await.is_err());
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::HandshakeFailed(_)
    ));
}

#[tokio::test]
async fn alpn_is_negotiated() {
    let a = cert(&["a.example"]);
    let config = server_config(resolver(std::slice::from_ref(&a)), &TlsOptions::default()).unwrap();
    let (addr, _events) = spawn_server(config).await;
    for proto in [&b"h2"[..], &b"http/1.1"[..]] {
        let mut cfg = client(&[&a], BOTH);
        cfg.alpn_protocols = vec![proto.to_vec()];
        let tls = connect(addr, cfg, "a.example").await.expect("alpn");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(proto));
    }
}
