//! Bearer tokens: compact JWS split and decode (`filters/src/oidc/jws.rs`, crate-private,
//! reached through the public `verify` and `peek_issuer` of `oidc/verify.rs`), the claim
//! checks behind it (`oidc/claims.rs`) and JWKS documents (`JwkSet::parse`, `oidc/jwk.rs`).
//! No network: the keys are a static Ed25519 JWKS whose private half only this target has.
//!
//! Input: 1 mode byte, then the payload.
//!
//! Properties (all modes: no panic):
//! - 0: the payload as a token never verifies;
//! - 1: the payload as a JWKS parses to a non-empty set or an error, and a valid token
//!   checked against it does not panic;
//! - 2: a token with a fixed header and the payload as its claims, signed with the key:
//!   when it verifies, the result is what the spec demands (issuer, unexpired with leeway,
//!   an accepted audience, a subject, the required claims, `at+jwt` when required); with
//!   one signature bit flipped, or with `alg: none`, it never verifies;
//! - 3: as 2 with the header from the payload too (up to the first NUL byte).
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use std::sync::LazyLock;
use tollgate_filters::oidc::{JwkSet, VerifiedToken, peek_issuer, verify};
use tollgate_routing::OidcIssuerSpec;

const NOW: i64 = 1_800_000_000;
const ISSUER: &str = "https://issuer.test";

struct Fixture {
    key: Ed25519KeyPair,
    keys: JwkSet,
    spec: OidcIssuerSpec,
    strict: OidcIssuerSpec,
    /// A token that verifies against `keys` and `spec`.
    good: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("seed");
    let x = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
    let jwks =
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "use": "sig"}]});
    let keys = JwkSet::parse(jwks.to_string().as_bytes()).expect("static JWKS");
    let spec: OidcIssuerSpec = serde_json::from_value(json!({
        "name": "fuzz",
        "issuer": ISSUER,
        "audiences": ["api", "other"],
        "required_claims": ["tenant"],
        "roles_claim": "custom.roles",
        "client_id": "web",
    }))
    .expect("spec");
    let mut strict = spec.clone();
    strict.require_at_jwt = true;
    let claims = json!({"iss": ISSUER, "sub": "u", "aud": "api", "exp": NOW + 60, "tenant": "t"});
    let good = sign(
        &key,
        br#"{"alg":"EdDSA","kid":"k1"}"#,
        claims.to_string().as_bytes(),
    );
    verify(&good, &spec, &keys, NOW).expect("fixture token verifies");
    Fixture {
        key,
        keys,
        spec,
        strict,
        good,
    }
});

fn sign(key: &Ed25519KeyPair, header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn check_verified(t: &VerifiedToken, spec: &OidcIssuerSpec) {
    assert_eq!(t.issuer, spec.issuer);
    assert_eq!(t.claims.get("iss").and_then(Value::as_str), Some(ISSUER));
    assert!(t.expires_at.saturating_add(spec.leeway_secs as i64) >= NOW);
    assert!(t.audiences.iter().any(|a| spec.audiences.contains(a)));
    assert!(!t.subject.is_empty());
    assert_eq!(
        t.claims.get("sub").and_then(Value::as_str),
        Some(t.subject.as_str())
    );
    assert!(t.claims.get("tenant").is_some_and(|v| !v.is_null()));
}

fn check_signed(f: &Fixture, header: &[u8], payload: &[u8], typ: Option<&str>) {
    let token = sign(&f.key, header, payload);
    for spec in [&f.spec, &f.strict] {
        if let Ok(t) = verify(&token, spec, &f.keys, NOW) {
            check_verified(&t, spec);
            if spec.require_at_jwt {
                let typ = typ
                    .expect("at+jwt required but no typ")
                    .to_ascii_lowercase();
                assert!(typ == "at+jwt" || typ == "application/at+jwt", "{typ}");
            }
            assert_eq!(peek_issuer(&token).as_deref(), Ok(ISSUER));
        }
    }
    // One flipped signature bit, or no signature at all, never verifies.
    let (input, sig) = token.rsplit_once('.').expect("three parts");
    let mut raw = URL_SAFE_NO_PAD.decode(sig).expect("own signature");
    let bit = payload.first().copied().unwrap_or(0) as usize % (raw.len() * 8);
    raw[bit / 8] ^= 1 << (bit % 8);
    let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&raw));
    assert!(verify(&forged, &f.spec, &f.keys, NOW).is_err());
    assert!(verify(&format!("{input}."), &f.spec, &f.keys, NOW).is_err());
    // The same claims unsigned (`alg: none`) never verify.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(payload)
    );
    assert!(verify(&none, &f.spec, &f.keys, NOW).is_err());
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            let token = String::from_utf8_lossy(payload);
            let _ = peek_issuer(&token);
            assert!(
                verify(&token, &f.spec, &f.keys, NOW).is_err(),
                "{token:?} verified"
            );
        }
        1 => {
            if let Ok(set) = JwkSet::parse(payload) {
                assert!(!set.is_empty());
                let _ = set.kids();
                let _ = verify(&f.good, &f.spec, &set, NOW);
            }
        }
        2 => {
            let (header, typ): (&[u8], Option<&str>) = match mode >> 2 & 3 {
                0 => (br#"{"alg":"EdDSA","kid":"k1"}"#, None),
                1 => (
                    br#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}"#,
                    Some("at+jwt"),
                ),
                2 => (br#"{"alg":"EdDSA","typ":"JWT"}"#, Some("JWT")),
                _ => (br#"{"alg":"EdDSA","kid":"k2"}"#, None),
            };
            check_signed(f, header, payload, typ);
        }
        _ => {
            let cut = payload
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(payload.len());
            let header = &payload[..cut];
            let claims = payload.get(cut + 1..).unwrap_or_default();
            let typ = serde_json::from_slice::<Value>(header)
                .ok()
                .and_then(|h| h.get("typ").and_then(Value::as_str).map(str::to_owned));
            check_signed(f, header, claims, typ.as_deref());
        }
    }
});
