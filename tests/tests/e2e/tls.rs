//! TLS termination over real handshakes: certificates chosen by SNI (exact and
//! wildcard), ALPN to HTTP/2 or HTTP/1.1, unknown names refused cleanly, and the
//! listener's minimum version and cipher suites enforced.

use rustls::CipherSuite;
use std::time::Duration;
use tollgate_tests::config::{Config, Files};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::session::TlsSession;
use tollgate_tests::tls::{self, TestCert, client_config, client_config_versions};
use tollgate_tests::upstream::Upstream;

const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1_ONLY: &[&[u8]] = &[b"http/1.1"];

fn echo(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("echo JSON ({e}): {body}"))
}

#[tokio::test]
async fn each_hostname_gets_its_own_certificate_and_app_over_h2_and_h1() {
    let alpha = Upstream::start("alpha").await;
    let beta = Upstream::start("beta").await;
    let cert_a = TestCert::new(&["a.test"]);
    let cert_b = TestCert::new(&["b.test"]);
    let cfg = Config::new()
        .tls_listener("tls", "")
        .cert("a")
        .cert("b")
        .app("alpha", &["a.test"], alpha.addr)
        .app("beta", &["b.test"], beta.addr)
        .build();
    let files = Files::new().cert("a", &cert_a).cert("b", &cert_b);
    let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");
    let addr = proxy.addr("tls");

    for (sni, cert, app) in [("a.test", &cert_a, "alpha"), ("b.test", &cert_b, "beta")] {
        for (alpn, want_h2) in [(H2_H1, true), (H1_ONLY, false)] {
            // The client trusts both certificates, so only the DER says which one was served.
            let cfg = client_config(&[&cert_a, &cert_b], alpn);
            let mut s = TlsSession::open(addr, sni, cfg)
                .await
                .unwrap_or_else(|e| panic!("handshake {sni} h2={want_h2}: {e}"));
            assert!(
                s.negotiated.peer_cert == cert.der(),
                "{sni}: wrong certificate presented"
            );
            assert_eq!(s.negotiated.h2, want_h2, "{sni}: ALPN outcome");
            let (status, headers, body) = s.get("/hello?x=1").await.expect("request");
            assert_eq!(status, 200, "{sni}: {body}");
            assert_eq!(headers["x-tollgate-app-id"], app);
            let v = echo(&body);
            assert_eq!(v["upstream"], app, "{sni} routed to the wrong app");
            assert_eq!(v["path"], "/hello");
            assert_eq!(v["query"], "x=1");
            assert_eq!(v["headers"]["x-forwarded-proto"], "https");
            // A second request reuses the same connection.
            let (status, _, body) = s.get("/again").await.expect("second request");
            assert_eq!(status, 200, "{body}");
        }
    }
    assert_eq!(alpha.hits(), 4);
    assert_eq!(beta.hits(), 4);
    let handshakes = proxy
        .metric(
            "tollgate_tls_handshakes_total",
            &[r#"listener="tls""#, r#"result="ok""#],
        )
        .await
        .unwrap();
    assert_eq!(handshakes, 4.0);
}

#[tokio::test]
async fn wildcard_certificate_serves_subdomains_and_unknown_names_fail_cleanly() {
    let up = Upstream::start("tenant").await;
    let other = Upstream::start("other").await;
    let wild = TestCert::new(&["*.tenant.test"]);
    let exact = TestCert::new(&["exact.test"]);
    let cfg = Config::new()
        .tls_listener("tls", "")
        .cert("wild")
        .cert("exact")
        .app("tenant", &["*.tenant.test"], up.addr)
        .app("other", &["exact.test"], other.addr)
        .build();
    let files = Files::new().cert("wild", &wild).cert("exact", &exact);
    let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");
    let addr = proxy.addr("tls");
    let trust_all = client_config(&[&wild, &exact], H2_H1);

    let mut s = TlsSession::open(addr, "a.tenant.test", trust_all.clone())
        .await
        .expect("wildcard handshake");
    assert!(
        s.negotiated.peer_cert == wild.der(),
        "wildcard certificate expected"
    );
    let (status, headers, body) = s.get("/w").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-tollgate-app-id"], "tenant");
    assert_eq!(echo(&body)["upstream"], "tenant");

    // No certificate covers these: not a listed name, and two labels below the wildcard.
    for sni in ["unknown.test", "x.a.tenant.test"] {
        let err = tls::connect(addr, sni, trust_all.clone()).await;
        assert!(
            err.is_err(),
            "{sni}: handshake should fail without a certificate"
        );
    }
    let refused = proxy
        .wait_metric(
            "tollgate_tls_handshakes_total",
            &[r#"listener="tls""#, r#"result="no_certificate""#],
            Duration::from_secs(20),
            |v| v >= 2.0,
        )
        .await
        .unwrap();
    assert_eq!(
        refused, 2.0,
        "both refused handshakes counted as no_certificate"
    );

    // The proxy keeps serving other names, exact and wildcard, after the failures.
    let mut s = TlsSession::open(addr, "exact.test", trust_all.clone())
        .await
        .expect("exact handshake");
    assert!(s.negotiated.peer_cert == exact.der());
    let (status, _, body) = s.get("/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo(&body)["upstream"], "other");
    let mut s = TlsSession::open(addr, "b.tenant.test", client_config(&[&wild], H1_ONLY))
        .await
        .expect("second wildcard handshake");
    assert!(!s.negotiated.h2);
    let (status, _, body) = s.get("/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo(&body)["upstream"], "tenant");
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn minimum_version_and_cipher_suites_are_enforced() {
    let up = Upstream::start("app").await;
    let cert = TestCert::new(&["a.test"]);
    let cfg = Config::new()
        .tls_listener("default", "")
        .tls_listener("tls13", "min_version = \"1.3\"")
        .tls_listener(
            "suite",
            "min_version = \"1.3\"\ncipher_suites = [\"TLS13_AES_128_GCM_SHA256\"]",
        )
        .cert("a")
        .app("app", &["a.test"], up.addr)
        .build();
    let files = Files::new().cert("a", &cert);
    let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");
    let tls12_only = client_config_versions(&[&cert], H2_H1, &[&rustls::version::TLS12]);
    let tls13_only = client_config_versions(&[&cert], H2_H1, &[&rustls::version::TLS13]);
    let any = client_config(&[&cert], H2_H1);

    // The same TLS 1.2 client works on the default listener, so the refusal below is
    // the 1.3 minimum at work, not a broken client.
    let mut s = TlsSession::open(proxy.addr("default"), "a.test", tls12_only.clone())
        .await
        .expect("TLS 1.2 on the default listener");
    assert_eq!(s.negotiated.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(s.get("/").await.unwrap().0, 200);

    let refused = tls::connect(proxy.addr("tls13"), "a.test", tls12_only).await;
    assert!(
        refused.is_err(),
        "a TLS 1.2-only client must be refused by a 1.3-only listener"
    );
    let mut s = TlsSession::open(proxy.addr("tls13"), "a.test", tls13_only)
        .await
        .expect("TLS 1.3 client accepted");
    assert_eq!(s.negotiated.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(s.get("/").await.unwrap().0, 200);
    let errors = proxy
        .wait_metric(
            "tollgate_tls_handshakes_total",
            &[r#"listener="tls13""#, r#"result="error""#],
            Duration::from_secs(20),
            |v| v >= 1.0,
        )
        .await
        .unwrap();
    assert_eq!(errors, 1.0, "the refused handshake is counted as an error");

    // A client offering every suite gets the only one the listener allows; the default
    // listener picks another with the same client, so the setting is what decides.
    let mut s = TlsSession::open(proxy.addr("suite"), "a.test", any.clone())
        .await
        .expect("handshake on the restricted listener");
    assert_eq!(
        s.negotiated.suite,
        Some(CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    assert_eq!(s.get("/").await.unwrap().0, 200);
    let s = TlsSession::open(proxy.addr("default"), "a.test", any)
        .await
        .unwrap();
    assert_ne!(
        s.negotiated.suite,
        Some(CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    assert_eq!(up.hits(), 3);
}
