//! The OIDC harness itself: a real `oidc-provider` issues RFC 9068 JWT access tokens
//! through the client-credentials grant, rotates keys on restart and can be taken down.

use serde_json::{Value, json};
use tollgate_tests::oidc::{
    DEFAULT_RESOURCE, Keyset, OidcClient, OidcProvider, ProviderConfig, decode_jwt, now_secs,
    verify_jwt,
};

fn kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect();
    kids.sort();
    kids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Fetches a token for `svc` and checks what every issued token must carry.
async fn checked_token(p: &OidcProvider, keys: &Keyset, alg: &str) -> (String, Value, Value) {
    let token = p.token("svc", "secret", Some("read")).await.expect("token");
    let (header, claims) = decode_jwt(&token).expect("JWT");
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(header["alg"], alg, "{header}");
    let kid = header["kid"].as_str().expect("kid");
    assert!(
        keys.kids().iter().any(|k| k == kid),
        "{kid} ∉ {:?}",
        keys.kids()
    );
    assert_eq!(claims["iss"], p.issuer.as_str(), "{claims}");
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == DEFAULT_RESOURCE,
        Value::Array(a) => a.iter().any(|x| x == DEFAULT_RESOURCE),
        _ => false,
    };
    assert!(aud_ok, "aud: {claims}");
    verify_jwt(&token, &p.jwks().await.expect("jwks")).expect("signature verifies");
    (token, header, claims)
}

#[tokio::test]
async fn provider_issues_rfc9068_client_credentials_tokens() {
    let cfg = ProviderConfig::default();
    let p = OidcProvider::start(&cfg).expect("provider starts");
    assert_eq!(p.issuer, format!("http://127.0.0.1:{}", p.port));

    let disco = p.discovery().await.expect("discovery");
    assert_eq!(disco["issuer"], p.issuer.as_str());
    assert!(
        disco["jwks_uri"]
            .as_str()
            .is_some_and(|u| u.starts_with(&p.issuer))
    );
    assert!(disco["token_endpoint"].as_str().is_some());
    assert!(
        disco["grant_types_supported"]
            .as_array()
            .is_some_and(|g| g.iter().any(|x| x == "client_credentials")),
        "{disco}"
    );

    // The JWKS is public: no private members.
    let jwks = p.jwks().await.expect("jwks");
    assert_eq!(kids(&jwks), vec!["rsa-1"]);
    assert_eq!(
        jwks,
        cfg.keys.public_jwks(),
        "served JWKS = the keyset's public part"
    );
    for k in jwks["keys"].as_array().unwrap() {
        assert!(k.get("d").is_none() && k.get("p").is_none(), "{k}");
    }

    let before = now_secs();
    let (_, header, claims) = checked_token(&p, &cfg.keys, "RS256").await;
    assert_eq!(header["kid"], "rsa-1");
    assert_eq!(claims["realm_access"], json!({ "roles": ["reader"] }));
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["client_id"], "svc");
    assert_eq!(claims["sub"], "svc");
    assert_eq!(claims["scope"], "read");
    assert!(claims["jti"].as_str().is_some());
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 300);
    assert!(
        iat + 2 >= before && iat <= now_secs() + 2,
        "iat {iat} vs now {before}"
    );

    // Two scopes, and none.
    let t = p.token("svc", "secret", Some("read write")).await.unwrap();
    assert_eq!(decode_jwt(&t).unwrap().1["scope"], "read write");
    let t = p.token("svc", "secret", None).await.unwrap();
    assert!(decode_jwt(&t).unwrap().1.get("scope").is_none());

    // Client authentication is real.
    let (status, body) = p.token_response("svc", "wrong", None).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    assert!(p.token("nobody", "secret", None).await.is_err());
    assert_eq!(p.stderr(), "", "the provider is quiet");
}

#[tokio::test]
async fn clients_scopes_claims_and_ttl_are_configurable() {
    let cfg = ProviderConfig::new()
        .ttl(2)
        .client(
            OidcClient::new("svc", "secret")
                .claim("resource_access", json!({ "svc": { "roles": ["admin"] } }))
                .claim("tenant", json!("globex")),
        )
        .client(OidcClient::new("reader", "s3cr3t:&=").scope("read"));
    let p = OidcProvider::start(&cfg).expect("provider starts");

    let (_, _, claims) = checked_token(&p, &cfg.keys, "RS256").await;
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        2
    );
    assert_eq!(claims["resource_access"]["svc"]["roles"], json!(["admin"]));
    assert_eq!(claims["tenant"], "globex");
    assert!(
        claims.get("realm_access").is_none(),
        "replaced client: {claims}"
    );

    // A client limited to `read` (secret with form-special characters).
    let t = p.token("reader", "s3cr3t:&=", Some("read")).await.unwrap();
    let (_, c) = decode_jwt(&t).unwrap();
    assert_eq!(c["client_id"], "reader");
    assert!(c.get("tenant").is_none(), "no extra claims: {c}");
    let (status, body) = p
        .token_response("reader", "s3cr3t:&=", Some("read admin"))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn restart_on_same_port_rotates_keys_and_stop_takes_provider_down() {
    let cfg = ProviderConfig::default();
    let mut p = OidcProvider::start(&cfg).expect("provider starts");
    let (port, issuer) = (p.port, p.issuer.clone());
    let (old_token, header, _) = checked_token(&p, &cfg.keys, "RS256").await;
    assert_eq!(header["kid"], "rsa-1");

    let rotated = cfg.clone().keys(Keyset::rsa(2));
    p.restart_with(&rotated).expect("restart");
    assert_eq!((p.port, p.issuer.as_str()), (port, issuer.as_str()));
    let (_, header, _) = checked_token(&p, &rotated.keys, "RS256").await;
    assert_eq!(header["kid"], "rsa-2");
    let jwks = p.jwks().await.unwrap();
    assert_eq!(kids(&jwks), vec!["rsa-2"]);
    assert!(verify_jwt(&old_token, &jwks).is_err(), "old key is gone");

    // Overlap: both keys published, the pinned one signs.
    let overlap = cfg
        .clone()
        .keys(Keyset::rsa(1).and(Keyset::rsa(2)))
        .signing_kid("rsa-2");
    p.restart_with(&overlap).expect("restart");
    assert_eq!(kids(&p.jwks().await.unwrap()), vec!["rsa-1", "rsa-2"]);
    let (_, header, _) = checked_token(&p, &overlap.keys, "RS256").await;
    assert_eq!(header["kid"], "rsa-2");

    p.stop();
    assert!(!p.is_running());
    let err = p.token("svc", "secret", None).await.unwrap_err();
    assert!(p.discovery().await.is_err(), "down: {err}");

    p.restart().expect("back up");
    assert_eq!(p.port, port);
    checked_token(&p, &overlap.keys, "RS256").await;
}

#[tokio::test]
async fn es256_eddsa_and_ps256_tokens() {
    for (keys, alg) in [
        (Keyset::ec(), "ES256"),
        (Keyset::ed25519(), "EdDSA"),
        (Keyset::rsa(2), "PS256"),
    ] {
        let cfg = ProviderConfig::new().keys(keys.clone()).alg(alg);
        let p = OidcProvider::start(&cfg).expect("provider starts");
        let (_, header, claims) = checked_token(&p, &keys, alg).await;
        assert_eq!(header["kid"], keys.kids()[0].as_str());
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(kids(&p.jwks().await.unwrap()), keys.kids());
    }

    // Mixed keyset: the algorithm picks the key.
    let keys = Keyset::combine([Keyset::rsa(1), Keyset::ec(), Keyset::ed25519()]);
    let cfg = ProviderConfig::new().keys(keys.clone()).alg("ES256");
    let p = OidcProvider::start(&cfg).expect("provider starts");
    let (_, header, _) = checked_token(&p, &keys, "ES256").await;
    assert_eq!(header["kid"], keys.kids()[1].as_str());
    assert_eq!(kids(&p.jwks().await.unwrap()), sorted(keys.kids()));
}

#[test]
fn a_broken_config_fails_start_with_the_providers_error() {
    let dup = Keyset::rsa(1).and(Keyset::rsa(1));
    let err = OidcProvider::start(&ProviderConfig::new().keys(dup))
        .err()
        .expect("start fails")
        .to_string();
    assert!(err.contains("exited early") && err.contains("kid"), "{err}");
}

#[test]
fn keysets_sign_tokens_their_public_jwks_verify() {
    let keys = Keyset::combine([Keyset::rsa(1), Keyset::ec(), Keyset::ed25519()]);
    let other = Keyset::combine([Keyset::rsa(2), Keyset::ec(), Keyset::ed25519()]);
    let kids = keys.kids();
    assert_eq!(kids.len(), 3);
    assert!(
        other.kids().iter().all(|k| !kids.contains(k)),
        "distinct kids"
    );
    let claims = json!({ "iss": "https://idp.test", "exp": now_secs() + 60 });
    for (kid, alg) in kids.iter().zip(["RS256", "ES256", "EdDSA"]) {
        let t = keys.sign_jwt(kid, alg, &Value::Null, &claims).unwrap();
        let (h, c) = decode_jwt(&t).unwrap();
        assert_eq!(
            (h["alg"].as_str(), h["typ"].as_str()),
            (Some(alg), Some("at+jwt"))
        );
        assert_eq!(c, claims);
        verify_jwt(&t, &keys.public_jwks()).unwrap();
        // Same kid, other key material: fails.
        let mut forged = other.public_jwks();
        for (k, kid) in forged["keys"].as_array_mut().unwrap().iter_mut().zip(&kids) {
            k["kid"] = kid.as_str().into();
        }
        assert!(verify_jwt(&t, &forged).is_err(), "{alg}");
    }
    let t = keys
        .sign_jwt("rsa-1", "PS256", &json!({ "typ": "JWT" }), &claims)
        .unwrap();
    assert_eq!(decode_jwt(&t).unwrap().0["typ"], "JWT");
    verify_jwt(&t, &keys.public_jwks()).unwrap();
    for k in keys.public_jwks()["keys"].as_array().unwrap() {
        assert!(k.get("d").is_none(), "{k}");
    }
}
