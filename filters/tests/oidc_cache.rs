//! The verified-token cache of `IssuerKeys` and `IssuerRegistry`: hits skip the
//! signature but never the clock, the key set or the route's choice of issuers;
//! refusals are never remembered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "fixtures/oidc_support.rs"]
mod support;

use serde_json::{Value, json};
use std::sync::Arc;
use support::{NOW, Signer, TestIdp, claims, jwks, spec, wait_for_keys};
use tollgate_filters::oidc::{IssuerKeys, IssuerRegistry, TokenError};

/// Keys loaded once, synchronously, with no refresh loop running: every fetch in
/// these tests is an explicit `refresh()` or an on-demand refetch.
async fn loaded(idp: &TestIdp, min_refetch_secs: u64) -> Arc<IssuerKeys> {
    let mut s = spec("main", &idp.issuer());
    s.min_refetch_secs = min_refetch_secs;
    let keys = IssuerKeys::new(s).unwrap();
    keys.refresh().await.unwrap();
    keys
}

fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

/// (hits, misses) of `keys`' cache.
fn stats(keys: &IssuerKeys) -> (u64, u64) {
    (keys.cache_hits(), keys.cache_misses())
}

#[tokio::test]
async fn a_second_verification_is_served_from_the_cache() {
    let signers = [
        Signer::rsa("RS256", "rsa"),
        Signer::rsa("PS256", "pss"),
        Signer::ec("ec"),
        Signer::ed("ed"),
    ];
    let all: Vec<&Signer> = signers.iter().collect();
    let idp = TestIdp::start(jwks(&all)).await;
    let keys = loaded(&idp, 10).await;
    assert_eq!(stats(&keys), (0, 0));

    for (i, s) in signers.iter().enumerate() {
        let token = s.sign(&claims(&idp.issuer(), NOW));
        let first = keys.verify(&token, NOW).await.unwrap();
        assert_eq!(stats(&keys), (i as u64, i as u64 + 1), "{}", s.alg);
        let second = keys.verify(&token, NOW + 1).await.unwrap();
        assert_eq!(stats(&keys), (i as u64 + 1, i as u64 + 1), "{}", s.alg);
        // the very result of the first verification, not a new one
        assert!(Arc::ptr_eq(&first, &second), "{}", s.alg);
        assert_eq!(second.subject, "user-1");
        assert_eq!(second.scopes, ["read", "write"]);
    }
    assert_eq!(keys.cached_tokens(), 4);
    // another token of the same key is its own entry
    let other = signers[2].sign(&with(claims(&idp.issuer(), NOW), json!({"sub": "user-2"})));
    assert_eq!(keys.verify(&other, NOW).await.unwrap().subject, "user-2");
    assert_eq!(stats(&keys), (4, 5));
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn a_cached_token_is_refused_past_its_exp_and_before_its_nbf() {
    let ec = Signer::ec("ec");
    let idp = TestIdp::start(jwks(&[&ec])).await;
    let keys = loaded(&idp, 10).await;
    let leeway = keys.spec().leeway_secs as i64;
    let iss = idp.issuer();

    // exp = NOW + 300, iat = NOW - 10
    let token = ec.sign(&claims(&iss, NOW));
    keys.verify(&token, NOW).await.unwrap();
    assert_eq!(stats(&keys), (0, 1));
    // up to exp plus the leeway, as the verifier allows
    keys.verify(&token, NOW + 300 + leeway).await.unwrap();
    assert_eq!(stats(&keys), (1, 1));
    // one second later: refused, and by the cache (no second signature check)
    assert_eq!(
        keys.verify(&token, NOW + 301 + leeway).await.unwrap_err(),
        TokenError::Expired
    );
    assert_eq!(stats(&keys), (2, 1));
    // the iat also still holds on a hit
    assert_eq!(
        keys.verify(&token, NOW - 11 - leeway).await.unwrap_err(),
        TokenError::NotYetValid
    );
    assert_eq!(stats(&keys), (3, 1));

    // nbf within the leeway: good now, cached; refused by the cache at an earlier now
    let early = ec.sign(&with(claims(&iss, NOW), json!({"nbf": NOW + 20})));
    keys.verify(&early, NOW).await.unwrap();
    assert_eq!(stats(&keys), (3, 2));
    keys.verify(&early, NOW + 20 - leeway).await.unwrap();
    assert_eq!(
        keys.verify(&early, NOW + 19 - leeway).await.unwrap_err(),
        TokenError::NotYetValid
    );
    assert_eq!(stats(&keys), (5, 2));

    // a token accepted only through the leeway (exp passed) is never cached
    let ending = ec.sign(&with(claims(&iss, NOW), json!({"exp": NOW - 5})));
    keys.verify(&ending, NOW).await.unwrap();
    keys.verify(&ending, NOW).await.unwrap();
    assert_eq!(stats(&keys), (5, 4));
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_key_is_gone() {
    let old = Signer::ec("2024");
    let new = Signer::rsa("RS256", "2025");
    let idp = TestIdp::start(jwks(&[&old])).await;
    let keys = loaded(&idp, 10).await;
    let iss = idp.issuer();
    let token = old.sign(&claims(&iss, NOW));
    keys.verify(&token, NOW).await.unwrap();
    keys.verify(&token, NOW).await.unwrap();
    assert_eq!(stats(&keys), (1, 1));

    // an unchanged JWKS keeps the cache
    keys.refresh().await.unwrap();
    keys.verify(&token, NOW).await.unwrap();
    assert_eq!(stats(&keys), (2, 1));

    // a key added: the set changed, so the token is verified again (and still good)
    idp.set_jwks(jwks(&[&old, &new]));
    keys.refresh().await.unwrap();
    keys.verify(&token, NOW).await.unwrap();
    assert_eq!(stats(&keys), (2, 2));
    keys.verify(&token, NOW).await.unwrap();
    assert_eq!(stats(&keys), (3, 2));

    // the signing key removed: refused, though it verified a moment ago
    idp.set_jwks(jwks(&[&new]));
    keys.refresh().await.unwrap();
    assert_eq!(
        keys.verify(&token, NOW).await.unwrap_err(),
        TokenError::UnknownKey
    );
    assert_eq!(stats(&keys), (3, 3));

    // a key replaced under the same kid: the old signature no longer holds
    let replaced = Signer::ec("2025");
    let by_new = new.sign(&claims(&iss, NOW));
    keys.verify(&by_new, NOW).await.unwrap();
    keys.verify(&by_new, NOW).await.unwrap();
    assert_eq!(stats(&keys), (4, 4));
    idp.set_jwks(jwks(&[&replaced]));
    keys.refresh().await.unwrap();
    assert_eq!(
        keys.verify(&by_new, NOW).await.unwrap_err(),
        TokenError::UnsupportedAlgorithm // an RS256 token, the kid now names an EC key
    );
    assert_eq!(stats(&keys), (4, 5));
}

#[tokio::test]
async fn a_refusal_is_not_cached() {
    let known = Signer::ec("known");
    let late = Signer::ed("late");
    let idp = TestIdp::start(jwks(&[&known])).await;
    // refetch on unknown kids at any pace
    let keys = loaded(&idp, 0).await;
    let iss = idp.issuer();

    // refused for an unknown key, then accepted once the JWKS has it
    let token = late.sign(&claims(&iss, NOW));
    assert_eq!(
        keys.verify(&token, NOW).await.unwrap_err(),
        TokenError::UnknownKey
    );
    assert_eq!(
        keys.verify(&token, NOW).await.unwrap_err(),
        TokenError::UnknownKey
    );
    assert_eq!(stats(&keys), (0, 2));
    idp.set_jwks(jwks(&[&known, &late]));
    assert_eq!(keys.verify(&token, NOW).await.unwrap().subject, "user-1");
    assert_eq!(stats(&keys), (0, 3));
    keys.verify(&token, NOW).await.unwrap();
    assert_eq!(stats(&keys), (1, 3));

    // refused as expired at one time, accepted at another: no verdict sticks
    let token = known.sign(&claims(&iss, NOW));
    assert_eq!(
        keys.verify(&token, NOW + 1000).await.unwrap_err(),
        TokenError::Expired
    );
    assert!(keys.verify(&token, NOW).await.is_ok());
    assert_eq!(stats(&keys), (1, 5));

    // a bad signature is checked every time
    let forged = {
        let t = known.sign(&claims(&iss, NOW));
        let (head, _) = t.rsplit_once('.').unwrap();
        let other = known.sign(&with(claims(&iss, NOW), json!({"sub": "admin"})));
        format!("{head}.{}", other.rsplit_once('.').unwrap().1)
    };
    for _ in 0..2 {
        assert_eq!(
            keys.verify(&forged, NOW).await.unwrap_err(),
            TokenError::BadSignature
        );
    }
    assert_eq!(stats(&keys), (1, 7));
}

#[tokio::test]
async fn a_cache_hit_still_goes_through_the_routes_issuer_check() {
    let a_key = Signer::ec("a");
    let b_key = Signer::ec("b");
    let idp_a = TestIdp::start(jwks(&[&a_key])).await;
    let idp_b = TestIdp::start(jwks(&[&b_key])).await;
    let registry = IssuerRegistry::build(
        &[spec("a", &idp_a.issuer()), spec("b", &idp_b.issuer())],
        None,
    )
    .unwrap();
    let a = registry.by_name("a").unwrap().clone();
    let b = registry.by_name("b").unwrap().clone();
    wait_for_keys(&a).await;
    wait_for_keys(&b).await;
    let only_a = ["a".to_string()];
    let only_b = ["b".to_string()];
    let both = ["b".to_string(), "a".to_string()];

    let token = a_key.sign(&claims(&idp_a.issuer(), NOW));
    let first = registry.verify(&token, &only_a, NOW).await.unwrap();
    let second = registry.verify(&token, &only_a, NOW).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(stats(&a), (1, 1));
    assert_eq!(
        registry.verify(&token, &both, NOW).await.unwrap().issuer,
        idp_a.issuer()
    );
    assert_eq!(stats(&a), (2, 1));

    // cached by a, but this route accepts only b: refused, as before the cache
    for _ in 0..2 {
        assert_eq!(
            registry.verify(&token, &only_b, NOW).await.unwrap_err(),
            TokenError::UnknownIssuer
        );
        assert_eq!(
            registry.verify(&token, &[], NOW).await.unwrap_err(),
            TokenError::UnknownIssuer
        );
    }
    assert_eq!(stats(&a), (2, 1));
    assert_eq!(stats(&b), (0, 0));

    // the clock applies through the registry too
    assert_eq!(
        registry
            .verify(&token, &only_a, NOW + 1000)
            .await
            .unwrap_err(),
        TokenError::Expired
    );
    assert_eq!(stats(&a), (3, 1));

    // a reload that keeps issuer a keeps its cache
    let reloaded = IssuerRegistry::build(
        &[spec("a", &idp_a.issuer()), spec("b", &idp_b.issuer())],
        Some(&registry),
    )
    .unwrap();
    reloaded.verify(&token, &only_a, NOW).await.unwrap();
    assert_eq!(stats(&a), (4, 1));
    // a changed issuer starts empty
    let mut stricter = spec("a", &idp_a.issuer());
    stricter.required_claims = vec!["tenant".into()];
    let changed = IssuerRegistry::build(&[stricter], Some(&reloaded)).unwrap();
    wait_for_keys(changed.by_name("a").unwrap()).await;
    assert_eq!(
        changed.verify(&token, &only_a, NOW).await.unwrap_err(),
        TokenError::MissingClaim
    );
}
