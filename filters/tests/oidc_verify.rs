//! Pure token verification with real signatures: algorithms, keys, claims, types.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "fixtures/oidc_support.rs"]
mod support;

use ring::hmac;
use serde_json::{Value, json};
use support::{NOW, Signer, b64, b64_json, claims, jwks, spec};
use tollgate_filters::oidc::{JwkSet, MAX_TOKEN_LEN, TokenError, peek_issuer, verify};
use tollgate_routing::OidcIssuerSpec;

const ISS: &str = "https://idp.example.com/realms/main";

fn keys(signers: &[&Signer]) -> JwkSet {
    JwkSet::parse(jwks(signers).as_bytes()).unwrap()
}

fn issuer() -> OidcIssuerSpec {
    spec("main", ISS)
}

fn check(
    signer: &Signer,
    claims: &Value,
) -> Result<tollgate_filters::oidc::VerifiedToken, TokenError> {
    verify(&signer.sign(claims), &issuer(), &keys(&[signer]), NOW)
}

fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

#[test]
fn every_supported_algorithm_verifies() {
    let signers = [
        Signer::rsa("RS256", "rsa-pkcs1"),
        Signer::rsa("PS256", "rsa-pss"),
        Signer::ec("ec"),
        Signer::ed("ed"),
    ];
    let all: Vec<&Signer> = signers.iter().collect();
    let set = keys(&all);
    assert_eq!(set.len(), 4);
    for s in &signers {
        let t = verify(&s.sign(&claims(ISS, NOW)), &issuer(), &set, NOW)
            .unwrap_or_else(|e| panic!("{}: {e:?}", s.alg));
        assert_eq!(t.issuer, ISS);
        assert_eq!(t.subject, "user-1");
        assert_eq!(t.client_id.as_deref(), Some("web"));
        assert_eq!(t.audiences, ["tollgate"]);
        assert_eq!(t.scopes, ["read", "write"]);
        assert!(t.roles.is_empty());
        assert_eq!(t.expires_at, NOW + 300);
        assert_eq!(t.claims["jti"], "j-1");
    }
}

#[test]
fn tampered_payload_is_refused() {
    for s in [
        Signer::rsa("RS256", "r"),
        Signer::rsa("PS256", "p"),
        Signer::ec("e"),
        Signer::ed("d"),
    ] {
        let token = s.sign(&claims(ISS, NOW));
        let parts: Vec<&str> = token.split('.').collect();
        let forged = b64_json(&with(claims(ISS, NOW), json!({"sub": "admin"})));
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(
            verify(&tampered, &issuer(), &keys(&[&s]), NOW).unwrap_err(),
            TokenError::BadSignature,
            "{}",
            s.alg
        );
    }
}

#[test]
fn tampered_signature_is_refused() {
    for s in [
        Signer::rsa("RS256", "r"),
        Signer::rsa("PS256", "p"),
        Signer::ec("e"),
        Signer::ed("d"),
    ] {
        let token = s.sign(&claims(ISS, NOW));
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut sig = base64_decode(sig);
        sig[7] ^= 0x01;
        let tampered = format!("{input}.{}", b64(&sig));
        assert_eq!(
            verify(&tampered, &issuer(), &keys(&[&s]), NOW).unwrap_err(),
            TokenError::BadSignature
        );
        // a truncated signature too
        let short = format!("{input}.{}", b64(&sig[..sig.len() - 1]));
        assert_eq!(
            verify(&short, &issuer(), &keys(&[&s]), NOW).unwrap_err(),
            TokenError::BadSignature
        );
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[test]
fn alg_none_is_refused() {
    let s = Signer::ec("e");
    let set = keys(&[&s]);
    let payload = b64_json(&claims(ISS, NOW));
    for alg in ["none", "None", "NONE", "nOnE"] {
        for header in [json!({"alg": alg}), json!({"alg": alg, "kid": "e"})] {
            for sig in ["", "AA"] {
                let token = format!("{}.{payload}.{sig}", b64_json(&header));
                assert_eq!(
                    verify(&token, &issuer(), &set, NOW).unwrap_err(),
                    TokenError::UnsupportedAlgorithm,
                    "{header} {sig:?}"
                );
            }
        }
    }
    // even if someone put `none` in the allow-list
    let mut lax = issuer();
    lax.algorithms.push("none".into());
    let token = format!("{}.{payload}.", b64_json(&json!({"alg": "none"})));
    assert_eq!(
        verify(&token, &lax, &set, NOW).unwrap_err(),
        TokenError::UnsupportedAlgorithm
    );
}

#[test]
fn hmac_with_the_rsa_public_key_as_secret_is_refused() {
    let rsa = Signer::rsa("RS256", "rsa");
    let set = keys(&[&rsa]);
    let jwk = rsa.jwk();
    let secrets: Vec<Vec<u8>> = vec![
        rsa.rsa_public_der(),
        base64_decode(jwk["n"].as_str().unwrap()),
        jwks(&[&rsa]).into_bytes(),
        jwk.to_string().into_bytes(),
    ];
    let mut lax = issuer();
    lax.algorithms
        .extend(["HS256", "HS384", "HS512"].map(String::from));
    for (alg, hmac_alg) in [
        ("HS256", hmac::HMAC_SHA256),
        ("HS384", hmac::HMAC_SHA384),
        ("HS512", hmac::HMAC_SHA512),
    ] {
        for secret in &secrets {
            for header in [json!({"alg": alg, "kid": "rsa"}), json!({"alg": alg})] {
                let input = format!("{}.{}", b64_json(&header), b64_json(&claims(ISS, NOW)));
                let tag = hmac::sign(&hmac::Key::new(hmac_alg, secret), input.as_bytes());
                let token = format!("{input}.{}", b64(tag.as_ref()));
                for s in [&issuer(), &lax] {
                    assert_eq!(
                        verify(&token, s, &set, NOW).unwrap_err(),
                        TokenError::UnsupportedAlgorithm
                    );
                }
            }
        }
    }
}

#[test]
fn algorithm_outside_the_issuers_allow_list_is_refused() {
    let rsa = Signer::rsa("RS256", "rsa");
    let ec = Signer::ec("ec");
    let set = keys(&[&rsa, &ec]);
    let mut only_es = issuer();
    only_es.algorithms = vec!["ES256".into()];
    assert_eq!(
        verify(&rsa.sign(&claims(ISS, NOW)), &only_es, &set, NOW).unwrap_err(),
        TokenError::UnsupportedAlgorithm
    );
    assert!(verify(&ec.sign(&claims(ISS, NOW)), &only_es, &set, NOW).is_ok());
    // unknown names and near misses
    for alg in [
        "RS384", "ES512", "Ed25519", "rs256", "EDDSA", "ES256K", "PS512",
    ] {
        let token = rsa.sign_with_header(&json!({"alg": alg, "kid": "rsa"}), &claims(ISS, NOW));
        assert_eq!(
            verify(&token, &issuer(), &set, NOW).unwrap_err(),
            TokenError::UnsupportedAlgorithm,
            "{alg}"
        );
    }
}

#[test]
fn unknown_kid_is_refused() {
    let ec = Signer::ec("ec-1");
    let set = keys(&[&ec]);
    let token = ec.sign_with_header(&json!({"alg": "ES256", "kid": "ec-2"}), &claims(ISS, NOW));
    assert_eq!(
        verify(&token, &issuer(), &set, NOW).unwrap_err(),
        TokenError::UnknownKey
    );
}

#[test]
fn kid_is_required_only_with_several_keys() {
    let ec = Signer::ec("ec");
    let ed = Signer::ed("ed");
    let token = ec.sign_with_header(&json!({"alg": "ES256"}), &claims(ISS, NOW));
    assert!(verify(&token, &issuer(), &keys(&[&ec]), NOW).is_ok());
    assert_eq!(
        verify(&token, &issuer(), &keys(&[&ec, &ed]), NOW).unwrap_err(),
        TokenError::UnknownKey
    );
}

#[test]
fn key_type_must_fit_the_algorithm() {
    let rsa = Signer::rsa("RS256", "shared");
    let ec = Signer::ec("shared");
    let ed = Signer::ed("ed");
    // An ES256 token naming an RSA key, an EdDSA token naming an EC key, ...
    let rsa_only = keys(&[&rsa]);
    let t = ec.sign(&claims(ISS, NOW));
    assert_eq!(
        verify(&t, &issuer(), &rsa_only, NOW).unwrap_err(),
        TokenError::UnsupportedAlgorithm
    );
    let ec_only = keys(&[&ec]);
    let t = ed.sign_with_header(&json!({"alg": "EdDSA", "kid": "shared"}), &claims(ISS, NOW));
    assert_eq!(
        verify(&t, &issuer(), &ec_only, NOW).unwrap_err(),
        TokenError::UnsupportedAlgorithm
    );
    let t = rsa.sign(&claims(ISS, NOW));
    assert_eq!(
        verify(&t, &issuer(), &ec_only, NOW).unwrap_err(),
        TokenError::UnsupportedAlgorithm
    );

    // A JWK pinned to RS256 cannot verify PS256, even with the same RSA key.
    let mut pinned = rsa.jwk();
    pinned["alg"] = json!("RS256");
    let set = JwkSet::parse(json!({"keys": [pinned]}).to_string().as_bytes()).unwrap();
    let ps = Signer::rsa("PS256", "shared");
    assert_eq!(
        verify(&ps.sign(&claims(ISS, NOW)), &issuer(), &set, NOW).unwrap_err(),
        TokenError::UnsupportedAlgorithm
    );
    assert!(verify(&rsa.sign(&claims(ISS, NOW)), &issuer(), &set, NOW).is_ok());
}

#[test]
fn same_kid_on_two_keys_tries_each() {
    let a = Signer::ec("dup");
    let b = Signer::ec("dup");
    let set = keys(&[&a, &b]);
    assert!(verify(&b.sign(&claims(ISS, NOW)), &issuer(), &set, NOW).is_ok());
}

#[test]
fn expiry_with_leeway() {
    let s = Signer::ec("e");
    let base = claims(ISS, NOW);
    assert_eq!(
        check(&s, &with(base.clone(), json!({"exp": NOW - 31}))).unwrap_err(),
        TokenError::Expired
    );
    assert!(check(&s, &with(base.clone(), json!({"exp": NOW - 30}))).is_ok());
    assert!(check(&s, &with(base.clone(), json!({"exp": NOW - 10}))).is_ok());
    assert!(check(&s, &with(base.clone(), json!({"exp": NOW as f64 + 0.5}))).is_ok());
    assert_eq!(
        check(&s, &with(base.clone(), json!({"exp": null}))).unwrap_err(),
        TokenError::MissingClaim
    );
    assert_eq!(
        check(&s, &with(base.clone(), json!({"exp": "soon"}))).unwrap_err(),
        TokenError::Malformed
    );
    let mut strict = issuer();
    strict.leeway_secs = 0;
    let t = s.sign(&with(base, json!({"exp": NOW - 1})));
    assert_eq!(
        verify(&t, &strict, &keys(&[&s]), NOW).unwrap_err(),
        TokenError::Expired
    );
}

#[test]
fn not_yet_valid() {
    let s = Signer::ec("e");
    let base = claims(ISS, NOW);
    assert_eq!(
        check(&s, &with(base.clone(), json!({"nbf": NOW + 31}))).unwrap_err(),
        TokenError::NotYetValid
    );
    assert!(check(&s, &with(base.clone(), json!({"nbf": NOW + 30}))).is_ok());
    assert!(check(&s, &with(base.clone(), json!({"nbf": NOW - 100}))).is_ok());
    assert_eq!(
        check(&s, &with(base.clone(), json!({"iat": NOW + 120}))).unwrap_err(),
        TokenError::NotYetValid
    );
    assert!(check(&s, &with(base, json!({"iat": null}))).is_ok());
}

#[test]
fn issuer_must_match_exactly() {
    let s = Signer::ec("e");
    for iss in [
        "https://evil.example.com/realms/main",
        "https://idp.example.com/realms/main/",
        "https://IDP.example.com/realms/main",
    ] {
        let c = with(claims(ISS, NOW), json!({"iss": iss}));
        assert_eq!(check(&s, &c).unwrap_err(), TokenError::WrongIssuer, "{iss}");
        assert_eq!(peek_issuer(&s.sign(&c)).unwrap(), iss);
    }
    assert_eq!(
        check(&s, &with(claims(ISS, NOW), json!({"iss": null}))).unwrap_err(),
        TokenError::MissingClaim
    );
    assert_eq!(peek_issuer(&s.sign(&claims(ISS, NOW))).unwrap(), ISS);
    assert_eq!(peek_issuer("nope").unwrap_err(), TokenError::Malformed);
}

#[test]
fn audience() {
    let s = Signer::ec("e");
    let base = claims(ISS, NOW);
    assert_eq!(
        check(&s, &with(base.clone(), json!({"aud": "someone-else"}))).unwrap_err(),
        TokenError::WrongAudience
    );
    assert_eq!(
        check(&s, &with(base.clone(), json!({"aud": ["a", "b"]}))).unwrap_err(),
        TokenError::WrongAudience
    );
    assert_eq!(
        check(&s, &with(base.clone(), json!({"aud": []}))).unwrap_err(),
        TokenError::WrongAudience
    );
    let t = check(
        &s,
        &with(base.clone(), json!({"aud": ["account", "tollgate"]})),
    )
    .unwrap();
    assert_eq!(t.audiences, ["account", "tollgate"]);
    assert_eq!(
        check(&s, &with(base.clone(), json!({"aud": null}))).unwrap_err(),
        TokenError::MissingClaim
    );
    assert_eq!(
        check(&s, &with(base, json!({"aud": 7}))).unwrap_err(),
        TokenError::Malformed
    );
}

#[test]
fn subject_and_required_claims() {
    let s = Signer::ec("e");
    let base = claims(ISS, NOW);
    assert_eq!(
        check(&s, &with(base.clone(), json!({"sub": null}))).unwrap_err(),
        TokenError::MissingClaim
    );
    assert_eq!(
        check(&s, &with(base.clone(), json!({"sub": ""}))).unwrap_err(),
        TokenError::MissingClaim
    );

    let mut strict = issuer();
    strict.required_claims = vec!["jti".into(), "tenant.id".into()];
    let set = keys(&[&s]);
    let missing = s.sign(&base);
    assert_eq!(
        verify(&missing, &strict, &set, NOW).unwrap_err(),
        TokenError::MissingClaim
    );
    let present = s.sign(&with(base.clone(), json!({"tenant": {"id": "acme"}})));
    let t = verify(&present, &strict, &set, NOW).unwrap();
    assert_eq!(t.claim_str("tenant.id"), Some("acme"));
    assert_eq!(t.claim_str("sub"), Some("user-1"));
    assert_eq!(t.claim_str("tenant"), None);
    assert_eq!(t.claim_str("tenant.nope"), None);
    let null = s.sign(&with(base, json!({"tenant": {"id": null}})));
    assert_eq!(
        verify(&null, &strict, &set, NOW).unwrap_err(),
        TokenError::MissingClaim
    );
}

#[test]
fn access_token_type() {
    let s = Signer::ec("e");
    let set = keys(&[&s]);
    let mut strict = issuer();
    strict.require_at_jwt = true;
    let c = claims(ISS, NOW);
    let typed = |typ: Option<&str>| {
        let mut h = json!({"alg": "ES256", "kid": "e"});
        if let Some(t) = typ {
            h["typ"] = json!(t);
        }
        s.sign_with_header(&h, &c)
    };
    for typ in [Some("JWT"), None, Some("jwt")] {
        assert_eq!(
            verify(&typed(typ), &strict, &set, NOW).unwrap_err(),
            TokenError::WrongType
        );
        assert!(verify(&typed(typ), &issuer(), &set, NOW).is_ok());
    }
    for typ in ["at+jwt", "application/at+jwt", "AT+JWT"] {
        assert!(
            verify(&typed(Some(typ)), &strict, &set, NOW).is_ok(),
            "{typ}"
        );
    }
    for typ in ["dpop+jwt", "logout+jwt"] {
        assert_eq!(
            verify(&typed(Some(typ)), &issuer(), &set, NOW).unwrap_err(),
            TokenError::WrongType
        );
    }
}

#[test]
fn oversized_and_malformed_tokens() {
    let s = Signer::ec("e");
    let set = keys(&[&s]);
    let big = with(claims(ISS, NOW), json!({"pad": "x".repeat(MAX_TOKEN_LEN)}));
    assert_eq!(
        verify(&s.sign(&big), &issuer(), &set, NOW).unwrap_err(),
        TokenError::Malformed
    );
    assert_eq!(
        peek_issuer(&s.sign(&big)).unwrap_err(),
        TokenError::Malformed
    );

    let good = s.sign(&claims(ISS, NOW));
    let parts: Vec<&str> = good.split('.').collect();
    let (h, p, g) = (parts[0], parts[1], parts[2]);
    for bad in [
        String::new(),
        "abc".into(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{g}.{g}"),
        format!("{h}.{p}.{g}="),
        format!("{h}=.{p}.{g}"),
        format!("{h}.{p}=.{g}"),
        format!("{h}.{}.{g}", p.replace('-', "+").replace('_', "/") + "+/"),
        format!("{h}.{p}.{g}!"),
        format!(" {good}"),
        format!("{good}\n"),
        format!("{}.{p}.{g}", b64("not json")),
        format!("{}.{p}.{g}", b64_json(&json!(["ES256"]))),
    ] {
        assert_eq!(
            verify(&bad, &issuer(), &set, NOW).unwrap_err(),
            TokenError::Malformed,
            "{bad:?}"
        );
    }
    // a properly signed payload that is not one JSON object
    for payload in ["[1,2]", "\"s\"", "{\"sub\":\"a\",\"sub\":\"b\"}", "{} {}"] {
        let input = format!(
            "{}.{}",
            b64_json(&json!({"alg": "ES256", "kid": "e"})),
            b64(payload)
        );
        let token = format!("{input}.{}", b64(s.sign_bytes(input.as_bytes())));
        assert_eq!(
            verify(&token, &issuer(), &set, NOW).unwrap_err(),
            TokenError::Malformed,
            "{payload}"
        );
    }
}

#[test]
fn crit_headers_are_refused() {
    let s = Signer::ec("e");
    let header = json!({"alg": "ES256", "kid": "e", "crit": ["exp"], "exp": NOW + 10});
    let token = s.sign_with_header(&header, &claims(ISS, NOW));
    assert_eq!(
        verify(&token, &issuer(), &keys(&[&s]), NOW).unwrap_err(),
        TokenError::Malformed
    );
}

#[test]
fn roles_from_realm_client_and_custom_claims() {
    let s = Signer::ec("e");
    let mut keycloak = issuer();
    keycloak.client_id = Some("gateway".into());
    keycloak.roles_claim = Some("https://example.com/claims.groups".into());
    let c = with(
        claims(ISS, NOW),
        json!({
            "realm_access": {"roles": ["user", "offline_access"]},
            "resource_access": {
                "gateway": {"roles": ["admin", "user"]},
                "other-client": {"roles": ["superuser"]},
            },
            "https://example.com/claims.groups": ["ops"],
        }),
    );
    let t = verify(&s.sign(&c), &keycloak, &keys(&[&s]), NOW).unwrap();
    assert_eq!(t.roles, ["user", "offline_access", "admin", "ops"]);
    assert!(t.has_role("admin") && !t.has_role("superuser"));

    // Without client_id only realm roles count; a dotted custom claim holding a string.
    let mut custom = issuer();
    custom.roles_claim = Some("app.role".into());
    let c = with(c, json!({"app": {"role": "editor"}}));
    let t = verify(&s.sign(&c), &custom, &keys(&[&s]), NOW).unwrap();
    assert_eq!(t.roles, ["user", "offline_access", "editor"]);

    // Roles of the wrong shape are refused rather than guessed at.
    let bad = with(claims(ISS, NOW), json!({"realm_access": {"roles": [1, 2]}}));
    assert_eq!(check(&s, &bad).unwrap_err(), TokenError::Malformed);
}

#[test]
fn scopes_from_scope_and_scp() {
    let s = Signer::ec("e");
    let base = with(claims(ISS, NOW), json!({"scope": null}));
    let t = check(&s, &with(base.clone(), json!({"scope": "  a b\tc a "}))).unwrap();
    assert_eq!(t.scopes, ["a", "b", "c"]);
    let t = check(&s, &with(base.clone(), json!({"scp": ["x", "y"]}))).unwrap();
    assert_eq!(t.scopes, ["x", "y"]);
    assert!(t.has_scope("y"));
    let t = check(&s, &with(base.clone(), json!({"scp": "x y"}))).unwrap();
    assert_eq!(t.scopes, ["x", "y"]);
    let t = check(
        &s,
        &with(base.clone(), json!({"scope": "a", "scp": ["a", "b"]})),
    )
    .unwrap();
    assert_eq!(t.scopes, ["a", "b"]);
    assert!(check(&s, &base).unwrap().scopes.is_empty());
    assert_eq!(
        check(&s, &with(base, json!({"scope": ["a"]}))).unwrap_err(),
        TokenError::Malformed
    );
}

#[test]
fn client_id_falls_back_to_azp() {
    let s = Signer::ec("e");
    let c = with(claims(ISS, NOW), json!({"client_id": null, "azp": "spa"}));
    assert_eq!(check(&s, &c).unwrap().client_id.as_deref(), Some("spa"));
    let c = with(c, json!({"azp": null}));
    assert_eq!(check(&s, &c).unwrap().client_id, None);
}

#[test]
fn jwks_parsing_keeps_only_usable_signature_keys() {
    let rsa = Signer::rsa("RS256", "rsa");
    let ec = Signer::ec("ec");
    let ed = Signer::ed("ed");
    let mut enc = Signer::ec("enc").jwk();
    enc["use"] = json!("enc");
    let mut no_verify = Signer::ec("no-verify").jwk();
    no_verify["key_ops"] = json!(["encrypt"]);
    let mut with_private = Signer::ec("private").jwk();
    with_private["d"] = json!(b64([1u8; 32]));
    let mut p384 = Signer::ec("p384").jwk();
    p384["crv"] = json!("P-384");
    let mut ed448 = ed.jwk();
    ed448["crv"] = json!("Ed448");
    ed448["kid"] = json!("ed448");
    let mut hs_pinned = ec.jwk();
    hs_pinned["alg"] = json!("HS256");
    hs_pinned["kid"] = json!("hs");
    let mut short_x = Signer::ec("short").jwk();
    short_x["x"] = json!(b64([1u8; 31]));
    let doc = json!({"keys": [
        rsa.jwk(), ec.jwk(), ed.jwk(), enc, no_verify, with_private, p384, ed448, hs_pinned, short_x,
        {"kty": "oct", "kid": "hmac", "k": b64(b"secret")},
        {"kty": "RSA", "kid": "small", "n": b64([0xffu8; 128]), "e": "AQAB"},
        {"kid": "no-kty"},
        "not an object",
    ]});
    let set = JwkSet::parse(doc.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 3);
    assert_eq!(set.kids(), ["rsa", "ec", "ed"]);
    assert!(set.contains_kid("ec") && !set.contains_kid("enc"));

    assert_eq!(
        JwkSet::parse(br#"{"keys":[]}"#).unwrap_err(),
        TokenError::NoKeys
    );
    assert_eq!(
        JwkSet::parse(br#"{"keys":[{"kty":"oct","k":"AA"}]}"#).unwrap_err(),
        TokenError::NoKeys
    );
    assert_eq!(JwkSet::parse(b"<html>").unwrap_err(), TokenError::Malformed);
    assert_eq!(
        JwkSet::parse(br#"{"keys":{}}"#).unwrap_err(),
        TokenError::Malformed
    );
}

#[test]
fn reasons_are_distinct_labels() {
    let all = [
        TokenError::Malformed,
        TokenError::UnsupportedAlgorithm,
        TokenError::BadSignature,
        TokenError::UnknownKey,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::WrongIssuer,
        TokenError::WrongAudience,
        TokenError::MissingClaim,
        TokenError::WrongType,
        TokenError::NoKeys,
        TokenError::UnknownIssuer,
        TokenError::ProviderUnavailable,
        TokenError::InvalidConfig,
    ];
    let labels: std::collections::HashSet<&str> = all.iter().map(|e| e.reason()).collect();
    assert_eq!(labels.len(), all.len());
    assert!(
        labels
            .iter()
            .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    );
    assert_eq!(TokenError::BadSignature.reason(), "bad_signature");
}
