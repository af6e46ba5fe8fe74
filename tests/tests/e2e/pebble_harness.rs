//! The pebble harness itself: Let's Encrypt's test CA answers its directory over TLS
//! trusting the generated server root, hands out its issuing root, and
//! pebble-challtestsrv serves the A and TXT records tests set.

use std::net::{IpAddr, Ipv4Addr, TcpStream};
use tollgate_tests::pebble::{Pebble, PebbleOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_serves_its_directory_roots_and_dns() {
    let pebble = Pebble::start(PebbleOptions::default())
        .await
        .expect("pebble starts");

    // The directory, over TLS trusting only the PEM file an ACME client is given.
    let pem = std::fs::read_to_string(pebble.server_root_pem_path()).expect("server root");
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
    let dir = pebble.directory().await.expect("directory");
    assert!(dir["newOrder"].as_str().is_some(), "{dir}");
    assert!(
        dir["newAccount"]
            .as_str()
            .is_some_and(|u| u.starts_with(pebble.directory_url().trim_end_matches("/dir"))),
        "{dir}"
    );
    assert!(pebble.directory_url().starts_with("https://127.0.0.1:"));

    // The issuing root: a CA certificate.
    let roots = pebble.issuing_roots_pem().await.expect("issuing roots");
    let (_, pem) = x509_parser::pem::parse_x509_pem(roots.as_bytes()).expect("PEM");
    let cert = pem.parse_x509().expect("issuing root is a certificate");
    assert!(cert.is_ca(), "{}", cert.subject());
    let inter = pebble.intermediates_pem().await.expect("intermediates");
    let (_, pem) = x509_parser::pem::parse_x509_pem(inter.as_bytes()).expect("PEM");
    let inter = pem.parse_x509().expect("intermediate is a certificate");
    assert_eq!(inter.issuer(), cert.subject());

    // TXT records: set replaces, add appends, clear removes.
    let name = "_acme-challenge.smoke.test";
    pebble.set_txt(name, "first").await.expect("set TXT");
    assert_eq!(pebble.lookup_txt(name).await.expect("TXT"), ["first"]);
    pebble.set_txt(name, "second").await.expect("set TXT");
    assert_eq!(pebble.lookup_txt(name).await.expect("TXT"), ["second"]);
    pebble.add_txt(name, "third").await.expect("add TXT");
    let mut both = pebble.lookup_txt(name).await.expect("TXT");
    both.sort();
    assert_eq!(both, ["second", "third"]);
    pebble.clear_txt(name).await.expect("clear TXT");
    let left = pebble.lookup_txt(name).await;
    assert!(!matches!(&left, Ok(v) if !v.is_empty()), "{left:?}");

    // A records: every name answers 127.0.0.1 until told otherwise.
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(pebble.lookup_a("a.smoke.test").await.expect("A"), [local]);
    pebble.set_a("a.smoke.test", "127.0.0.2").await.expect("A");
    assert_eq!(pebble.lookup_a("a.smoke.test").await.expect("A"), [other]);
    pebble.set_a("a.smoke.test", "127.0.0.3").await.expect("A");
    assert_eq!(
        pebble.lookup_a("a.smoke.test.").await.expect("A"),
        [IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))]
    );
    pebble.clear_a("a.smoke.test").await.expect("clear A");
    assert_eq!(pebble.lookup_a("a.smoke.test").await.expect("A"), [local]);
    pebble.set_default_ipv4("127.0.0.2").await.expect("default");
    assert_eq!(pebble.lookup_a("b.smoke.test").await.expect("A"), [other]);

    // Dropping it stops both programs.
    let (acme, dns) = (pebble.acme_addr(), pebble.dns_addr());
    drop(pebble);
    assert!(TcpStream::connect(acme).is_err(), "pebble still listens");
    assert!(
        TcpStream::connect(dns).is_err(),
        "challtestsrv still listens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_takes_its_options() {
    let (kid, key) = (
        "kid-1",
        "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
    );
    let mut pebble = Pebble::start(PebbleOptions {
        validity_secs: Some(60),
        nonce_reject_percent: Some(50),
        eab: Some((kid.into(), key.into())),
        va_sleep: true,
        ..Default::default()
    })
    .await
    .expect("pebble starts");
    assert!(pebble.is_running());
    assert_ne!(pebble.options.http_port, 0, "a free port is chosen");
    assert_ne!(pebble.options.tls_port, 0, "a free port is chosen");
    let dir = pebble.directory().await.expect("directory");
    assert_eq!(dir["meta"]["externalAccountRequired"], true, "{dir}");
    let config = std::fs::read_to_string(pebble.dir().join("pebble.json")).expect("config");
    let config: serde_json::Value = serde_json::from_str(&config).expect("JSON");
    assert_eq!(
        config["pebble"]["certificateValidityPeriod"], 60,
        "{config}"
    );
    assert_eq!(
        config["pebble"]["externalAccountMACKeys"][kid], key,
        "{config}"
    );
    assert!(pebble.logs().contains("--- pebble ---"));
}
