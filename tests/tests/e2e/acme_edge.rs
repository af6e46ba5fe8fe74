//! ACME challenges at the edge, without a CA: the real control service, with
//! challenges appended to its SQLite event log as its ACME client would record them,
//! and a real proxy following it. HTTP-01 is checked with a real HTTP client,
//! TLS-ALPN-01 with a real rustls client offering `acme-tls/1` (RFC 8737).
//!
//! Waits are bounded polls of the proxy's `/config`; nothing depends on timing.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tollgate_tests::auth::get;
use tollgate_tests::config::Config;
use tollgate_tests::control::ControlProcess;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::tls::{TestCert, client_config, connect, now_unix, peer_cert};
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::{config_view, until};

const CATCH_UP: Duration = Duration::from_secs(60);
const APP: &str = "web";
/// HTTP-01 challenge; its `/.well-known` route redirects to https.
const WEB: &str = "web.acme.test";
/// TLS-ALPN-01 challenge.
const ALPN: &str = "alpn.acme.test";
/// Bound to the app, no challenge.
const OTHER: &str = "other.acme.test";
const PREFIX: &str = "/.well-known/acme-challenge/";
const ACME_TLS: &[u8] = b"acme-tls/1";
/// `acmeIdentifier` (1.3.6.1.5.5.7.1.31) as a DER OID.
const ACME_OID: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];

/// Through the API: app `web` with the upstream, three hostnames, a route for
/// `web.acme.test/.well-known` that redirects to https (so the challenge path is on
/// a redirecting route), a wildcard certificate (the normal one
/// for `alpn.acme.test`), and both challenge hostnames under management.
async fn set_up(cp: &ControlProcess, upstream: std::net::SocketAddr, wildcard: &TestCert) {
    let ok = |what: &str, (status, v): (u16, Value)| {
        assert!((200..300).contains(&status), "{what}: {status} {v}");
    };
    ok(
        "app",
        cp.api("POST", "/api/v1/apps", Some(&json!({"id": APP})))
            .await,
    );
    ok(
        "instance",
        cp.api(
            "POST",
            &format!("/api/v1/apps/{APP}/upstreams/default/instances"),
            Some(&json!({"address": upstream.to_string()})),
        )
        .await,
    );
    for h in [WEB, ALPN, OTHER] {
        ok(
            h,
            cp.api(
                "PUT",
                &format!("/api/v1/hostnames/{h}"),
                Some(&json!({"app": APP})),
            )
            .await,
        );
    }
    ok(
        "route",
        cp.api(
            "POST",
            "/api/v1/routes",
            Some(
                &json!({"id": "web-well-known", "hostname": WEB, "path_prefix": "/.well-known",
                         "app": APP, "https_redirect": true}),
            ),
        )
        .await,
    );
    ok(
        "certificate",
        cp.api(
            "POST",
            "/api/v1/certificates",
            Some(
                &json!({"id": "wild", "cert_pem": wildcard.cert_pem, "key_pem": wildcard.key_pem}),
            ),
        )
        .await,
    );
    for (h, kind) in [(WEB, "http-01"), (ALPN, "tls-alpn-01")] {
        ok(
            h,
            cp.api(
                "PUT",
                &format!("/api/v1/hostnames/{h}/tls"),
                Some(&json!({"challenge": kind})),
            )
            .await,
        );
    }
}

/// Appends `acme_challenge_published` for `hostname` to the service's log, as its
/// ACME client records it; returns the event id.
async fn publish(cp: &ControlProcess, hostname: &str, kind: &str, token: &str) -> i64 {
    let payload = json!({
        "type": "acme_challenge_published",
        "challenge": {"hostname": hostname, "kind": kind, "token": token,
                      "key_authorization": key_authorization(token)},
        "at_unix": now_unix(),
    });
    cp.append_raw("tls", hostname, &payload).await
}

fn key_authorization(token: &str) -> String {
    format!("{token}.thumbprint-of-the-account-key")
}

async fn serving(proxy: &ProxyProcess, event_id: i64) {
    until(
        &format!("the proxy to serve event {event_id}"),
        CATCH_UP,
        || async {
            let serving = config_view(proxy).await["control"]["serving_event_id"].as_i64()?;
            (serving >= event_id).then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn http01_and_tls_alpn01_are_answered_from_the_feed() {
    let up = Upstream::start("web").await;
    let cp = ControlProcess::start().await.expect("control starts");
    let wildcard = TestCert::new(&["*.acme.test"]);
    set_up(&cp, up.addr, &wildcard).await;
    let state = tempfile::tempdir().expect("state dir");
    let config = Config::new()
        .listener("http")
        .tls_listener("tls", "")
        .raw(&cp.proxy_table("edge-1", state.path()))
        .build();
    let proxy = ProxyProcess::start(&config, &[]).expect("proxy starts");

    publish(&cp, WEB, "http-01", "web-token").await;
    let last = publish(&cp, ALPN, "tls-alpn-01", "alpn-token").await;
    serving(&proxy, last).await;
    let http = proxy.addr("http");

    // HTTP-01: the key authorization, before the route's redirect to https.
    let path = format!("{PREFIX}web-token");
    let r = get(http, false, "WEB.acme.test.:80", &path, &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.body, key_authorization("web-token"));
    let r = get(http, true, WEB, &path, &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, key_authorization("web-token").as_str()),
        "h2c"
    );
    let r = get(http, false, WEB, &format!("{PREFIX}wrong-token"), &[]).await;
    assert_eq!(r.status, 404, "{r:?}");
    // Everything else on that route is still redirected.
    let r = get(http, false, WEB, "/.well-known/security.txt", &[]).await;
    assert!(
        (300..400).contains(&r.status) && r.header("location").is_some(),
        "{r:?}"
    );
    // A host without an HTTP-01 challenge is routed as ever (the echo upstream answers).
    let r = get(http, false, OTHER, &path, &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.seen_header("host").is_some(), "{r:?}");
    let r = get(http, false, ALPN, &format!("{PREFIX}alpn-token"), &[]).await;
    assert_ne!(r.body, key_authorization("alpn-token"), "{r:?}");

    // TLS-ALPN-01: the challenge certificate on acme-tls/1, then a clean close.
    let tls = proxy.addr("tls");
    let mut s = connect(tls, ALPN, acme_client())
        .await
        .expect("acme-tls/1 handshake");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(ACME_TLS));
    let leaf = peer_cert(&s).expect("challenge certificate");
    assert_ne!(leaf, wildcard.der());
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        key_authorization("alpn-token").as_bytes(),
    );
    assert_acme_identifier(&leaf, digest.as_ref());
    assert!(contains(&leaf, ALPN.as_bytes()), "the leaf names {ALPN}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "closed without HTTP: {read:?} {rest:?}"
    );

    // acme-tls/1 for a name without a TLS-ALPN-01 challenge is refused.
    for sni in [WEB, OTHER] {
        assert!(
            connect(tls, sni, acme_client()).await.is_err(),
            "{sni}: acme-tls/1 without a challenge must fail"
        );
    }

    // A normal client for the same name gets the normal certificate.
    let normal = connect(tls, ALPN, client_config(&[&wildcard], &[b"http/1.1"]))
        .await
        .expect("normal handshake");
    assert_eq!(peer_cert(&normal), Some(wildcard.der()));
    assert_eq!(normal.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    let answered = |kind: &'static str| {
        let proxy = &proxy;
        async move {
            proxy
                .metric(
                    "tollgate_acme_challenges_answered_total",
                    &[&format!("kind=\"{kind}\"")],
                )
                .await
                .expect("metrics")
        }
    };
    assert_eq!(answered("http-01").await, 2.0);
    assert_eq!(answered("tls-alpn-01").await, 1.0);
    assert_eq!(
        proxy
            .metric("tollgate_acme_challenges_active", &[])
            .await
            .expect("metrics"),
        2.0
    );

    // A failed order takes the challenge off: the path is routed (and redirected) again.
    let failed = cp
        .append_raw(
            "tls",
            WEB,
            &json!({"type": "tls_order_failed", "hostname": WEB, "error": "test",
               "validation": true, "retry_at_unix": now_unix() + 3600, "at_unix": now_unix()}),
        )
        .await;
    serving(&proxy, failed).await;
    let r = get(http, false, WEB, &path, &[]).await;
    assert!((300..400).contains(&r.status), "{r:?}");
    assert_eq!(
        proxy
            .metric("tollgate_acme_challenges_active", &[])
            .await
            .expect("metrics"),
        1.0
    );
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The leaf holds the `acmeIdentifier` extension, critical, whose value is the DER
/// OCTET STRING of `digest`: `OID, BOOLEAN TRUE, OCTET STRING { OCTET STRING(32) }`.
fn assert_acme_identifier(leaf: &[u8], digest: &[u8]) {
    let at = leaf
        .windows(ACME_OID.len())
        .position(|w| w == ACME_OID)
        .expect("acmeIdentifier extension");
    let mut want = vec![0x01, 0x01, 0xff, 0x04, 0x22, 0x04, 0x20];
    want.extend_from_slice(digest);
    let after = &leaf[at + ACME_OID.len()..];
    assert!(
        after.starts_with(&want),
        "critical acmeIdentifier holding SHA-256(key_authorization)"
    );
}

/// A client that offers only `acme-tls/1` and accepts the self-signed challenge
/// certificate without checks (a CA's validator checks the extension, not a chain).
fn acme_client() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ACME_TLS.to_vec()];
    Arc::new(cfg)
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    // webpki refuses to parse a leaf with a critical extension it does not know
    // (`acmeIdentifier`), so the handshake signature is taken as valid too.
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
