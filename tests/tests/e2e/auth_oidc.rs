//! OIDC access tokens at the edge, end to end, against a real provider (npm
//! `oidc-provider`): the identity the upstream sees, tokens crafted with the provider's
//! own keys so exactly one thing is wrong, role/scope/tenant policies, key rotation
//! (on-demand refetch and background refresh), a provider that goes down or never came
//! up, RFC 9068 `typ`, and gRPC statuses.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tollgate_tests::auth::{
    CHALLENGE_INVALID, CHALLENGE_MISSING, CHALLENGE_SCOPE, GRPC_PERMISSION_DENIED,
    GRPC_UNAUTHENTICATED, Reply, auth_result, bearer, get, grpc_call,
};
use tollgate_tests::config::Config;
use tollgate_tests::oidc::{
    DEFAULT_RESOURCE, Keyset, OidcClient, OidcProvider, ProviderConfig, decode_jwt, now_secs,
};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::upstream::{Upstream, dead_addr};
use tollgate_tests::wait::{SOON, config_version, config_version_reaches, until};

const API: &str = "api.test";
const ACME_HOST: &str = "acme.test";
const OPEN_HOST: &str = "open.test";

/// The apps' upstreams.
struct Upstreams {
    acme: Upstream,
    globex: Upstream,
    open: Upstream,
}

impl Upstreams {
    async fn start() -> Self {
        Upstreams {
            acme: Upstream::start("acme").await,
            globex: Upstream::start("globex").await,
            open: Upstream::start("open").await,
        }
    }
}

/// Apps `acme` and `globex` accept tokens of issuer `idp` whose `tenant` claim names
/// them; `acme.test` has `/roles-admin`, `/roles-reader` and `/scoped` (needs `write`);
/// `open.test` has no auth. `issuer_extra` adds lines to the issuer. Apps have
/// detailed metrics: the tests read each app's own auth results.
fn proxy_config(issuer: &str, issuer_extra: &str, ups: &Upstreams) -> String {
    let tenant_auth = "[apps.auth]\nissuers = [\"idp\"]\ntenant_claim = \"tenant\"";
    let app = |id: &str, host: &str, up: SocketAddr, auth: &str| {
        format!(
            "[[apps]]\nid = \"{id}\"\nmetrics = \"detailed\"\nhostnames = [\"{host}\"]\n\
             [apps.upstreams.default]\nendpoints = [{{ address = \"{up}\" }}]\n{auth}"
        )
    };
    let route = |prefix: &str, policy: &str| {
        format!(
            "[[routes]]\nhostname = \"{ACME_HOST}\"\npath_prefix = \"{prefix}\"\napp = \"acme\"\n\
             [routes.auth]\nissuers = [\"idp\"]\n{policy}"
        )
    };
    Config::new()
        .top(&format!("api_hosts = [\"{API}\"]"))
        .listener("http")
        .raw(&app("acme", ACME_HOST, ups.acme.addr, tenant_auth))
        .raw(&app("globex", "globex.test", ups.globex.addr, tenant_auth))
        .raw(&app("open", OPEN_HOST, ups.open.addr, ""))
        .raw(&route("/roles-admin", "require_roles = [\"admin\"]"))
        .raw(&route("/roles-reader", "require_roles = [\"reader\"]"))
        .raw(&route("/scoped", "require_scopes = [\"write\"]"))
        .raw(&format!(
            "[[oidc_issuers]]\nname = \"idp\"\nissuer = \"{issuer}\"\n\
             audiences = [\"{DEFAULT_RESOURCE}\"]\nmin_refetch_secs = 1\n{issuer_extra}"
        ))
        .build()
}

/// A provider, the upstreams and a proxy trusting the provider.
struct Setup {
    provider: OidcProvider,
    ups: Upstreams,
    proxy: ProxyProcess,
}

impl Setup {
    async fn start(provider: &ProviderConfig, issuer_extra: &str) -> Self {
        let provider = OidcProvider::start(provider).expect("provider starts");
        let ups = Upstreams::start().await;
        let proxy = ProxyProcess::start(&proxy_config(&provider.issuer, issuer_extra, &ups), &[])
            .expect("proxy starts");
        Setup {
            provider,
            ups,
            proxy,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr("http")
    }

    async fn token(&self, scope: &str) -> String {
        self.provider
            .token("svc", "secret", Some(scope))
            .await
            .expect("token")
    }

    /// GET on the plain listener (HTTP/1.1) with `Authorization: Bearer <token>`.
    async fn call(&self, host: &str, path: &str, token: &str) -> Reply {
        get(
            self.addr(),
            false,
            host,
            path,
            &[("authorization", &bearer(token))],
        )
        .await
    }
}

/// Claims like the provider's for client `svc`, valid for five minutes.
fn claims(issuer: &str) -> Value {
    let now = now_secs();
    json!({
        "iss": issuer,
        "aud": DEFAULT_RESOURCE,
        "sub": "svc",
        "client_id": "svc",
        "jti": format!("crafted-{now}"),
        "iat": now,
        "exp": now + 300,
        "scope": "read",
        "realm_access": { "roles": ["reader"] },
        "tenant": "acme",
    })
}

/// `claims` with `changes` merged in (a null removes the claim).
fn claims_with(issuer: &str, changes: Value) -> Value {
    let mut c = claims(issuer);
    if let (Some(c), Some(changes)) = (c.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

/// Signs `claims` with the fixed key `rsa-<n>` (RS256, `typ: at+jwt`).
fn sign_rsa(n: usize, claims: &Value) -> String {
    Keyset::rsa(n)
        .sign_jwt(&format!("rsa-{n}"), "RS256", &Value::Null, claims)
        .expect("sign")
}

fn b64_json(v: &Value) -> String {
    B64.encode(serde_json::to_vec(v).expect("JSON"))
}

/// The token with one bit of its signature flipped.
fn flip_signature(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').expect("JWS");
    let mut sig = B64.decode(sig).expect("signature");
    sig[0] ^= 0x01;
    format!("{input}.{}", B64.encode(sig))
}

/// The token with its payload replaced by `claims`, header and signature kept.
fn swap_payload(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("not a JWS: {token}");
    };
    format!("{h}.{}.{s}", b64_json(claims))
}

/// An HS256 token whose HMAC key is `secret` (a public key, in an algorithm-confusion attack).
fn hs256(kid: &str, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64_json(&json!({ "alg": "HS256", "kid": kid, "typ": "at+jwt" })),
        b64_json(claims)
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    format!("{input}.{}", B64.encode(tag.as_ref()))
}

/// An unsigned token (`alg: none`, empty signature).
fn alg_none(kid: &str, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64_json(&json!({ "alg": "none", "kid": kid, "typ": "at+jwt" })),
        b64_json(claims)
    )
}

fn assert_refused(r: &Reply, status: u16, challenge: Option<&str>) {
    let code = if status == 401 {
        "unauthenticated"
    } else {
        "permission_denied"
    };
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.code(), code, "{}", r.body);
    assert_eq!(r.challenge(), challenge, "{:?}", r.headers);
}

/// Polls until `token` on `/v1/acme` gets `status`; the last answer.
async fn until_status(s: &Setup, token: &str, status: u16, what: &str) -> Reply {
    until(what, SOON, || async {
        let r = s.call(API, "/v1/acme/poll", token).await;
        (r.status == status).then_some(r)
    })
    .await
}

#[tokio::test]
async fn provider_tokens_pass_and_the_upstream_sees_the_verified_identity() {
    let s = Setup::start(&ProviderConfig::default(), "").await;
    let token = s.token("read write").await;
    for h2 in [false, true] {
        let r = get(
            s.addr(),
            h2,
            API,
            "/v1/acme/orders",
            &[("authorization", &bearer(&token))],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let seen = r.seen();
        assert_eq!(seen["x-tollgate-auth"], "token", "{seen:?}");
        assert_eq!(seen["x-tollgate-subject"], "svc");
        assert_eq!(seen["x-tollgate-issuer"], s.provider.issuer.as_str());
        assert_eq!(seen["x-tollgate-roles"], "reader");
        assert_eq!(seen["x-tollgate-scopes"], "read write");
        assert_eq!(seen["x-tollgate-tenant"], "acme");
        assert_eq!(seen["x-tollgate-app-id"], "acme");
        assert!(seen.get("x-tollgate-key-id").is_none(), "{seen:?}");
        // Access tokens are forwarded as they came.
        assert_eq!(seen["authorization"], bearer(&token).as_str());
    }
    // A client-sent identity never survives next to a token.
    let r = get(
        s.addr(),
        false,
        API,
        "/v1/acme/orders",
        &[
            ("authorization", &bearer(&token)),
            ("x-tollgate-roles", "admin"),
            ("x-tollgate-subject", "root"),
            ("x-tollgate-key-id", "acme-admin"),
        ],
    )
    .await;
    assert_eq!(r.seen()["x-tollgate-roles"], "reader");
    assert_eq!(r.seen()["x-tollgate-subject"], "svc");
    assert!(
        r.seen().get("x-tollgate-key-id").is_none(),
        "{:?}",
        r.seen()
    );
    assert_eq!(s.ups.acme.hits(), 3);
    assert_eq!(auth_result(&s.proxy, "acme", "ok_token").await, 3.0);
}

#[tokio::test]
async fn crafted_tokens_with_one_thing_wrong_are_refused() {
    // A wide leeway so that "just expired" is clearly inside it and "long expired" outside.
    let s = Setup::start(&ProviderConfig::default(), "leeway_secs = 120").await;
    let iss = s.provider.issuer.clone();
    let now = now_secs();

    // Controls: the crafted claims and signatures are good, so each case below differs
    // from an accepted token in exactly one respect.
    let good = sign_rsa(1, &claims(&iss));
    let r = s.call(API, "/v1/acme/x", &good).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.seen()["x-tollgate-subject"], "svc");
    let plain_jwt = Keyset::rsa(1)
        .sign_jwt("rsa-1", "RS256", &json!({ "typ": "JWT" }), &claims(&iss))
        .expect("sign");
    let within_leeway = sign_rsa(1, &claims_with(&iss, json!({ "exp": now - 10 })));
    let ps256 = Keyset::rsa(1)
        .sign_jwt("rsa-1", "PS256", &Value::Null, &claims(&iss))
        .expect("sign");
    for (what, t) in [
        ("typ JWT without require_at_jwt", &plain_jwt),
        ("expired within the leeway", &within_leeway),
        ("PS256 with the same key", &ps256),
    ] {
        let r = s.call(API, "/v1/acme/x", t).await;
        assert_eq!(r.status, 200, "{what}: {}", r.body);
    }
    let accepted = s.ups.acme.hits();
    assert_eq!(accepted, 4);

    let jwk = Keyset::rsa(1).public_jwks()["keys"][0].clone();
    let modulus = B64.decode(jwk["n"].as_str().expect("n")).expect("modulus");
    let jwk_text = serde_json::to_vec(&jwk).expect("JWK");
    let mut tampered_claims = claims(&iss);
    tampered_claims["realm_access"] = json!({ "roles": ["reader", "admin"] });
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired beyond the leeway",
            sign_rsa(
                1,
                &claims_with(&iss, json!({ "exp": now - 600, "iat": now - 900 })),
            ),
            "expired",
        ),
        (
            "not yet valid",
            sign_rsa(1, &claims_with(&iss, json!({ "nbf": now + 600 }))),
            "not_yet_valid",
        ),
        (
            "issued in the future",
            sign_rsa(
                1,
                &claims_with(&iss, json!({ "iat": now + 600, "exp": now + 900 })),
            ),
            "not_yet_valid",
        ),
        (
            "wrong issuer",
            sign_rsa(
                1,
                &claims_with(&iss, json!({ "iss": "http://127.0.0.1:9/other" })),
            ),
            "unknown_issuer",
        ),
        (
            "wrong audience",
            sign_rsa(
                1,
                &claims_with(&iss, json!({ "aud": "https://other.test" })),
            ),
            "wrong_audience",
        ),
        (
            "no subject",
            sign_rsa(1, &claims_with(&iss, json!({ "sub": null }))),
            "missing_claim",
        ),
        ("tampered signature", flip_signature(&good), "bad_signature"),
        (
            "tampered payload",
            swap_payload(&good, &tampered_claims),
            "bad_signature",
        ),
        (
            "signed by a key the issuer does not publish",
            sign_rsa(2, &claims(&iss)),
            "unknown_key",
        ),
        (
            "alg none",
            alg_none("rsa-1", &claims(&iss)),
            "unsupported_algorithm",
        ),
        (
            "HS256 keyed with the public JWK",
            hs256("rsa-1", &claims(&iss), &jwk_text),
            "unsupported_algorithm",
        ),
        (
            "HS256 keyed with the RSA modulus",
            hs256("rsa-1", &claims(&iss), &modulus),
            "unsupported_algorithm",
        ),
        ("not a JWT", "not.a.jwt".to_owned(), "malformed"),
    ];
    for (what, token, reason) in &cases {
        let before = auth_result(&s.proxy, "acme", reason).await;
        let r = s.call(API, "/v1/acme/x", token).await;
        assert_refused(&r, 401, Some(CHALLENGE_INVALID));
        assert_eq!(
            auth_result(&s.proxy, "acme", reason).await,
            before + 1.0,
            "{what}: refused as {reason}\n{}",
            s.proxy.logs()
        );
    }
    assert_eq!(
        s.ups.acme.hits(),
        accepted,
        "no refused token reached the upstream"
    );
}

#[tokio::test]
async fn roles_scopes_and_tenant_policies() {
    let provider = ProviderConfig::default()
        .client(OidcClient::new("gx", "gx-secret").claim("tenant", json!("globex")))
        .client(OidcClient::new("nobody", "n-secret"));
    let s = Setup::start(&provider, "").await;
    let read = s.token("read").await;

    // Roles: the token has `reader`, not `admin`.
    let r = s.call(ACME_HOST, "/roles-admin/x", &read).await;
    assert_refused(&r, 403, None);
    assert_eq!(auth_result(&s.proxy, "acme", "missing_role").await, 1.0);
    let r = s.call(ACME_HOST, "/roles-reader/x", &read).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Scopes: `write` is required.
    let r = s.call(ACME_HOST, "/scoped/x", &read).await;
    assert_refused(&r, 403, Some(CHALLENGE_SCOPE));
    assert_eq!(
        auth_result(&s.proxy, "acme", "insufficient_scope").await,
        1.0
    );
    let write = s.token("read write").await;
    let r = s.call(ACME_HOST, "/scoped/x", &write).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.ups.acme.hits(), 2);

    // Tenant: `svc` belongs to acme, `gx` to globex, `nobody` to no tenant.
    let r = s.call(API, "/v1/acme/x", &read).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.seen()["x-tollgate-tenant"], "acme");
    for (host, path) in [(API, "/v1/globex/x"), ("globex.test", "/x")] {
        let r = s.call(host, path, &read).await;
        assert_refused(&r, 403, None);
    }
    let gx = s
        .provider
        .token("gx", "gx-secret", Some("read"))
        .await
        .expect("token");
    let r = s.call(API, "/v1/globex/x", &gx).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.seen()["x-tollgate-tenant"], "globex");
    let r = s.call(API, "/v1/acme/x", &gx).await;
    assert_refused(&r, 403, None);
    let nobody = s
        .provider
        .token("nobody", "n-secret", Some("read"))
        .await
        .expect("token");
    for app in ["acme", "globex"] {
        let r = s.call(API, &format!("/v1/{app}/x"), &nobody).await;
        assert_refused(&r, 403, None);
    }
    assert_eq!(auth_result(&s.proxy, "globex", "wrong_tenant").await, 3.0);
    assert_eq!(auth_result(&s.proxy, "acme", "wrong_tenant").await, 2.0);
    assert_eq!((s.ups.acme.hits(), s.ups.globex.hits()), (3, 1));

    // A token-only policy takes no API key, and no credentials is a bare challenge.
    let r = get(
        s.addr(),
        false,
        API,
        "/v1/acme/x",
        &[("x-api-key", "sk_live_acme_whatever")],
    )
    .await;
    assert_refused(&r, 401, Some(CHALLENGE_INVALID));
    assert_eq!(
        auth_result(&s.proxy, "acme", "credential_not_accepted").await,
        1.0
    );
    let r = get(s.addr(), false, API, "/v1/acme/x", &[]).await;
    assert_refused(&r, 401, Some(CHALLENGE_MISSING));
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_demand_and_the_removed_one_refused() {
    // No background refresh during the test: only an unknown `kid` can make the proxy fetch.
    let mut s = Setup::start(&ProviderConfig::default(), "jwks_refresh_secs = 3600").await;
    let old = s.token("read").await;
    assert_eq!(decode_jwt(&old).expect("JWT").0["kid"], "rsa-1");
    let r = s.call(API, "/v1/acme/x", &old).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let rotated = ProviderConfig::default().keys(Keyset::rsa(2));
    s.provider
        .restart_with(&rotated)
        .expect("provider restarts");
    let new = s.token("read").await;
    assert_eq!(decode_jwt(&new).expect("JWT").0["kid"], "rsa-2");
    // The proxy has not looked yet: the old key is still cached.
    let r = s.call(API, "/v1/acme/x", &old).await;
    assert_eq!(r.status, 200, "cached key: {}", r.body);

    // The new kid is unknown: a refetch (at most one per second) brings it in.
    let r = until_status(&s, &new, 200, "the new key to be fetched").await;
    assert_eq!(r.seen()["x-tollgate-subject"], "svc");
    assert!(
        s.proxy.logs().contains("UnknownKey"),
        "fetched for the unknown kid:\n{}",
        s.proxy.logs()
    );
    // That fetch replaced the key set: the removed key is refused now.
    let r = s.call(API, "/v1/acme/x", &old).await;
    assert_refused(&r, 401, Some(CHALLENGE_INVALID));
    let r = s
        .call(API, "/v1/acme/x", &sign_rsa(1, &claims(&s.provider.issuer)))
        .await;
    assert_refused(&r, 401, Some(CHALLENGE_INVALID));
    assert!(auth_result(&s.proxy, "acme", "unknown_key").await >= 2.0);
}

#[tokio::test]
async fn the_background_refresh_drops_keys_the_provider_removed() {
    let mut s = Setup::start(&ProviderConfig::default(), "jwks_refresh_secs = 1").await;
    let old = s.token("read").await;
    let r = s.call(API, "/v1/acme/x", &old).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Overlap: both keys published, the new one signs. Both tokens pass.
    let overlap = ProviderConfig::default()
        .keys(Keyset::rsa(1).and(Keyset::rsa(2)))
        .signing_kid("rsa-2");
    s.provider
        .restart_with(&overlap)
        .expect("provider restarts");
    let new = s.token("read").await;
    assert_eq!(decode_jwt(&new).expect("JWT").0["kid"], "rsa-2");
    until_status(&s, &new, 200, "the new key to be accepted").await;
    let r = s.call(API, "/v1/acme/x", &old).await;
    assert_eq!(r.status, 200, "old key still published: {}", r.body);

    // The old key is withdrawn: a refresh drops it (its kid stays known until then).
    let rotated = ProviderConfig::default().keys(Keyset::rsa(2));
    s.provider
        .restart_with(&rotated)
        .expect("provider restarts");
    until_status(&s, &old, 401, "the removed key to be refused").await;
    let r = s
        .call(API, "/v1/acme/x", &sign_rsa(1, &claims(&s.provider.issuer)))
        .await;
    assert_refused(&r, 401, Some(CHALLENGE_INVALID));
    let r = s.call(API, "/v1/acme/x", &new).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn cached_keys_keep_verifying_while_the_provider_is_down() {
    let mut s = Setup::start(&ProviderConfig::default(), "jwks_refresh_secs = 1").await;
    let issued = s.token("read").await;
    let r = s.call(API, "/v1/acme/x", &issued).await;
    assert_eq!(r.status, 200, "{}", r.body);

    s.provider.stop();
    // Wait until a refresh has failed, so the keys in use survived a failed fetch.
    until("a failed JWKS refresh", SOON, || async {
        s.proxy
            .logs()
            .contains("keeping the previous keys")
            .then_some(())
    })
    .await;
    for (what, token) in [
        ("issued before", issued.clone()),
        ("signed now", sign_rsa(1, &claims(&s.provider.issuer))),
    ] {
        let r = s.call(API, "/v1/acme/x", &token).await;
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        assert_eq!(r.seen()["x-tollgate-auth"], "token");
    }
    // A kid it never saw cannot be fetched now: refused, not waved through.
    let r = s
        .call(API, "/v1/acme/x", &sign_rsa(2, &claims(&s.provider.issuer)))
        .await;
    assert_refused(&r, 401, Some(CHALLENGE_INVALID));

    // A reload that leaves the issuer as it was keeps its keys (nothing to refetch from).
    let version = config_version(&s.proxy).await;
    let cfg = proxy_config(&s.provider.issuer, "jwks_refresh_secs = 1", &s.ups)
        + "\n[[routes]]\nhostname = \"new.test\"\napp = \"open\"\n";
    s.proxy.write_config(&cfg).expect("write config");
    config_version_reaches(&s.proxy, version + 1).await;
    let r = s.call(API, "/v1/acme/x", &issued).await;
    assert_eq!(r.status, 200, "after reload: {}", r.body);
    let r = get(s.addr(), false, "new.test", "/", &[]).await;
    assert_eq!(
        r.status, 200,
        "the reloaded config is the one serving: {}",
        r.body
    );
}

#[tokio::test]
async fn an_unreachable_provider_fails_closed_and_open_routes_still_serve() {
    let port = dead_addr().port();
    let issuer = format!("http://127.0.0.1:{port}");
    let ups = Upstreams::start().await;
    let proxy = ProxyProcess::start(&proxy_config(&issuer, "", &ups), &[]).expect("proxy starts");
    let addr = proxy.addr("http");
    let token = sign_rsa(1, &claims(&issuer));
    for h2 in [false, true] {
        let r = get(
            addr,
            h2,
            API,
            "/v1/acme/x",
            &[("authorization", &bearer(&token))],
        )
        .await;
        assert_refused(&r, 401, Some(CHALLENGE_INVALID));
        let r = get(addr, h2, OPEN_HOST, "/page", &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(ups.acme.hits(), 0);
    assert_eq!(ups.open.hits(), 2);
    assert_eq!(auth_result(&proxy, "acme", "no_keys").await, 2.0);

    // Once the provider comes up the same token passes (no restart of the proxy).
    let provider = OidcProvider::start(&ProviderConfig::default().port(port))
        .expect("provider starts on the issuer's port");
    assert_eq!(provider.issuer, issuer);
    until("the proxy to fetch the provider's keys", SOON, || async {
        let r = get(
            addr,
            false,
            API,
            "/v1/acme/x",
            &[("authorization", &bearer(&token))],
        )
        .await;
        (r.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn require_at_jwt_refuses_tokens_typed_jwt() {
    let s = Setup::start(&ProviderConfig::default(), "require_at_jwt = true").await;
    let issued = s.token("read").await;
    assert_eq!(decode_jwt(&issued).expect("JWT").0["typ"], "at+jwt");
    let r = s.call(API, "/v1/acme/x", &issued).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let media_type = Keyset::rsa(1)
        .sign_jwt(
            "rsa-1",
            "RS256",
            &json!({ "typ": "application/at+jwt" }),
            &claims(&s.provider.issuer),
        )
        .expect("sign");
    let r = s.call(API, "/v1/acme/x", &media_type).await;
    assert_eq!(r.status, 200, "{}", r.body);

    for typ in ["JWT", "application/jwt", "dpop+jwt"] {
        let t = Keyset::rsa(1)
            .sign_jwt(
                "rsa-1",
                "RS256",
                &json!({ "typ": typ }),
                &claims(&s.provider.issuer),
            )
            .expect("sign");
        let r = s.call(API, "/v1/acme/x", &t).await;
        assert_refused(&r, 401, Some(CHALLENGE_INVALID));
    }
    assert_eq!(auth_result(&s.proxy, "acme", "wrong_type").await, 3.0);
    assert_eq!(s.ups.acme.hits(), 2);
}

#[tokio::test]
async fn grpc_token_failures_get_grpc_statuses() {
    let s = Setup::start(&ProviderConfig::default(), "").await;
    let token = s.token("read").await;
    let status = |r: &Reply| r.header("grpc-status").map(str::to_owned);
    let path = "/v1/acme/orders.Orders/List";

    let expired = sign_rsa(
        1,
        &claims_with(
            &s.provider.issuer,
            json!({ "exp": now_secs() - 600, "iat": now_secs() - 900 }),
        ),
    );
    for (what, headers) in [
        ("expired", vec![("authorization", bearer(&expired))]),
        (
            "tampered",
            vec![("authorization", bearer(&flip_signature(&token)))],
        ),
        ("missing", vec![]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = grpc_call(s.addr(), API, path, &headers).await;
        assert_eq!(r.status, 200, "{what}: {:?}", r.headers);
        assert_eq!(
            status(&r).as_deref(),
            Some(GRPC_UNAUTHENTICATED),
            "{what}: {:?}",
            r.headers
        );
    }
    // Valid but without the role: PERMISSION_DENIED.
    let r = grpc_call(
        s.addr(),
        ACME_HOST,
        "/roles-admin/orders.Orders/Delete",
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(status(&r).as_deref(), Some(GRPC_PERMISSION_DENIED));
    assert_eq!(s.ups.acme.hits(), 0);

    // The same token on a call it may make goes through.
    let r = grpc_call(s.addr(), API, path, &[("authorization", &bearer(&token))]).await;
    assert_eq!(status(&r), None, "{:?}", r.headers);
    assert_eq!(r.seen()["x-tollgate-subject"], "svc");
}
