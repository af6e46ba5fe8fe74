//! ACME end to end: the real control service as an ACME client of Let's Encrypt's
//! test CA (Debian's `pebble`, with `pebble-challtestsrv` as its DNS), real proxies
//! answering HTTP-01 and TLS-ALPN-01 from the feed, and a TLS client that trusts only
//! pebble's issuing root. Pebble keeps its default random nonce rejections.
//!
//! Waits are bounded polls of the control API's lifecycle state; nothing depends on
//! timing.

use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tollgate_tests::config::Config;
use tollgate_tests::control::{ApiClient, ControlProcess};
use tollgate_tests::pebble::{Pebble, PebbleOptions};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::until;

/// Orders take seconds; a loaded 2-core machine may stretch that a lot.
const ISSUE: Duration = Duration::from_secs(120);

/// A port free on both 127.0.0.1 and 127.0.0.2, so two proxies can share it.
fn shared_port() -> u16 {
    let ips = [IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2])];
    tollgate_tests::ports::unused_port(&ips).expect("a port free on both addresses")
}

/// A proxy following `cp` with a plain listener on `ip:http` and TLS on `ip:tls`.
fn edge(
    cp: &ControlProcess,
    node: &str,
    ip: &str,
    http: u16,
    tls: u16,
) -> (ProxyProcess, tempfile::TempDir) {
    let state = tempfile::tempdir().expect("state dir");
    let config = Config::new()
        .raw(&format!(
            "[[listeners]]\nname = \"http\"\nlisten = \"{ip}:{http}\""
        ))
        .raw(&format!(
            "[[listeners]]\nname = \"tls\"\nlisten = \"{ip}:{tls}\"\n[listeners.tls]\n"
        ))
        .raw(&cp.proxy_table(node, state.path()))
        .build();
    (
        ProxyProcess::start(&config, &[]).expect("proxy starts"),
        state,
    )
}

async fn control_for(pebble: &Pebble, extra: &[&str]) -> ControlProcess {
    let mut args: Vec<String> = vec![
        "--acme-directory".into(),
        pebble.directory_url(),
        "--acme-ca-root".into(),
        pebble.server_root_pem_path().display().to_string(),
        "--acme-contact".into(),
        "mailto:ops@tollgate.test".into(),
        "--acme-retry-base-secs".into(),
        "1".into(),
        "--acme-propagation-ms".into(),
        "300".into(),
        "--acme-tick-ms".into(),
        "200".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    ControlProcess::start_with(&args)
        .await
        .expect("control starts")
}

/// App `shop` with one instance and `hosts` bound to it.
async fn shop(api: &ApiClient, upstream: SocketAddr, hosts: &[&str]) {
    api.write("POST", "/api/v1/apps", Some(&json!({"id": "shop"})))
        .await;
    api.write(
        "POST",
        "/api/v1/apps/shop/upstreams/default/instances",
        Some(&json!({"address": upstream.to_string()})),
    )
    .await;
    for h in hosts {
        api.write(
            "PUT",
            &format!("/api/v1/hostnames/{h}"),
            Some(&json!({"app": "shop"})),
        )
        .await;
    }
}

async fn manage(api: &ApiClient, host: &str, challenge: &str) {
    let (status, v) = api
        .api(
            "PUT",
            &format!("/api/v1/hostnames/{host}/tls"),
            Some(&json!({ "challenge": challenge })),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["tls"]["state"], "requested", "{v}");
}

async fn tls_state(api: &ApiClient, host: &str) -> Value {
    let (status, v) = api
        .api("GET", &format!("/api/v1/hostnames/{host}/tls"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    v["tls"].clone()
}

/// Waits until `host` is issued with a certificate other than `not`; returns its view.
async fn issued(api: &ApiClient, host: &str, not_after_other_than: Option<i64>) -> Value {
    until(&format!("a certificate for {host}"), ISSUE, || async {
        let v = tls_state(api, host).await;
        let na = v["not_after_unix"].as_i64();
        (v["state"] == "issued" && na.is_some() && na != not_after_other_than).then_some(v)
    })
    .await
}

/// A TLS client config that trusts only `roots_pem` and offers HTTP/1.1.
fn trusting(roots_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(roots_pem) {
        roots.add(c).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}

/// The leaf a handshake for `sni` at `addr` gets, verified against `cfg`.
async fn served_leaf(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    let s = tollgate_tests::tls::connect(addr, sni, cfg)
        .await
        .map_err(|e| e.to_string())?;
    tollgate_tests::tls::peer_cert(&s).ok_or_else(|| "no certificate".to_string())
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Waits until `addr` serves `host` a leaf with `fingerprint` that `cfg` verifies.
async fn serves(addr: SocketAddr, host: &str, cfg: &Arc<rustls::ClientConfig>, fingerprint: &str) {
    until(
        &format!("{addr} to serve the issued certificate for {host}"),
        ISSUE,
        || async {
            match served_leaf(addr, host, cfg.clone()).await {
                Ok(der) if sha256_hex(&der) == fingerprint => Some(()),
                _ => None,
            }
        },
    )
    .await
}

/// The fingerprint the service shows for `host`'s managed certificate.
async fn fingerprint(api: &ApiClient, host: &str) -> String {
    let (status, v) = api
        .api("GET", &format!("/api/v1/certificates/acme-{host}"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    v["certificate"]["sha256_fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_through_whichever_proxy_the_ca_reaches_and_renews_without_a_failed_handshake()
 {
    let (http, tls) = (shared_port(), shared_port());
    // Short-lived certificates: renewal comes a third of the lifetime before expiry.
    let pebble = Pebble::start(PebbleOptions {
        http_port: http,
        tls_port: tls,
        validity_secs: Some(45),
        ..Default::default()
    })
    .await
    .expect("pebble starts");
    // The CA reaches a.shop.test at the first proxy and b.shop.test at the second.
    pebble.set_a("a.shop.test", "127.0.0.1").await.expect("A");
    pebble.set_a("b.shop.test", "127.0.0.2").await.expect("A");
    let cp = control_for(&pebble, &[]).await;
    let (one, _s1) = edge(&cp, "edge-1", "127.0.0.1", http, tls);
    let (two, _s2) = edge(&cp, "edge-2", "127.0.0.2", http, tls);
    let up = Upstream::start("shop").await;
    let api = cp.client();
    shop(&api, up.addr, &["a.shop.test", "b.shop.test"]).await;
    manage(&api, "a.shop.test", "http-01").await;
    manage(&api, "b.shop.test", "http-01").await;

    let a = issued(&api, "a.shop.test", None).await;
    let b = issued(&api, "b.shop.test", None).await;
    assert_eq!(a["cert_id"], "acme-a.shop.test", "{a}");
    assert!(a["last_error"].is_null(), "{a}");
    assert!(
        b["renewal_due_unix"].as_i64() < b["not_after_unix"].as_i64(),
        "{b}"
    );

    let roots = pebble.issuing_roots_pem().await.expect("pebble roots");
    let cfg = trusting(&roots);
    let fa = fingerprint(&api, "a.shop.test").await;
    let fb = fingerprint(&api, "b.shop.test").await;
    // Every proxy serves both, whichever one answered the challenge.
    for p in [&one, &two] {
        serves(p.addr("tls"), "a.shop.test", &cfg, &fa).await;
        serves(p.addr("tls"), "b.shop.test", &cfg, &fb).await;
    }

    // Renewal: handshakes keep succeeding until a new certificate is served.
    let first_not_after = a["not_after_unix"].as_i64();
    let mut handshakes = 0;
    let renewed = loop {
        let der = served_leaf(one.addr("tls"), "a.shop.test", cfg.clone())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "handshake {handshakes} failed during renewal: {e}\n{}",
                    cp.logs()
                )
            });
        handshakes += 1;
        let f = sha256_hex(&der);
        if f != fa {
            break f;
        }
        assert!(
            handshakes < 100_000,
            "no renewal after {handshakes} handshakes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let a2 = issued(&api, "a.shop.test", first_not_after).await;
    assert_eq!(fingerprint(&api, "a.shop.test").await, renewed, "{a2}");

    // Both sides count what happened.
    let (status, text) = api.api("GET", "/metrics", None).await;
    assert_eq!(status, 200, "{text}");
    let text = text.as_str().unwrap_or_default().to_string();
    let issued_total = tollgate_tests::proxy::metric_value(
        &text,
        "tollgate_control_acme_orders_total",
        &["result=\"issued\""],
    );
    assert!(issued_total >= 3.0, "{text}");
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_when_port_80_is_unreachable_for_a_ca_that_requires_account_binding() {
    let (http, tls) = (shared_port(), shared_port());
    // The CA only registers accounts with its External Account Binding key.
    const KID: &str = "tollgate-eab";
    const HMAC: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let pebble = Pebble::start(PebbleOptions {
        http_port: http,
        tls_port: tls,
        eab: Some((KID.into(), HMAC.into())),
        ..Default::default()
    })
    .await
    .expect("pebble starts");
    let cp = control_for(&pebble, &["--acme-eab-kid", KID, "--acme-eab-hmac", HMAC]).await;
    // Only TLS is reachable: the plain listener is on another address.
    let state = tempfile::tempdir().expect("state dir");
    let config = Config::new()
        .raw(&format!(
            "[[listeners]]\nname = \"tls\"\nlisten = \"127.0.0.1:{tls}\"\n[listeners.tls]\n"
        ))
        .raw(&cp.proxy_table("edge-1", state.path()))
        .build();
    let proxy = ProxyProcess::start(&config, &[]).expect("proxy starts");
    let up = Upstream::start("shop").await;
    let api = cp.client();
    shop(&api, up.addr, &["alpn.shop.test"]).await;
    manage(&api, "alpn.shop.test", "tls-alpn-01").await;
    let v = issued(&api, "alpn.shop.test", None).await;
    assert_eq!(v["challenge"], "tls-alpn-01", "{v}");
    let roots = pebble.issuing_roots_pem().await.expect("pebble roots");
    let f = fingerprint(&api, "alpn.shop.test").await;
    serves(proxy.addr("tls"), "alpn.shop.test", &trusting(&roots), &f).await;
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_challenge_retries_with_backoff_and_leaves_other_tenants_alone() {
    let http = shared_port();
    let tls = shared_port();
    // More bad nonces than pebble's default: the client must survive them.
    let pebble = Pebble::start(PebbleOptions {
        http_port: http,
        tls_port: tls,
        nonce_reject_percent: Some(30),
        ..Default::default()
    })
    .await
    .expect("pebble starts");
    // broken.shop.test resolves where no proxy listens.
    pebble
        .set_a("broken.shop.test", "127.0.0.3")
        .await
        .expect("A");
    // Retries 1, 2, 4, 8, 8 s apart: the fifth validation failure in an hour (the CA's
    // limit, which would hold the hostname for the rest of the hour) comes >= 15 s
    // after the first, well after the test fixes DNS on seeing the second.
    let cp = control_for(&pebble, &["--acme-retry-max-secs", "8"]).await;
    let (proxy, _state) = edge(&cp, "edge-1", "127.0.0.1", http, tls);
    let up = Upstream::start("shop").await;
    let api = cp.client();
    shop(&api, up.addr, &["broken.shop.test", "good.shop.test"]).await;
    manage(&api, "broken.shop.test", "http-01").await;
    manage(&api, "good.shop.test", "http-01").await;

    // The good tenant is issued whatever its neighbour does.
    issued(&api, "good.shop.test", None).await;
    // The broken one fails with the CA's reason, again and again, later each time.
    // Pebble's rejected nonces can fail an order before validation (it is retried
    // like any failure): wait for the failure that carries the CA's validation error.
    let first = until("a recorded validation failure", ISSUE, || async {
        let v = tls_state(&api, "broken.shop.test").await;
        let error = v["last_error"].as_str().unwrap_or_default();
        let validation = error.contains("validation failed") || error.contains("connection");
        (v["state"] == "failed" && validation).then_some(v)
    })
    .await;
    let error = first["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("validation failed") || error.contains("connection"),
        "{first}"
    );
    let second = until("a second failure", ISSUE, || async {
        let v = tls_state(&api, "broken.shop.test").await;
        (v["failures"].as_u64() >= Some(2) && v["state"] == "failed").then_some(v)
    })
    .await;
    let gap = |v: &Value| {
        v["retry_at_unix"].as_i64().unwrap_or(0) - v["since_unix"].as_i64().unwrap_or(0)
    };
    assert!(
        gap(&second) >= gap(&first),
        "backoff grows: {first} then {second}"
    );
    assert!(second["cert_id"].is_null(), "{second}");

    // Fixing DNS lets the next retry succeed.
    pebble
        .set_a("broken.shop.test", "127.0.0.1")
        .await
        .expect("A");
    issued(&api, "broken.shop.test", None).await;
    let roots = pebble.issuing_roots_pem().await.expect("pebble roots");
    let f = fingerprint(&api, "broken.shop.test").await;
    serves(proxy.addr("tls"), "broken.shop.test", &trusting(&roots), &f).await;
    drop(up);
}

/// Whether `host` is bound, per the service.
async fn bound(api: &ApiClient, host: &str) -> bool {
    let (status, _) = api
        .api("GET", &format!("/api/v1/hostnames/{host}"), None)
        .await;
    status == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_domain_binds_and_gets_a_certificate_only_after_its_txt_record_proves_ownership()
{
    let (http, tls) = (shared_port(), shared_port());
    let pebble = Pebble::start(PebbleOptions {
        http_port: http,
        tls_port: tls,
        ..Default::default()
    })
    .await
    .expect("pebble starts");
    let dns = pebble.dns_addr().to_string();
    let cp = control_for(
        &pebble,
        &[
            "--require-ownership",
            "--platform-domain",
            "tollgate.test",
            "--dns-resolver",
            &dns,
            "--ownership-check-ms",
            "200",
            "--ownership-recheck-secs",
            "1",
            "--ownership-grace-secs",
            "2",
        ],
    )
    .await;
    let (proxy, _state) = edge(&cp, "edge-1", "127.0.0.1", http, tls);
    let up = Upstream::start("shop").await;
    let api = cp.client();
    shop(&api, up.addr, &["shop.tollgate.test"]).await;
    const HOST: &str = "www.customer.test";

    // A customer's own domain cannot be bound directly, nor managed before it is.
    let (status, v) = api
        .api(
            "PUT",
            &format!("/api/v1/hostnames/{HOST}"),
            Some(&json!({"app": "shop"})),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(v.to_string().contains("claim"), "{v}");
    let (status, v) = api
        .api(
            "PUT",
            &format!("/api/v1/hostnames/{HOST}/tls"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 404, "{v}");

    // The claim hands out the record to publish; nothing binds until it is there.
    let (status, v) = api
        .api(
            "POST",
            &format!("/api/v1/hostnames/{HOST}/claim"),
            Some(&json!({"app": "shop"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        v["claim"]["txt_name"],
        format!("_tollgate-challenge.{HOST}"),
        "{v}"
    );
    assert_eq!(v["claim"]["state"], "pending", "{v}");
    let token = v["claim"]["txt_value"].as_str().expect("token").to_string();
    // A wrong record is reported and does not bind.
    pebble
        .set_txt(&format!("_tollgate-challenge.{HOST}."), "not-the-token")
        .await
        .expect("TXT");
    let failing = until("the failed check to be recorded", ISSUE, || async {
        let (_, v) = api
            .api("GET", &format!("/api/v1/hostnames/{HOST}/claim"), None)
            .await;
        v["claim"]["last_error"].is_string().then_some(v)
    })
    .await;
    assert_eq!(failing["claim"]["state"], "pending", "{failing}");
    assert!(!bound(&api, HOST).await);

    pebble
        .set_txt(&format!("_tollgate-challenge.{HOST}."), &token)
        .await
        .expect("TXT");
    until("the claim to verify and bind", ISSUE, || async {
        bound(&api, HOST).await.then_some(())
    })
    .await;
    let (_, v) = api
        .api("GET", &format!("/api/v1/hostnames/{HOST}"), None)
        .await;
    assert_eq!(v["hostname"]["app"], "shop", "{v}");

    // Now it can get a certificate, served to a client trusting pebble's root.
    manage(&api, HOST, "http-01").await;
    issued(&api, HOST, None).await;
    let roots = pebble.issuing_roots_pem().await.expect("pebble roots");
    let f = fingerprint(&api, HOST).await;
    serves(proxy.addr("tls"), HOST, &trusting(&roots), &f).await;

    // The record goes away: after the grace period the hostname is unbound.
    pebble
        .clear_txt(&format!("_tollgate-challenge.{HOST}."))
        .await
        .expect("clear TXT");
    until("the lapsed claim to unbind", ISSUE, || async {
        (!bound(&api, HOST).await).then_some(())
    })
    .await;
    let (_, v) = api
        .api("GET", &format!("/api/v1/hostnames/{HOST}/claim"), None)
        .await;
    assert_eq!(v["claim"]["state"], "pending", "{v}");
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_keeps_the_certificate_in_service() {
    let (http, tls) = (shared_port(), shared_port());
    let pebble = Pebble::start(PebbleOptions {
        http_port: http,
        tls_port: tls,
        validity_secs: Some(90),
        // Every order validates again, as a CA does once its authorizations expire.
        authz_reuse_percent: Some(0),
        ..Default::default()
    })
    .await
    .expect("pebble starts");
    // Renewal exactly a third of the lifetime (30 s) before expiry: the old certificate
    // is still valid for that long after the renewal fails.
    let cp = control_for(&pebble, &["--acme-renew-jitter-secs", "0"]).await;
    let (proxy, _state) = edge(&cp, "edge-1", "127.0.0.1", http, tls);
    let up = Upstream::start("shop").await;
    let api = cp.client();
    shop(&api, up.addr, &["renew.shop.test"]).await;
    manage(&api, "renew.shop.test", "http-01").await;
    let first = issued(&api, "renew.shop.test", None).await;
    let roots = pebble.issuing_roots_pem().await.expect("pebble roots");
    let cfg = trusting(&roots);
    let f = fingerprint(&api, "renew.shop.test").await;
    serves(proxy.addr("tls"), "renew.shop.test", &cfg, &f).await;

    // From now on the CA reaches no proxy: the renewal fails.
    pebble
        .set_a("renew.shop.test", "127.0.0.3")
        .await
        .expect("A");
    let failed = until("the renewal to fail", ISSUE, || async {
        let v = tls_state(&api, "renew.shop.test").await;
        (v["state"] == "failed").then_some(v)
    })
    .await;
    assert_eq!(failed["cert_id"], first["cert_id"], "{failed}");
    assert_eq!(
        failed["not_after_unix"], first["not_after_unix"],
        "{failed}"
    );
    assert!(failed["last_error"].is_string(), "{failed}");
    // The previous certificate is still what clients get.
    let der = served_leaf(proxy.addr("tls"), "renew.shop.test", cfg.clone())
        .await
        .expect("handshake after the failed renewal");
    assert_eq!(sha256_hex(&der), f);
    assert_eq!(fingerprint(&api, "renew.shop.test").await, f);
    drop(up);
}
