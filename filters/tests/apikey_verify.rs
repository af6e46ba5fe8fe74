//! API key verification through the public API: generate → store → verify.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::{HeaderMap, HeaderValue};
use tollgate_filters::apikey::{
    KeyError, KeyKind, KeyStore, MAX_KEY_LEN, check_record, from_headers, generate, has_scopes,
    parse, sha256_hex,
};
use tollgate_routing::ApiKeySpec;

const NOW: i64 = 1_800_000_000;
const ORIGIN: &str = "https://shop.example.com";

fn record(key_id: &str, app: &str, kind: KeyKind, sha256: &str) -> ApiKeySpec {
    ApiKeySpec {
        key_id: key_id.into(),
        app: app.into(),
        kind,
        sha256: sha256.into(),
        scopes: vec!["orders:read".into(), "orders:write".into()],
        expires_at: None,
        allowed_origins: match kind {
            KeyKind::Public => vec![ORIGIN.into(), "http://localhost:3000".into()],
            KeyKind::Secret => vec![],
        },
    }
}

/// One key of each kind and environment for app `shop`, plus one for app `blog`.
struct Fixture {
    store: KeyStore,
    keys: Vec<(String, KeyKind, bool)>,
    other_app_key: String,
}

fn fixture() -> Fixture {
    let mut specs = Vec::new();
    let mut keys = Vec::new();
    for (i, (kind, live)) in [
        (KeyKind::Secret, true),
        (KeyKind::Secret, false),
        (KeyKind::Public, true),
        (KeyKind::Public, false),
    ]
    .into_iter()
    .enumerate()
    {
        let (key, hash) = generate(kind, live, "shop").unwrap();
        specs.push(record(&format!("k{i}"), "shop", kind, &hash));
        keys.push((key, kind, live));
    }
    let (other_app_key, hash) = generate(KeyKind::Secret, true, "blog").unwrap();
    specs.push(record("blog1", "blog", KeyKind::Secret, &hash));
    Fixture {
        store: KeyStore::build(&specs).unwrap(),
        keys,
        other_app_key,
    }
}

#[test]
fn round_trip_every_kind_and_environment() {
    let f = fixture();
    assert_eq!(f.store.len(), 5);
    for (i, (key, kind, live)) in f.keys.iter().enumerate() {
        let parsed = parse(key).unwrap();
        assert_eq!((parsed.kind, parsed.live), (*kind, *live));
        assert_eq!(parsed.app_prefix, "shop");
        let origin = (*kind == KeyKind::Public).then_some(ORIGIN);
        let id = f.store.verify(key, "shop", origin, NOW).unwrap();
        assert_eq!(id.key_id, format!("k{i}"));
        assert_eq!(id.app, "shop");
        assert_eq!(id.kind, *kind);
        assert!(has_scopes(&id, &["orders:read".into()]));
    }
}

#[test]
fn a_key_of_another_app_is_refused() {
    let f = fixture();
    assert_eq!(
        f.store.verify(&f.other_app_key, "shop", None, NOW),
        Err(KeyError::WrongApp)
    );
    assert!(f.store.verify(&f.other_app_key, "blog", None, NOW).is_ok());
    // The app prefix inside the key is a label, not the binding.
    let (key, hash) = generate(KeyKind::Secret, true, "shop").unwrap();
    let store = KeyStore::build(&[record("x", "blog", KeyKind::Secret, &hash)]).unwrap();
    assert_eq!(
        store.verify(&key, "shop", None, NOW),
        Err(KeyError::WrongApp)
    );
    assert!(store.verify(&key, "blog", None, NOW).is_ok());
}

#[test]
fn scopes_are_checked_by_the_caller() {
    let f = fixture();
    let id = f.store.verify(&f.keys[0].0, "shop", None, NOW).unwrap();
    assert!(has_scopes(&id, &[]));
    assert!(has_scopes(
        &id,
        &["orders:write".into(), "orders:read".into()]
    ));
    assert!(!has_scopes(&id, &["admin".into()]));
    assert!(!has_scopes(&id, &["orders:read".into(), "refunds".into()]));
}

#[test]
fn expired_keys_are_refused() {
    let (key, hash) = generate(KeyKind::Secret, true, "shop").unwrap();
    let mut spec = record("k", "shop", KeyKind::Secret, &hash);
    spec.expires_at = Some(NOW);
    let store = KeyStore::build(&[spec]).unwrap();
    assert!(store.verify(&key, "shop", None, NOW - 1).is_ok());
    assert_eq!(
        store.verify(&key, "shop", None, NOW),
        Err(KeyError::Expired)
    );
    assert_eq!(
        store.verify(&key, "shop", None, NOW + 86_400),
        Err(KeyError::Expired)
    );
}

#[test]
fn revoked_keys_are_unknown() {
    let f = fixture();
    let (revoked, _, _) = &f.keys[0];
    assert!(f.store.verify(revoked, "shop", None, NOW).is_ok());
    // Revocation: the next config snapshot no longer has the record.
    let specs: Vec<ApiKeySpec> = f
        .keys
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, (k, kind, _))| record(&format!("k{i}"), "shop", *kind, &sha256_hex(k)))
        .collect();
    let next = KeyStore::build(&specs).unwrap();
    assert_eq!(
        next.verify(revoked, "shop", None, NOW),
        Err(KeyError::Unknown)
    );
    assert!(
        next.verify(&f.keys[1].0, "shop", None, NOW).is_ok(),
        "others still work"
    );
    // A well-formed key never issued is unknown too.
    let (never, _) = generate(KeyKind::Secret, true, "shop").unwrap();
    assert_eq!(
        f.store.verify(&never, "shop", None, NOW),
        Err(KeyError::Unknown)
    );
}

#[test]
fn malformed_keys_are_refused_before_lookup() {
    let f = fixture();
    let good = &f.keys[0].0;
    let secret = parse(good).unwrap().secret.to_string();
    let cases = [
        String::new(),
        "sk_live_".into(),
        format!("xk_live_shop_{secret}"),
        format!("Sk_live_shop_{secret}"),
        format!("sk_prod_shop_{secret}"),
        format!("sk_Live_shop_{secret}"),
        format!("sk_live_Shop_{secret}"),
        format!("sk_live_sh.p_{secret}"),
        format!("sk_live_abcdefghijklm_{secret}"),
        format!("sk_live__{secret}"),
        format!("sk_live_shop_{}", &secret[..31]),
        format!("sk_live_shop_{secret}0"),
        format!("sk_live_shop_{}+", &secret[..31]),
        format!("sk_live_shop_{secret}_"),
        format!("sk_live_shop_extra_{secret}"),
        format!("sk_live_sh_op_{secret}"),
        format!("sk_live_shöp_{}", &secret[..30]),
        format!("sk_live_shop_{}ü", &secret[..30]),
        format!("{good}\n"),
        format!(" {good}"),
        format!("{good}{}", "A".repeat(10 << 20)),
        "\u{0}".repeat(MAX_KEY_LEN),
    ];
    for key in &cases {
        assert_eq!(
            f.store.verify(key, "shop", Some(ORIGIN), NOW),
            Err(KeyError::Malformed),
            "{:?}",
            &key[..key.len().min(80)]
        );
    }
}

#[test]
fn kind_must_match_the_record() {
    // The record says Public, but the key presented (and hashed) is an `sk_` key.
    let (sk, hash) = generate(KeyKind::Secret, true, "shop").unwrap();
    let store = KeyStore::build(&[record("k", "shop", KeyKind::Public, &hash)]).unwrap();
    assert_eq!(
        store.verify(&sk, "shop", Some(ORIGIN), NOW),
        Err(KeyError::KindMismatch)
    );
    // And the other way round.
    let (pk, hash) = generate(KeyKind::Public, true, "shop").unwrap();
    let store = KeyStore::build(&[record("k", "shop", KeyKind::Secret, &hash)]).unwrap();
    assert_eq!(
        store.verify(&pk, "shop", Some(ORIGIN), NOW),
        Err(KeyError::KindMismatch)
    );
}

#[test]
fn public_keys_need_an_allowed_origin() {
    let f = fixture();
    let (pk, _, _) = &f.keys[2];
    for ok in [
        ORIGIN,
        "HTTPS://SHOP.EXAMPLE.COM",
        "https://Shop.Example.com",
        "http://localhost:3000",
    ] {
        assert!(f.store.verify(pk, "shop", Some(ok), NOW).is_ok(), "{ok}");
    }
    for denied in [
        Some("https://evil.example.com"),
        Some("http://shop.example.com"),
        Some("https://shop.example.com:8443"),
        Some("https://shop.example.com/"),
        Some("https://shop.example.com.evil.com"),
        Some("http://localhost:3001"),
        Some("null"),
        Some(""),
        None,
    ] {
        assert_eq!(
            f.store.verify(pk, "shop", denied, NOW),
            Err(KeyError::OriginNotAllowed),
            "{denied:?}"
        );
    }
    // A public key with no allowed origins can never be used.
    let (pk, hash) = generate(KeyKind::Public, true, "shop").unwrap();
    let mut spec = record("k", "shop", KeyKind::Public, &hash);
    spec.allowed_origins.clear();
    let store = KeyStore::build(&[spec]).unwrap();
    assert_eq!(
        store.verify(&pk, "shop", Some(ORIGIN), NOW),
        Err(KeyError::OriginNotAllowed)
    );
}

#[test]
fn secret_keys_ignore_origin() {
    let f = fixture();
    let (sk, _, _) = &f.keys[0];
    assert!(f.store.verify(sk, "shop", None, NOW).is_ok());
    assert!(
        f.store
            .verify(sk, "shop", Some("https://anything.example"), NOW)
            .is_ok()
    );
}

#[test]
fn build_rejects_bad_hashes() {
    let good = sha256_hex("sk_live_shop_0123456789abcdefghijABCDEFGHIJzZ");
    for bad in [
        String::new(),
        "00".into(),
        good.to_uppercase(),
        good[1..].to_string(),
        format!("{good}00"),
        format!("{}z", &good[1..]),
        format!("{} ", &good[1..]),
        format!("sha256:{good}"),
    ] {
        let spec = record("k", "shop", KeyKind::Secret, &bad);
        assert_eq!(
            KeyStore::build(std::slice::from_ref(&spec)).map(|s| s.len()),
            Err(KeyError::InvalidRecord),
            "{bad:?}"
        );
        assert_eq!(check_record(&spec), Err(KeyError::InvalidRecord), "{bad:?}");
    }
    let spec = record("k", "shop", KeyKind::Secret, &good);
    assert_eq!(
        KeyStore::build(std::slice::from_ref(&spec)).map(|s| s.len()),
        Ok(1)
    );
    assert_eq!(check_record(&spec), Ok(()));
}

#[test]
fn build_rejects_duplicate_hashes() {
    let (_, hash) = generate(KeyKind::Secret, true, "shop").unwrap();
    let specs = [
        record("a", "shop", KeyKind::Secret, &hash),
        record("b", "blog", KeyKind::Secret, &hash),
    ];
    assert_eq!(
        KeyStore::build(&specs).map(|s| s.len()),
        Err(KeyError::InvalidRecord)
    );
}

#[test]
fn build_rejects_inexact_origins() {
    let (_, hash) = generate(KeyKind::Public, true, "shop").unwrap();
    for bad in ["*", "null", "https://shop.example.com/", "shop.example.com"] {
        let mut spec = record("k", "shop", KeyKind::Public, &hash);
        spec.allowed_origins = vec![bad.into()];
        assert_eq!(check_record(&spec), Err(KeyError::InvalidRecord), "{bad}");
        assert_eq!(
            KeyStore::build(&[spec]).map(|s| s.len()),
            Err(KeyError::InvalidRecord),
            "{bad}"
        );
    }
    let mut spec = record("k", "shop", KeyKind::Public, &hash);
    spec.allowed_origins = vec!["https://shop.example.com:8443".into()];
    assert_eq!(check_record(&spec), Ok(()));
}

#[test]
fn empty_store() {
    let store = KeyStore::empty();
    assert_eq!(store.len(), 0);
    assert!(store.is_empty());
    assert_eq!(KeyStore::build(&[]).map(|s| s.len()), Ok(0));
}

#[test]
fn headers_to_identity() {
    let f = fixture();
    let (sk, _, _) = &f.keys[0];
    let (pk, _, _) = &f.keys[2];

    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("bearer {sk}")).unwrap(),
    );
    let key = from_headers(&h).unwrap().unwrap();
    assert_eq!(f.store.verify(key, "shop", None, NOW).unwrap().key_id, "k0");

    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_str(pk).unwrap());
    h.insert("origin", HeaderValue::from_static(ORIGIN));
    let key = from_headers(&h).unwrap().unwrap();
    let origin = h.get("origin").and_then(|v| v.to_str().ok());
    assert_eq!(
        f.store.verify(key, "shop", origin, NOW).unwrap().key_id,
        "k2"
    );

    // Both headers, same key: fine. Different keys: ambiguous.
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {sk}")).unwrap(),
    );
    h.insert("x-api-key", HeaderValue::from_str(sk).unwrap());
    assert_eq!(from_headers(&h), Ok(Some(sk.as_str())));
    h.insert("x-api-key", HeaderValue::from_str(pk).unwrap());
    assert_eq!(from_headers(&h), Err(KeyError::Ambiguous));

    // A JWT bearer is not an API key.
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.sig"),
    );
    assert_eq!(from_headers(&h), Ok(None));
    assert_eq!(from_headers(&HeaderMap::new()), Ok(None));

    // A garbage x-api-key is an attempt, refused as malformed by verify.
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_static("hunter2"));
    let key = from_headers(&h).unwrap().unwrap();
    assert_eq!(
        f.store.verify(key, "shop", None, NOW),
        Err(KeyError::Malformed)
    );
}
