//! IssuerKeys and IssuerRegistry against a local identity provider: discovery, JWKS
//! caching, rotation, rate-limited refetches, outages, fail-closed start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "fixtures/oidc_support.rs"]
mod support;

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::{NOW, Signer, TestIdp, claims, jwks, spec, wait_for_keys};
use tokio::task::JoinSet;
use tollgate_filters::oidc::{IssuerKeys, IssuerRegistry, TokenError};

fn random_kid() -> String {
    let mut bytes = [0u8; 12];
    SystemRandom::new().fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_fetch_then_verify_from_cache() {
    let ec = Signer::ec("ec-1");
    let idp = TestIdp::start(jwks(&[&ec])).await;
    let keys = IssuerKeys::new(spec("main", &idp.issuer())).unwrap();
    assert_eq!(keys.key_count(), 0);
    keys.start();
    keys.start(); // idempotent
    wait_for_keys(&keys).await;
    assert_eq!(keys.key_count(), 1);
    assert_eq!(keys.keys().unwrap().kids(), ["ec-1"]);

    for _ in 0..10 {
        let t = keys
            .verify(&ec.sign(&claims(&idp.issuer(), NOW)), NOW)
            .await
            .unwrap();
        assert_eq!(t.subject, "user-1");
        assert_eq!(t.issuer, idp.issuer());
    }
    assert_eq!(idp.discovery_hits(), 1);
    assert_eq!(idp.jwks_hits(), 1);

    // refusals that have nothing to do with keys do not fetch
    let expired =
        ec.sign(&json!({"iss": idp.issuer(), "sub": "u", "aud": "tollgate", "exp": NOW - 100}));
    assert_eq!(
        keys.verify(&expired, NOW).await.unwrap_err(),
        TokenError::Expired
    );
    assert_eq!(
        keys.verify("garbage", NOW).await.unwrap_err(),
        TokenError::Malformed
    );
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_picked_up_on_unknown_kid() {
    let old = Signer::ec("2024");
    let new = Signer::rsa("RS256", "2025");
    let idp = TestIdp::start(jwks(&[&old])).await;
    let mut s = spec("main", &idp.issuer());
    s.min_refetch_secs = 0;
    s.jwks_refresh_secs = 3600;
    let keys = IssuerKeys::new(s).unwrap();
    keys.start();
    wait_for_keys(&keys).await;
    let iss = idp.issuer();
    assert!(
        keys.verify(&old.sign(&claims(&iss, NOW)), NOW)
            .await
            .is_ok()
    );

    idp.set_jwks(jwks(&[&new]));
    let fetched = idp.jwks_hits();
    let t = keys
        .verify(&new.sign(&claims(&iss, NOW)), NOW)
        .await
        .unwrap();
    assert_eq!(t.subject, "user-1");
    assert_eq!(idp.jwks_hits(), fetched + 1);
    assert_eq!(keys.keys().unwrap().kids(), ["2025"]);
    // the retired key is gone
    assert_eq!(
        keys.verify(&old.sign(&claims(&iss, NOW)), NOW)
            .await
            .unwrap_err(),
        TokenError::UnknownKey
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_interval() {
    let ec = Signer::ec("real");
    let idp = TestIdp::start(jwks(&[&ec])).await;
    let mut s = spec("main", &idp.issuer());
    s.min_refetch_secs = 1;
    s.jwks_refresh_secs = 3600;
    let keys = IssuerKeys::new(s).unwrap();
    keys.start();
    wait_for_keys(&keys).await;
    // let the pacing interval of the first fetch pass
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = idp.jwks_hits();

    let flood = |keys: Arc<IssuerKeys>| {
        let mut tasks = JoinSet::new();
        for _ in 0..100 {
            let keys = keys.clone();
            let header = json!({"alg": "ES256", "kid": random_kid()});
            let token = ec.sign_with_header(&header, &claims(&keys.spec().issuer, NOW));
            tasks.spawn(async move { keys.verify(&token, NOW).await });
        }
        tasks
    };
    let results = flood(keys.clone()).join_all().await;
    assert!(results.iter().all(|r| *r == Err(TokenError::UnknownKey)));
    let during = idp.jwks_hits() - before;
    assert!(
        (1..=2).contains(&during),
        "{during} fetches for 100 unknown kids"
    );

    // right after: rate limited, no fetch at all
    let results = flood(keys.clone()).join_all().await;
    assert!(results.iter().all(|r| *r == Err(TokenError::UnknownKey)));
    assert_eq!(idp.jwks_hits() - before, during);

    // and the real key still works
    assert!(
        keys.verify(&ec.sign(&claims(&idp.issuer(), NOW)), NOW)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_survive_an_outage() {
    let ec = Signer::ec("ec");
    let mut idp = TestIdp::start(jwks(&[&ec])).await;
    let iss = idp.issuer();
    let mut s = spec("main", &iss);
    s.jwks_refresh_secs = 1;
    s.min_refetch_secs = 0;
    let keys = IssuerKeys::new(s).unwrap();
    keys.start();
    wait_for_keys(&keys).await;

    idp.stop().await;
    assert!(keys.verify(&ec.sign(&claims(&iss, NOW)), NOW).await.is_ok());
    assert_eq!(
        keys.refresh().await.unwrap_err(),
        TokenError::ProviderUnavailable
    );
    // a failed background refresh or two later
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(keys.key_count(), 1);
    assert!(keys.verify(&ec.sign(&claims(&iss, NOW)), NOW).await.is_ok());
    // unknown kids still just fail (the refetch fails, the keys stay)
    let stranger = Signer::ec("stranger");
    assert_eq!(
        keys.verify(&stranger.sign(&claims(&iss, NOW)), NOW)
            .await
            .unwrap_err(),
        TokenError::UnknownKey
    );
    assert_eq!(keys.key_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_never_reached_fails_closed() {
    let iss = TestIdp::unused_issuer().await;
    let ec = Signer::ec("ec");
    let token = ec.sign(&claims(&iss, NOW));

    let started = IssuerKeys::new(spec("main", &iss)).unwrap();
    started.start();
    let r = tokio::time::timeout(Duration::from_secs(30), started.verify(&token, NOW)).await;
    assert_eq!(
        r.expect("verify must return").unwrap_err(),
        TokenError::NoKeys
    );

    // never started: the on-demand fetch fails the same way
    let idle = IssuerKeys::new(spec("main", &iss)).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), idle.verify(&token, NOW)).await;
    assert_eq!(
        r.expect("verify must return").unwrap_err(),
        TokenError::NoKeys
    );
    assert_eq!(
        idle.refresh().await.unwrap_err(),
        TokenError::ProviderUnavailable
    );
    assert_eq!(idle.key_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_for_another_issuer_is_not_trusted() {
    let ec = Signer::ec("ec");
    let idp = TestIdp::start(jwks(&[&ec])).await;
    idp.set_discovery_issuer("https://someone-else.example.com");
    let keys = IssuerKeys::new(spec("main", &idp.issuer())).unwrap();
    assert_eq!(
        keys.refresh().await.unwrap_err(),
        TokenError::ProviderUnavailable
    );
    assert_eq!(idp.jwks_hits(), 0);
    assert_eq!(
        keys.verify(&ec.sign(&claims(&idp.issuer(), NOW)), NOW)
            .await
            .unwrap_err(),
        TokenError::NoKeys
    );
}

#[tokio::test]
async fn unusable_specs_are_refused() {
    for issuer in [
        "http://idp.example.com",
        "ftp://127.0.0.1",
        "idp.example.com",
        "https://u@idp.example.com",
    ] {
        assert_eq!(
            IssuerKeys::new(spec("x", issuer)).unwrap_err(),
            TokenError::InvalidConfig,
            "{issuer}"
        );
    }
    let mut s = spec("x", "https://idp.example.com");
    s.ca_file = Some("/nonexistent/ca.pem".into());
    assert_eq!(IssuerKeys::new(s).unwrap_err(), TokenError::InvalidConfig);
    assert!(IssuerKeys::new(spec("x", "https://idp.example.com/realms/a")).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_picks_the_issuer_by_iss_and_keeps_caches_across_reloads() {
    let a_key = Signer::ec("a");
    let b_key = Signer::ed("b");
    let idp_a = TestIdp::start(jwks(&[&a_key])).await;
    let idp_b = TestIdp::start(jwks(&[&b_key])).await;
    let (iss_a, iss_b) = (idp_a.issuer(), idp_b.issuer());
    let specs = vec![spec("a", &iss_a), spec("b", &iss_b)];
    let registry = IssuerRegistry::build(&specs, None).unwrap();
    assert_eq!(registry.len(), 2);
    wait_for_keys(registry.by_name("a").unwrap()).await;
    wait_for_keys(registry.by_name("b").unwrap()).await;

    let only_a = vec!["a".to_string()];
    let both = vec!["a".to_string(), "b".to_string()];
    let token_a = a_key.sign(&claims(&iss_a, NOW));
    let token_b = b_key.sign(&claims(&iss_b, NOW));
    assert_eq!(
        registry
            .verify(&token_a, &only_a, NOW)
            .await
            .unwrap()
            .issuer,
        iss_a
    );
    assert_eq!(
        registry.verify(&token_b, &both, NOW).await.unwrap().issuer,
        iss_b
    );
    assert_eq!(
        registry.verify(&token_b, &only_a, NOW).await.unwrap_err(),
        TokenError::UnknownIssuer
    );
    assert_eq!(
        registry.verify(&token_a, &[], NOW).await.unwrap_err(),
        TokenError::UnknownIssuer
    );
    let stranger = a_key.sign(&claims("https://elsewhere.example.com", NOW));
    assert_eq!(
        registry.verify(&stranger, &both, NOW).await.unwrap_err(),
        TokenError::UnknownIssuer
    );
    // a token claiming issuer a but signed by b's key
    let forged = b_key.sign_with_header(&json!({"alg": "EdDSA", "kid": "a"}), &claims(&iss_a, NOW));
    assert_eq!(
        registry.verify(&forged, &both, NOW).await.unwrap_err(),
        TokenError::UnsupportedAlgorithm
    );
    assert_eq!(
        registry.verify("x.y.z", &both, NOW).await.unwrap_err(),
        TokenError::Malformed
    );
    assert_eq!(
        IssuerRegistry::empty()
            .verify(&token_a, &both, NOW)
            .await
            .unwrap_err(),
        TokenError::UnknownIssuer
    );

    // reload: a unchanged keeps its IssuerKeys (and keys), b changed gets a new one
    let mut changed_b = spec("b", &iss_b);
    changed_b.audiences.push("other".into());
    let reloaded = IssuerRegistry::build(&[spec("a", &iss_a), changed_b], Some(&registry)).unwrap();
    assert!(Arc::ptr_eq(
        reloaded.by_name("a").unwrap(),
        registry.by_name("a").unwrap()
    ));
    assert!(!Arc::ptr_eq(
        reloaded.by_name("b").unwrap(),
        registry.by_name("b").unwrap()
    ));
    assert_eq!(reloaded.by_name("a").unwrap().key_count(), 1);
    let fetched_a = idp_a.jwks_hits();
    assert!(reloaded.verify(&token_a, &only_a, NOW).await.is_ok());
    assert_eq!(idp_a.jwks_hits(), fetched_a);
    drop(registry);
    assert!(reloaded.verify(&token_a, &only_a, NOW).await.is_ok());
    wait_for_keys(reloaded.by_name("b").unwrap()).await;
    assert!(reloaded.verify(&token_b, &both, NOW).await.is_ok());
    assert!(reloaded.by_issuer(&iss_b).is_some());

    // the same issuer twice is a configuration error
    let dup = IssuerRegistry::build(&[spec("a", &iss_a), spec("a2", &iss_a)], None);
    assert_eq!(dup.unwrap_err(), TokenError::InvalidConfig);
}
