//! Config reload without restart: certificate rotation, routes added by file change
//! and SIGHUP, invalid files refused while the running config keeps serving, and bad
//! files refused at start with a message naming the problem.

use tollgate_tests::client;
use tollgate_tests::config::{Config, Files, expect_start_failure};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::session::TlsSession;
use tollgate_tests::tls::{TestCert, client_config};
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::{SOON, config_version, config_version_reaches, config_view, until};

const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1_ONLY: &[&[u8]] = &[b"http/1.1"];
const RELOADS: &str = "tollgate_config_reloads_total";

fn tls_config(up: &Upstream) -> String {
    Config::new()
        .tls_listener("tls", "")
        .cert("a")
        .app("alpha", &["a.test"], up.addr)
        .build()
}

/// Waits for the reload counter of `result` to reach `n`.
async fn reloads_reach(proxy: &ProxyProcess, result: &str, n: f64) {
    let label = format!("result=\"{result}\"");
    let got = proxy
        .wait_metric(RELOADS, &[&label], SOON, |v| v >= n)
        .await
        .unwrap();
    assert!(
        got >= n,
        "{RELOADS}{{{label}}} is {got}, waited for {n}\n{}",
        proxy.logs()
    );
}

/// Opens a fresh TLS connection for `a.test` and checks it serves a request.
async fn fresh(proxy: &ProxyProcess, trusted: &[&TestCert]) -> TlsSession {
    let mut s = TlsSession::open(proxy.addr("tls"), "a.test", client_config(trusted, H2_H1))
        .await
        .expect("handshake");
    let (status, _, body) = s.get("/fresh").await.expect("request");
    assert_eq!(status, 200, "{body}");
    s
}

#[tokio::test]
async fn certificate_rotation_reaches_new_connections_and_spares_open_ones() {
    let up = Upstream::start("alpha").await;
    let old = TestCert::new(&["a.test"]);
    let new = TestCert::new(&["a.test"]);
    let files = Files::new().cert("a", &old);
    let proxy = ProxyProcess::start(&tls_config(&up), &files.refs()).expect("proxy starts");
    let fingerprint_before = config_view(&proxy).await["certificates"][0]["sha256"].clone();

    // Long-lived connections, one per protocol, each used once before the rotation.
    let mut open_h1 =
        TlsSession::open(proxy.addr("tls"), "a.test", client_config(&[&old], H1_ONLY))
            .await
            .expect("h1 handshake");
    let mut open_h2 = TlsSession::open(proxy.addr("tls"), "a.test", client_config(&[&old], H2_H1))
        .await
        .expect("h2 handshake");
    assert!(!open_h1.negotiated.h2 && open_h2.negotiated.h2);
    for s in [&mut open_h1, &mut open_h2] {
        assert!(s.negotiated.peer_cert == old.der());
        assert_eq!(
            s.get("/before").await.expect("request before rotation").0,
            200
        );
    }

    proxy.write_file("a.key", &new.key_pem).unwrap();
    proxy.write_file("a.crt", &new.cert_pem).unwrap();

    let rotated = until(
        "a new connection to present the new certificate",
        SOON,
        || async {
            let s = TlsSession::open(
                proxy.addr("tls"),
                "a.test",
                client_config(&[&old, &new], H2_H1),
            )
            .await
            .ok()?;
            (s.negotiated.peer_cert == new.der()).then_some(s)
        },
    )
    .await;
    let mut rotated = rotated;
    assert_eq!(
        rotated
            .get("/after")
            .await
            .expect("request on new connection")
            .0,
        200
    );
    // A client that only trusts the new certificate now succeeds.
    fresh(&proxy, &[&new]).await;

    // The open connections were not cut and keep their handshake's certificate.
    for s in [&mut open_h1, &mut open_h2] {
        let (status, _, body) = s.get("/after").await.expect("old connection still serves");
        assert_eq!(status, 200, "{body}");
        assert!(s.negotiated.peer_cert == old.der());
    }

    let view = config_view(&proxy).await;
    assert!(view["version"].as_u64().unwrap() >= 2, "{view}");
    assert_ne!(
        view["certificates"][0]["sha256"], fingerprint_before,
        "{view}"
    );
    reloads_reach(&proxy, "ok", 1.0).await;
}

#[tokio::test]
async fn invalid_certificate_on_reload_is_refused_and_the_old_one_stays() {
    let up = Upstream::start("alpha").await;
    let good = TestCert::new(&["a.test"]);
    let stranger = TestCert::new(&["a.test"]);
    let files = Files::new().cert("a", &good);
    let proxy = ProxyProcess::start(&tls_config(&up), &files.refs()).expect("proxy starts");
    assert_eq!(config_version(&proxy).await, 1);

    // A key that belongs to another certificate.
    proxy.write_file("a.key", &stranger.key_pem).unwrap();
    reloads_reach(&proxy, "error", 1.0).await;
    assert!(
        proxy
            .logs()
            .contains("private key does not match certificate"),
        "reason not logged:\n{}",
        proxy.logs()
    );
    let s = fresh(&proxy, &[&good, &stranger]).await;
    assert!(
        s.negotiated.peer_cert == good.der(),
        "the old certificate must still be served"
    );
    assert_eq!(config_version(&proxy).await, 1);

    // Garbage instead of a certificate.
    proxy
        .write_file("a.crt", "this is not a certificate\n")
        .unwrap();
    reloads_reach(&proxy, "error", 2.0).await;
    assert!(
        proxy.logs().contains("no PEM certificate found"),
        "{}",
        proxy.logs()
    );
    let s = fresh(&proxy, &[&good, &stranger]).await;
    assert!(s.negotiated.peer_cert == good.der());
    assert_eq!(config_version(&proxy).await, 1);
    assert_eq!(
        proxy.metric("tollgate_config_version", &[]).await.unwrap(),
        1.0
    );
    assert_eq!(
        proxy.metric(RELOADS, &[r#"result="ok""#]).await.unwrap(),
        0.0
    );

    // Putting the right files back is accepted again.
    proxy.write_file("a.key", &good.key_pem).unwrap();
    proxy.write_file("a.crt", &good.cert_pem).unwrap();
    reloads_reach(&proxy, "ok", 1.0).await;
    assert_eq!(config_version(&proxy).await, 2);
    let s = fresh(&proxy, &[&good]).await;
    assert!(s.negotiated.peer_cert == good.der());
}

async fn get_host(proxy: &ProxyProcess, host: &str) -> (u16, String) {
    let (status, _, body) = client::get_plain(proxy.addr("http"), host, "/r")
        .await
        .expect("request");
    (status, body)
}

fn upstream_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("echo JSON ({e}): {body}"));
    v["upstream"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn routes_reload_on_file_change_and_sighup_and_bad_routes_are_refused() {
    let alpha = Upstream::start("alpha").await;
    let beta = Upstream::start("beta").await;
    let v1 = Config::new()
        .listener("http")
        .app("alpha", &["a.test"], alpha.addr);
    let proxy = ProxyProcess::start(&v1.build(), &[]).expect("proxy starts");
    assert_eq!(config_version(&proxy).await, 1);
    assert_eq!(get_host(&proxy, "b.test").await.0, 404);

    // A new app and hostname, by editing the file.
    let v2 = v1.clone().app("beta", &["b.test"], beta.addr);
    proxy.write_config(&v2.build()).unwrap();
    until("b.test to route to beta", SOON, || async {
        let (status, body) = get_host(&proxy, "b.test").await;
        (status == 200).then(|| assert_eq!(upstream_of(&body), "beta"))
    })
    .await;
    assert_eq!(config_version(&proxy).await, 2);
    let apps: Vec<String> = config_view(&proxy).await["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(apps, ["alpha", "beta"]);
    assert_eq!(upstream_of(&get_host(&proxy, "a.test").await.1), "alpha");

    // SIGHUP reloads even though nothing changed.
    proxy.signal("HUP").unwrap();
    assert_eq!(config_version_reaches(&proxy, 3).await, 3);
    reloads_reach(&proxy, "ok", 2.0).await;
    assert!(proxy.logs().contains("sighup"), "{}", proxy.logs());

    // A route to an app that does not exist is refused as a whole.
    let bad = v2
        .clone()
        .route("c.test", "ghost")
        .app("gamma", &["g.test"], beta.addr);
    proxy.write_config(&bad.build()).unwrap();
    reloads_reach(&proxy, "error", 1.0).await;
    let logs = proxy.logs();
    assert!(logs.contains("config reload refused"), "{logs}");
    assert!(
        logs.contains("no app `ghost`"),
        "reason not logged:\n{logs}"
    );
    assert_eq!(config_version(&proxy).await, 3);
    // Nothing of the refused file applies, not even its valid parts.
    assert_eq!(get_host(&proxy, "g.test").await.0, 404);
    assert_eq!(get_host(&proxy, "c.test").await.0, 404);
    assert_eq!(upstream_of(&get_host(&proxy, "a.test").await.1), "alpha");
    assert_eq!(upstream_of(&get_host(&proxy, "b.test").await.1), "beta");
}

#[tokio::test]
async fn signals_and_file_changes_right_after_start_are_not_lost() {
    let alpha = Upstream::start("alpha").await;
    let cfg = Config::new()
        .listener("http")
        .app("alpha", &["a.test"], alpha.addr);
    for _ in 0..3 {
        let mut proxy = ProxyProcess::start(&cfg.build(), &[]).expect("proxy starts");
        // SIGHUP as soon as the ready file exists: a reload, not the default "terminate".
        proxy.signal("HUP").unwrap();
        assert_eq!(config_version_reaches(&proxy, 2).await, 2);
        assert_eq!(get_host(&proxy, "a.test").await.0, 200);
        proxy.signal("TERM").unwrap();
        let status = proxy.wait_exit(SOON).unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM drains and exits 0: {status}"
        );
    }
    for _ in 0..3 {
        let proxy = ProxyProcess::start(&cfg.build(), &[]).expect("proxy starts");
        // A change written the moment the proxy is ready is still picked up.
        let more = cfg.clone().app("beta", &["b.test"], alpha.addr);
        proxy.write_config(&more.build()).unwrap();
        assert_eq!(config_version_reaches(&proxy, 2).await, 2);
        assert_eq!(get_host(&proxy, "b.test").await.0, 200);
    }
}

/// Starts a config that must be refused; returns stderr after checking the exit code.
fn refused(config: &str, files: &Files) -> String {
    let (status, stderr) = expect_start_failure(config, &files.refs(), SOON).expect("proxy runs");
    assert_eq!(
        status.code(),
        Some(1),
        "exit status {status}; stderr: {stderr}"
    );
    assert!(stderr.starts_with("tollgate: "), "{stderr}");
    stderr
}

#[tokio::test]
async fn bad_config_at_start_exits_nonzero_naming_the_problem() {
    let up = Upstream::start("alpha").await;
    let cert = TestCert::new(&["a.test"]);
    let other = TestCert::new(&["a.test"]);
    let base = Config::new()
        .tls_listener("tls", "")
        .cert("a")
        .app("alpha", &["a.test"], up.addr);
    let good = Files::new().cert("a", &cert);

    let err = refused(&base.clone().route("c.test", "ghost").build(), &good);
    assert!(
        err.contains("invalid routes") && err.contains("routes[0].app: no app `ghost`"),
        "{err}"
    );

    let err = refused(
        &base.clone().raw("[limits]\ndrain_timeout = 5").build(),
        &good,
    );
    assert!(err.contains("unknown field `drain_timeout`"), "{err}");
    assert!(err.contains("tollgate.toml"), "names the file: {err}");

    let garbage = Files::new()
        .file("a.crt", "not a certificate")
        .file("a.key", &cert.key_pem);
    let err = refused(&base.build(), &garbage);
    assert!(
        err.contains("invalid certificates") && err.contains("no PEM certificate found"),
        "{err}"
    );

    let mismatched = Files::new()
        .file("a.crt", &cert.cert_pem)
        .file("a.key", &other.key_pem);
    let err = refused(&base.build(), &mismatched);
    assert!(
        err.contains("private key does not match certificate"),
        "{err}"
    );

    let err = refused(&base.build(), &Files::new());
    assert!(
        err.contains("cannot read") && err.contains("a.crt"),
        "{err}"
    );

    // TLS 1.2 stays enabled but the only suite allowed is a TLS 1.3 one.
    let suites = Config::new()
        .tls_listener("strict", "cipher_suites = [\"TLS13_AES_128_GCM_SHA256\"]")
        .cert("a")
        .app("alpha", &["a.test"], up.addr);
    let err = refused(&suites.build(), &good);
    assert!(
        err.contains("listener `strict`") && err.contains("no suite for TLS 1.2"),
        "{err}"
    );

    let err = refused(
        &base
            .clone()
            .raw("[[listeners]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"")
            .build(),
        &good,
    );
    assert!(err.contains("duplicate listener name `tls`"), "{err}");
}
