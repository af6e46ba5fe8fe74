//! API keys at the edge, end to end: real keys (generated, only their SHA-256 in the
//! config), the identity the upstream sees, 401/403 with RFC 6750 challenges, gRPC
//! statuses, revocation by config reload, public keys bound to origins, spoofed
//! identity headers, and the auth results counter.

use std::net::SocketAddr;
use tollgate_filters::apikey::{KeyKind, generate, sha256_hex};
use tollgate_tests::auth::{
    CHALLENGE_INVALID, CHALLENGE_MISSING, CHALLENGE_SCOPE, GRPC_PERMISSION_DENIED,
    GRPC_UNAUTHENTICATED, Reply, auth_result, bearer, get, get_on, grpc_call,
};
use tollgate_tests::client;
use tollgate_tests::config::Config;
use tollgate_tests::oidc::now_secs;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::{config_version, config_version_reaches};

const API: &str = "api.test";
const ACME_HOST: &str = "acme.test";
const OPEN_HOST: &str = "open.test";
const ORIGIN: &str = "https://app.acme.example";

/// Request headers as (name, value) pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// One configured key: the key itself (known only to the test) and its record.
struct Key {
    id: &'static str,
    app: &'static str,
    kind: KeyKind,
    key: String,
    sha256: String,
    scopes: &'static [&'static str],
    /// Extra record lines (`expires_at`, `allowed_origins`).
    extra: String,
}

impl Key {
    fn new(
        id: &'static str,
        app: &'static str,
        kind: KeyKind,
        scopes: &'static [&'static str],
    ) -> Self {
        let (key, sha256) = generate(kind, false, app).expect("generate key");
        assert_eq!(sha256, sha256_hex(&key));
        Key {
            id,
            app,
            kind,
            key,
            sha256,
            scopes,
            extra: String::new(),
        }
    }

    fn with(mut self, line: &str) -> Self {
        self.extra.push_str(line);
        self.extra.push('\n');
        self
    }

    fn toml(&self) -> String {
        let kind = match self.kind {
            KeyKind::Secret => "secret",
            KeyKind::Public => "public",
        };
        let scopes: Vec<String> = self.scopes.iter().map(|s| format!("\"{s}\"")).collect();
        format!(
            "[[api_keys]]\nkey_id = \"{}\"\napp = \"{}\"\nkind = \"{kind}\"\nsha256 = \"{}\"\nscopes = [{}]\n{}",
            self.id,
            self.app,
            self.sha256,
            scopes.join(", "),
            self.extra
        )
    }
}

/// The apps' upstreams and every key of the tests.
struct Fixture {
    acme: Upstream,
    globex: Upstream,
    open: Upstream,
    /// `orders:read`, expiring in a day.
    reader: Key,
    /// `orders:read` and `orders:write`.
    writer: Key,
    /// A key of `globex`.
    globex_key: Key,
    /// Expired an hour ago.
    expired: Key,
    /// Removed from the config by the revocation test.
    revocable: Key,
    /// A `pk_` key for the browser origin.
    public: Key,
}

impl Fixture {
    async fn new() -> Self {
        let day = 24 * 3600;
        let now = now_secs();
        Fixture {
            acme: Upstream::start("acme").await,
            globex: Upstream::start("globex").await,
            open: Upstream::start("open").await,
            reader: Key::new("acme-reader", "acme", KeyKind::Secret, &["orders:read"])
                .with(&format!("expires_at = {}", now + day)),
            writer: Key::new(
                "acme-writer",
                "acme",
                KeyKind::Secret,
                &["orders:read", "orders:write"],
            ),
            globex_key: Key::new("globex-1", "globex", KeyKind::Secret, &["orders:read"]),
            expired: Key::new("acme-expired", "acme", KeyKind::Secret, &["orders:read"])
                .with(&format!("expires_at = {}", now - 3600)),
            revocable: Key::new("acme-revocable", "acme", KeyKind::Secret, &["orders:read"]),
            public: Key::new("acme-public", "acme", KeyKind::Public, &["orders:read"])
                .with(&format!("allowed_origins = [\"{ORIGIN}\"]")),
        }
    }

    fn all_keys(&self) -> Vec<&Key> {
        vec![
            &self.reader,
            &self.writer,
            &self.globex_key,
            &self.expired,
            &self.revocable,
            &self.public,
        ]
    }

    /// `api.test` serves `/v1/<app>`; apps `acme` and `globex` take API keys; `acme.test`
    /// has `/admin` (needs `orders:write`) and `/browser` (public keys allowed); app
    /// `open` (`open.test`) has no auth at all. Every app has detailed metrics: the
    /// tests read each app's own auth results.
    fn config(&self, keys: &[&Key]) -> String {
        let app = |id: &str, host: &str, up: SocketAddr, auth: &str| {
            format!(
                "[[apps]]\nid = \"{id}\"\nmetrics = \"detailed\"\nhostnames = [\"{host}\"]\n\
                 [apps.upstreams.default]\nendpoints = [{{ address = \"{up}\" }}]\n{auth}"
            )
        };
        let mut cfg = Config::new()
            .top(&format!("api_hosts = [\"{API}\"]"))
            .listener("http")
            .raw(&app(
                "acme",
                ACME_HOST,
                self.acme.addr,
                "[apps.auth]\napi_keys = true",
            ))
            .raw(&app(
                "globex",
                "globex.test",
                self.globex.addr,
                "[apps.auth]\napi_keys = true",
            ))
            .raw(&app("open", OPEN_HOST, self.open.addr, ""))
            .raw(&format!(
                "[[routes]]\nhostname = \"{ACME_HOST}\"\npath_prefix = \"/admin\"\napp = \"acme\"\n\
                 [routes.auth]\napi_keys = true\nrequire_scopes = [\"orders:write\"]"
            ))
            .raw(&format!(
                "[[routes]]\nhostname = \"{ACME_HOST}\"\npath_prefix = \"/browser\"\napp = \"acme\"\n\
                 [routes.auth]\napi_keys = true\npublic_keys = true"
            ));
        for k in keys {
            cfg = cfg.raw(&k.toml());
        }
        cfg.build()
    }

    fn start(&self) -> ProxyProcess {
        ProxyProcess::start(&self.config(&self.all_keys()), &[]).expect("proxy starts")
    }
}

/// Every request header value the upstream got, to prove a key never reached it.
fn assert_key_not_forwarded(r: &Reply, key: &str) {
    let seen = r.seen();
    for gone in ["authorization", "x-api-key"] {
        assert!(seen.get(gone).is_none(), "upstream saw `{gone}`: {seen:?}");
    }
    for (name, value) in &seen {
        assert!(
            !value.as_str().unwrap_or_default().contains(key),
            "the key reached the upstream in `{name}`"
        );
    }
}

fn assert_refused(r: &Reply, status: u16, code: &str, challenge: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.code(), code, "{}", r.body);
    assert_eq!(r.challenge(), challenge, "{:?}", r.headers);
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{:?}",
        r.headers
    );
}

#[tokio::test]
async fn secret_keys_via_bearer_or_x_api_key_reach_the_upstream_as_identity_only() {
    let f = Fixture::new().await;
    let proxy = f.start();
    let addr = proxy.addr("http");
    let key = &f.reader.key;
    let auth = bearer(key);
    let lower = format!("bearer {key}");
    let variants: [&[(&str, &str)]; 4] = [
        &[("authorization", &auth)],
        &[("authorization", &lower)],
        &[("x-api-key", key)],
        // The same key twice is one credential.
        &[("authorization", &auth), ("x-api-key", key)],
    ];
    let mut served = 0;
    for h2 in [false, true] {
        for headers in variants {
            let r = get(addr, h2, API, "/v1/acme/orders?page=2", headers).await;
            assert_eq!(r.status, 200, "h2={h2} {headers:?}: {}", r.body);
            served += 1;
            let seen = r.seen();
            assert_eq!(seen["x-tollgate-auth"], "api_key", "{seen:?}");
            assert_eq!(seen["x-tollgate-key-id"], "acme-reader");
            assert_eq!(seen["x-tollgate-subject"], "key:acme-reader");
            assert_eq!(seen["x-tollgate-tenant"], "acme");
            assert_eq!(seen["x-tollgate-app-id"], "acme");
            assert_eq!(seen["x-tollgate-scopes"], "orders:read");
            assert!(seen.get("x-tollgate-issuer").is_none(), "{seen:?}");
            assert!(seen.get("x-tollgate-roles").is_none(), "{seen:?}");
            assert_key_not_forwarded(&r, key);
            assert_eq!(r.header("x-tollgate-app-id"), Some("acme"));
        }
    }
    // Other headers of the request pass untouched.
    let r = get(
        addr,
        false,
        API,
        "/v1/acme/x",
        &[("x-api-key", key), ("x-custom", "kept")],
    )
    .await;
    assert_eq!(r.seen_header("x-custom").as_deref(), Some("kept"));
    served += 1;
    assert_eq!(f.acme.hits(), served);
    assert_eq!(
        auth_result(&proxy, "acme", "ok_api_key").await,
        served as f64
    );
}

#[tokio::test]
async fn a_key_of_another_app_is_forbidden_and_nothing_reaches_the_upstream() {
    let f = Fixture::new().await;
    let proxy = f.start();
    let addr = proxy.addr("http");
    for (key, path) in [
        (&f.globex_key.key, "/v1/acme/orders"),
        (&f.reader.key, "/v1/globex/orders"),
    ] {
        for h2 in [false, true] {
            let r = get(addr, h2, API, path, &[("authorization", &bearer(key))]).await;
            assert_refused(&r, 403, "permission_denied", None);
            assert!(!r.body.contains(key.as_str()), "{}", r.body);
        }
    }
    // Also by the app's tenant hostname.
    let r = get(
        addr,
        false,
        ACME_HOST,
        "/orders",
        &[("x-api-key", &f.globex_key.key)],
    )
    .await;
    assert_refused(&r, 403, "permission_denied", None);
    assert_eq!((f.acme.hits(), f.globex.hits()), (0, 0));
    assert_eq!(auth_result(&proxy, "acme", "wrong_app").await, 3.0);
    assert_eq!(auth_result(&proxy, "globex", "wrong_app").await, 2.0);

    // Each key still works for its own app.
    let r = get(
        addr,
        false,
        API,
        "/v1/globex/x",
        &[("x-api-key", &f.globex_key.key)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.seen_header("x-tollgate-tenant").as_deref(),
        Some("globex")
    );
    assert_eq!(f.globex.hits(), 1);
}

#[tokio::test]
async fn a_key_without_the_routes_scope_gets_insufficient_scope() {
    let f = Fixture::new().await;
    let proxy = f.start();
    let addr = proxy.addr("http");
    for h2 in [false, true] {
        let r = get(
            addr,
            h2,
            ACME_HOST,
            "/admin/orders",
            &[("authorization", &bearer(&f.reader.key))],
        )
        .await;
        assert_refused(&r, 403, "permission_denied", Some(CHALLENGE_SCOPE));
    }
    assert_eq!(f.acme.hits(), 0);
    // The same key outside /admin, and a key holding the scope on /admin, pass.
    let r = get(
        addr,
        false,
        ACME_HOST,
        "/orders",
        &[("x-api-key", &f.reader.key)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(
        addr,
        false,
        ACME_HOST,
        "/admin/orders",
        &[("x-api-key", &f.writer.key)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.seen()["x-tollgate-scopes"], "orders:read orders:write");
    assert_eq!(f.acme.hits(), 2);
    assert_eq!(auth_result(&proxy, "acme", "insufficient_scope").await, 2.0);
}

#[tokio::test]
async fn expired_missing_malformed_unknown_and_ambiguous_keys_get_401() {
    let f = Fixture::new().await;
    let proxy = f.start();
    let addr = proxy.addr("http");
    let (never_configured, _) = generate(KeyKind::Secret, false, "acme").expect("key");
    let malformed = "sk_test_acme_tooshort";
    let expired = bearer(&f.expired.key);
    let unknown = bearer(&never_configured);
    let bad = bearer(malformed);
    let cases: [(&str, Headers, &str); 6] = [
        ("expired", &[("authorization", &expired)], "expired"),
        ("unknown", &[("authorization", &unknown)], "unknown"),
        ("malformed bearer", &[("authorization", &bad)], "malformed"),
        (
            "malformed x-api-key",
            &[("x-api-key", "not-a-key")],
            "malformed",
        ),
        (
            "two different keys",
            &[("authorization", &expired), ("x-api-key", &f.reader.key)],
            "ambiguous",
        ),
        // A key-shaped value with a byte outside visible ASCII.
        (
            "non-ASCII",
            &[("x-api-key", "sk_test_acme_caf\u{e9}")],
            "malformed",
        ),
    ];
    let mut bodies = Vec::new();
    for (what, headers, reason) in cases {
        let before = auth_result(&proxy, "acme", reason).await;
        let r = get(addr, false, API, "/v1/acme/orders", headers).await;
        assert_refused(&r, 401, "unauthenticated", Some(CHALLENGE_INVALID));
        assert_eq!(
            auth_result(&proxy, "acme", reason).await,
            before + 1.0,
            "{what}: counted as {reason}"
        );
        bodies.push((what, r.body_without_request_id()));
    }
    // The body never says which part was wrong: every refusal reads the same.
    for (what, body) in &bodies {
        assert_eq!(body, &bodies[0].1, "{what} differs from {}", bodies[0].0);
    }

    // No credentials at all: 401 with a bare challenge (no error code), on both protocols.
    for h2 in [false, true] {
        let r = get(addr, h2, API, "/v1/acme/orders", &[]).await;
        assert_refused(&r, 401, "unauthenticated", Some(CHALLENGE_MISSING));
        // Another scheme is no bearer credential either.
        let r = get(
            addr,
            h2,
            API,
            "/v1/acme/orders",
            &[("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")],
        )
        .await;
        assert_refused(&r, 401, "unauthenticated", Some(CHALLENGE_MISSING));
    }
    assert_eq!(auth_result(&proxy, "acme", "missing").await, 4.0);
    assert_eq!(f.acme.hits(), 0);
}

#[tokio::test]
async fn a_revoked_key_is_refused_as_soon_as_the_new_config_is_active() {
    let f = Fixture::new().await;
    let proxy = f.start();
    let addr = proxy.addr("http");
    let key = bearer(&f.revocable.key);
    // One keep-alive connection throughout: no per-connection state may outlive revocation.
    let mut conn = client::connect_plain(addr, false).await.expect("connect");
    for _ in 0..3 {
        let r = get_on(
            &mut conn,
            API,
            "/v1/acme/orders",
            &[("authorization", &key)],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.seen()["x-tollgate-key-id"], "acme-revocable");
    }
    let mut h2 = client::connect_plain(addr, true).await.expect("connect h2");
    let r = get_on(&mut h2, API, "/v1/acme/orders", &[("authorization", &key)]).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let version = config_version(&proxy).await;
    let kept: Vec<&Key> = f
        .all_keys()
        .into_iter()
        .filter(|k| k.id != f.revocable.id)
        .collect();
    proxy.write_config(&f.config(&kept)).expect("write config");
    config_version_reaches(&proxy, version + 1).await;

    let hits = f.acme.hits();
    let r = get_on(
        &mut conn,
        API,
        "/v1/acme/orders",
        &[("authorization", &key)],
    )
    .await;
    assert_refused(&r, 401, "unauthenticated", Some(CHALLENGE_INVALID));
    let r = get_on(
        &mut h2,
        API,
        "/v1/acme/orders",
        &[("x-api-key", &f.revocable.key)],
    )
    .await;
    assert_refused(&r, 401, "unauthenticated", Some(CHALLENGE_INVALID));
    let r = get(
        addr,
        false,
        API,
        "/v1/acme/orders",
        &[("authorization", &key)],
    )
    .await;
    assert_refused(&r, 401, "unauthenticated", Some(CHALLENGE_INVALID));
    assert_eq!(f.acme.hits(), hits, "nothing reached the upstream");
    assert_eq!(auth_result(&proxy, "acme", "unknown").await, 3.0);

    // The keys left in the config still work, on the same connection.
    let r = get_on(
        &mut conn,
        API,
        "/v1/acme/orders",
        &[("x-api-key", &f.reader.key)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn each_request_on_a_connection_is_verified_with_its_own_key() {
    let f = Fixture::new().await;
    let proxy = f.start();
    let addr = proxy.addr("http");
    // The same length and prefix as a valid key, its last secret character changed.
    let mut near = f.reader.key.clone();
    let last = if near.ends_with('A') { "B" } else { "A" };
    near.replace_range(near.len() - 1.., last);
    let (reader, writer, near) = (bearer(&f.reader.key), bearer(&f.writer.key), bearer(&near));
    for h2 in [false, true] {
        // One connection; each key twice in a row, then another one.
        let mut conn = client::connect_plain(addr, h2).await.expect("connect");
        for (key, expect) in [
            (&reader, Some("acme-reader")),
            (&reader, Some("acme-reader")),
            (&near, None),
            (&near, None),
            (&writer, Some("acme-writer")),
            (&reader, Some("acme-reader")),
            (&writer, Some("acme-writer")),
        ] {
            let r = get_on(&mut conn, API, "/v1/acme/orders", &[("authorization", key)]).await;
            match expect {
                Some(id) => {
                    assert_eq!(r.status, 200, "{}", r.body);
                    assert_eq!(r.seen()["x-tollgate-key-id"], id, "h2 {h2}");
                }
                None => assert_refused(&r, 401, "unauthenticated", Some(CHALLENGE_INVALID)),
            }
        }
    }
    assert_eq!(auth_result(&proxy, "acme", "unknown").await, 4.0);
    assert_eq!(auth_result(&proxy, "acme", "ok_api_key").await, 10.0);
}

#[tokio::test]
async fn public_keys_work_only_on_browser_routes_from_allowed_origins() {
    let f = Fixture::new().await;
    let proxy = f.start();
    let addr = proxy.addr("http");
    let pk = bearer(&f.public.key);

    // A route that does not allow public keys refuses one, even from its allowed origin.
    for (host, path) in [(API, "/v1/acme/orders"), (ACME_HOST, "/orders")] {
        let r = get(
            addr,
            false,
            host,
            path,
            &[("authorization", &pk), ("origin", ORIGIN)],
        )
        .await;
        assert_refused(&r, 403, "permission_denied", None);
    }
    assert_eq!(
        auth_result(&proxy, "acme", "public_key_not_allowed").await,
        2.0
    );
    assert_eq!(f.acme.hits(), 0);

    // The browser route accepts it from the allowed origin only.
    for h2 in [false, true] {
        let r = get(
            addr,
            h2,
            ACME_HOST,
            "/browser/cart",
            &[("authorization", &pk), ("origin", ORIGIN)],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.seen()["x-tollgate-key-id"], "acme-public");
        assert_eq!(r.seen()["x-tollgate-tenant"], "acme");
        assert_key_not_forwarded(&r, &f.public.key);
    }
    assert_eq!(f.acme.hits(), 2);
    let refused: [&[(&str, &str)]; 4] = [
        &[("authorization", &pk), ("origin", "https://evil.example")],
        &[
            ("authorization", &pk),
            ("origin", "https://app.acme.example.evil.example"),
        ],
        &[("x-api-key", &f.public.key), ("origin", "null")],
        &[("authorization", &pk)],
    ];
    for headers in refused {
        let r = get(addr, false, ACME_HOST, "/browser/cart", headers).await;
        assert_refused(&r, 403, "permission_denied", None);
    }
    assert_eq!(auth_result(&proxy, "acme", "origin_not_allowed").await, 4.0);
    assert_eq!(f.acme.hits(), 2, "refusals reached nothing");

    // Secret keys are still fine on the browser route.
    let r = get(
        addr,
        false,
        ACME_HOST,
        "/browser/cart",
        &[("x-api-key", &f.reader.key)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let f = Fixture::new().await;
    let proxy = f.start();
    let addr = proxy.addr("http");
    let spoofed: &[(&str, &str)] = &[
        ("x-tollgate-subject", "admin"),
        ("x-tollgate-subject", "root"),
        ("X-Tollgate-Tenant", "globex"),
        ("x-tollgate-roles", "admin,superuser"),
        ("x-tollgate-scopes", "orders:write"),
        ("x-tollgate-auth", "token"),
        ("x-tollgate-issuer", "https://evil.example"),
        ("x-tollgate-key-id", "globex-1"),
        ("x-tollgate-app-id", "globex"),
        ("x-tollgate-anything", "1"),
    ];
    for h2 in [false, true] {
        // Authenticated: only the verified identity.
        let mut headers = spoofed.to_vec();
        headers.push(("x-api-key", &f.reader.key));
        let r = get(addr, h2, API, "/v1/acme/orders", &headers).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let seen = r.seen();
        assert_eq!(seen["x-tollgate-subject"], "key:acme-reader", "{seen:?}");
        assert_eq!(seen["x-tollgate-tenant"], "acme");
        assert_eq!(seen["x-tollgate-scopes"], "orders:read");
        assert_eq!(seen["x-tollgate-auth"], "api_key");
        assert_eq!(seen["x-tollgate-key-id"], "acme-reader");
        assert_eq!(seen["x-tollgate-app-id"], "acme");
        for gone in [
            "x-tollgate-roles",
            "x-tollgate-issuer",
            "x-tollgate-anything",
        ] {
            assert!(
                seen.get(gone).is_none(),
                "h2={h2}: upstream saw `{gone}`: {seen:?}"
            );
        }

        // An open route: no identity at all, whatever the client claims.
        let r = get(addr, h2, OPEN_HOST, "/page", spoofed).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let seen = r.seen();
        let identity: Vec<&String> = seen
            .keys()
            .filter(|k| k.starts_with("x-tollgate-") && k.as_str() != "x-tollgate-app-id")
            .collect();
        assert!(
            identity.is_empty(),
            "h2={h2}: open route forwarded {identity:?}"
        );
        assert_eq!(seen["x-tollgate-app-id"], "open", "set by the proxy");
    }
    assert_eq!((f.acme.hits(), f.open.hits()), (2, 2));
    assert_eq!(auth_result(&proxy, "open", "ok_api_key").await, 0.0);
}

#[tokio::test]
async fn grpc_requests_get_unauthenticated_and_permission_denied_statuses() {
    let f = Fixture::new().await;
    let proxy = f.start();
    let addr = proxy.addr("http");
    let grpc_status = |r: &Reply| r.header("grpc-status").map(str::to_owned);

    // No credentials: UNAUTHENTICATED in a trailers-only HTTP 200.
    let r = grpc_call(addr, API, "/v1/acme/orders.Orders/List", &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(grpc_status(&r).as_deref(), Some(GRPC_UNAUTHENTICATED));
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert!(r.body.is_empty(), "trailers-only: {}", r.body);
    // An invalid key: UNAUTHENTICATED too.
    let r = grpc_call(
        addr,
        API,
        "/v1/acme/orders.Orders/List",
        &[("authorization", &bearer(&f.expired.key))],
    )
    .await;
    assert_eq!(grpc_status(&r).as_deref(), Some(GRPC_UNAUTHENTICATED));

    // A valid key without the route's scope, or of another app: PERMISSION_DENIED.
    let r = grpc_call(
        addr,
        ACME_HOST,
        "/admin/orders.Orders/Delete",
        &[("authorization", &bearer(&f.reader.key))],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(grpc_status(&r).as_deref(), Some(GRPC_PERMISSION_DENIED));
    let r = grpc_call(
        addr,
        API,
        "/v1/acme/orders.Orders/List",
        &[("x-api-key", &f.globex_key.key)],
    )
    .await;
    assert_eq!(grpc_status(&r).as_deref(), Some(GRPC_PERMISSION_DENIED));
    assert_eq!(f.acme.hits(), 0);

    // With the scope the call goes through (the echo upstream answers, no proxy status).
    let r = grpc_call(
        addr,
        ACME_HOST,
        "/admin/orders.Orders/Delete",
        &[("authorization", &bearer(&f.writer.key))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(grpc_status(&r), None, "{:?}", r.headers);
    assert_eq!(r.seen()["x-tollgate-key-id"], "acme-writer");
    assert_eq!(f.acme.hits(), 1);
}

#[tokio::test]
async fn auth_results_count_successes_and_each_refusal_reason() {
    let f = Fixture::new().await;
    let proxy = f.start();
    let addr = proxy.addr("http");
    let reader = bearer(&f.reader.key);
    let pk = bearer(&f.public.key);
    let requests: [(&str, &str, Headers, u16); 13] = [
        (
            API,
            "/v1/acme/a",
            &[("authorization", reader.as_str())],
            200,
        ),
        (
            API,
            "/v1/acme/b",
            &[("x-api-key", f.reader.key.as_str())],
            200,
        ),
        (
            ACME_HOST,
            "/admin/c",
            &[("x-api-key", f.writer.key.as_str())],
            200,
        ),
        (
            ACME_HOST,
            "/browser/d",
            &[("authorization", pk.as_str()), ("origin", ORIGIN)],
            200,
        ),
        (
            API,
            "/v1/globex/e",
            &[("x-api-key", f.globex_key.key.as_str())],
            200,
        ),
        (API, "/v1/acme/f", &[], 401),
        (
            API,
            "/v1/acme/g",
            &[("x-api-key", f.expired.key.as_str())],
            401,
        ),
        (
            API,
            "/v1/acme/h",
            &[("x-api-key", "sk_live_acme_short")],
            401,
        ),
        (
            API,
            "/v1/acme/i",
            &[("x-api-key", f.globex_key.key.as_str())],
            403,
        ),
        (
            ACME_HOST,
            "/admin/j",
            &[("authorization", reader.as_str())],
            403,
        ),
        (
            ACME_HOST,
            "/browser/k",
            &[("authorization", pk.as_str())],
            403,
        ),
        (
            API,
            "/v1/acme/l",
            &[("authorization", pk.as_str()), ("origin", ORIGIN)],
            403,
        ),
        (OPEN_HOST, "/m", &[("x-api-key", "whatever")], 200),
    ];
    for (host, path, headers, status) in &requests {
        let r = get(addr, false, host, path, headers).await;
        assert_eq!(r.status, *status, "{host}{path}: {}", r.body);
    }
    let expected = [
        ("acme", "ok_api_key", 4.0),
        ("globex", "ok_api_key", 1.0),
        ("acme", "missing", 1.0),
        ("acme", "expired", 1.0),
        ("acme", "malformed", 1.0),
        ("acme", "wrong_app", 1.0),
        ("acme", "insufficient_scope", 1.0),
        ("acme", "origin_not_allowed", 1.0),
        ("acme", "public_key_not_allowed", 1.0),
    ];
    let text = proxy.metrics().await.expect("metrics");
    for (app, result, n) in expected {
        assert_eq!(
            auth_result(&proxy, app, result).await,
            n,
            "{app} {result}\n{text}"
        );
    }
    // Every authenticated request counted exactly once; open routes not at all.
    let total = |app: &str| {
        tollgate_tests::proxy::metric_value(
            &text,
            tollgate_tests::auth::AUTH_RESULTS,
            &[&format!("app=\"{app}\"")],
        )
    };
    assert_eq!(total("acme"), 11.0, "{text}");
    assert_eq!(total("globex"), 1.0, "{text}");
    assert_eq!(total("open"), 0.0, "{text}");
}
