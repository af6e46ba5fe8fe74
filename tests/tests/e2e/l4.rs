//! L4 routes end to end: TLS passthrough by SNI (the client verifies the backend's own
//! certificate, so nothing was terminated), raw TCP byte-exact, PROXY v2, the no-SNI
//! rules, connection limits, port policy and hot swaps.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tollgate_certs::{CertResolver, CertSource, CertStore, TlsOptions};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::tcp::{EchoBackend, free_port};
use tollgate_tests::tls::{self, TestCert};

fn acceptor(cert: &TestCert) -> TlsAcceptor {
    let store = CertStore::build(&[CertSource {
        cert_pem: cert.cert_pem.clone(),
        key_pem: cert.key_pem.clone(),
        names: None,
    }])
    .unwrap();
    let cfg =
        tollgate_certs::server_config(Arc::new(CertResolver::new(store)), &TlsOptions::default())
            .unwrap();
    TlsAcceptor::from(cfg)
}

/// One app per backend, and L4 routes on `port`.
fn config(port: u16, mode: &str, apps: &[(&str, std::net::SocketAddr)], routes: &str) -> String {
    let mut s = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[port_policy]\nallowed = [{port}]\n[[listeners]]\nname = \"l4\"\nlisten = \"127.0.0.1:{port}\"\nmode = \"{mode}\"\n"
    );
    for (id, addr) in apps {
        s += &format!(
            "[[apps]]\nid = \"{id}\"\n[apps.upstreams.default]\nendpoints = [{{ address = \"{addr}\" }}]\n"
        );
    }
    s + routes
}

fn route(kind: &str, host: &str, port: u16, app: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nhostname = \"{host}\"\nlisten_port = {port}\napp = \"{app}\"\nprotocol_hint = \"{kind}\"\n{extra}\n"
    )
}

async fn echo_roundtrip(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut back))
        .await
        .expect("echo within deadline")
        .expect("echo");
    back
}

#[tokio::test]
async fn passthrough_by_sni_reaches_the_backend_certificate() {
    let (a_cert, b_cert) = (
        TestCert::new(&["a.tenant.test"]),
        TestCert::new(&["b.tenant.test"]),
    );
    let a = EchoBackend::start(false, Some(acceptor(&a_cert))).await;
    let b = EchoBackend::start(false, Some(acceptor(&b_cert))).await;
    let port = free_port();
    let routes = route("tls_passthrough", "a.tenant.test", port, "a", "")
        + &route("tls_passthrough", "b.tenant.test", port, "b", "");
    let proxy = ProxyProcess::start(
        &config(
            port,
            "tls_passthrough",
            &[("a", a.addr), ("b", b.addr)],
            &routes,
        ),
        &[],
    )
    .unwrap();
    for (name, cert) in [("a.tenant.test", &a_cert), ("b.tenant.test", &b_cert)] {
        // The client trusts only the backend's certificate: a proxy-terminated handshake would fail.
        let cfg = tls::client_config(&[cert], &[]);
        let mut s = tls::connect(proxy.addr("l4"), name, cfg)
            .await
            .expect("handshake with the backend");
        assert_eq!(tls::peer_cert(&s).unwrap(), cert.der());
        s.write_all(b"ping over tls").await.unwrap();
        let mut buf = [0u8; 13];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping over tls");
    }
    assert_eq!((a.seen().connections, b.seen().connections), (1, 1));
    // An SNI with no route: closed, no backend sees it.
    let cfg = tls::client_config(&[&a_cert], &[]);
    assert!(
        tls::connect(proxy.addr("l4"), "c.tenant.test", cfg)
            .await
            .is_err()
    );
    assert_eq!((a.seen().connections, b.seen().connections), (1, 1));
    let refused = proxy
        .metric("tollgate_l4_connections_total", &["result=\"no_route\""])
        .await
        .unwrap();
    assert_eq!(refused, 1.0);
}

#[tokio::test]
async fn no_sni_goes_to_the_only_route_and_is_closed_otherwise() {
    let cert = TestCert::new(&["only.test"]);
    let backend = EchoBackend::start(false, None).await;
    let port = free_port();
    let one = route("tls_passthrough", "only.test", port, "a", "");
    let proxy = ProxyProcess::start(
        &config(port, "tls_passthrough", &[("a", backend.addr)], &one),
        &[],
    )
    .unwrap();
    // rustls sends no SNI to an IP address.
    let cfg = tls::client_config(&[&cert], &[]);
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tls::connect_ip(proxy.addr("l4"), cfg.clone()),
    )
    .await;
    let seen = backend.seen();
    assert_eq!(
        seen.connections, 1,
        "the single route took the SNI-less connection"
    );
    assert_eq!(
        seen.first_bytes[0][0], 0x16,
        "the backend got the untouched ClientHello"
    );

    let two = one + &route("tls_passthrough", "other.test", port, "a", "");
    proxy
        .write_config(&config(
            port,
            "tls_passthrough",
            &[("a", backend.addr)],
            &two,
        ))
        .unwrap();
    proxy
        .wait_metric(
            "tollgate_config_version",
            &[],
            Duration::from_secs(20),
            |v| v >= 2.0,
        )
        .await
        .unwrap();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tls::connect_ip(proxy.addr("l4"), cfg),
    )
    .await;
    assert_eq!(
        backend.seen().connections,
        1,
        "two routes: an SNI-less connection is closed"
    );
}

#[tokio::test]
async fn raw_tcp_is_byte_exact_with_proxy_v2() {
    let backend = EchoBackend::start(true, None).await;
    let port = free_port();
    let r = route("tcp_raw", "db.test", port, "db", "proxy_protocol = true");
    let proxy =
        ProxyProcess::start(&config(port, "tcp", &[("db", backend.addr)], &r), &[]).unwrap();
    let mut s = TcpStream::connect(proxy.addr("l4")).await.unwrap();
    let client = s.local_addr().unwrap();
    let payload: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    assert!(
        echo_roundtrip(&mut s, &payload).await == payload,
        "bytes changed on the way"
    );
    let h = &backend.seen().proxy_headers[0];
    assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n", "PROXY v2 signature");
    assert_eq!((h[12], h[13]), (0x21, 0x11), "v2 PROXY, TCP over IPv4");
    assert_eq!(&h[16..20], &[127, 0, 0, 1], "source address");
    assert_eq!(
        u16::from_be_bytes([h[24], h[25]]),
        client.port(),
        "the real client port"
    );
    assert_eq!(
        u16::from_be_bytes([h[26], h[27]]),
        port,
        "the listener port"
    );
    let up = proxy
        .metric(
            "tollgate_l4_bytes_total",
            &["direction=\"client_to_upstream\""],
        )
        .await
        .unwrap();
    assert!(up >= payload.len() as f64);
}

#[tokio::test]
async fn proxy_v2_carries_an_ipv6_client() {
    let backend = EchoBackend::start(true, None).await;
    let port = free_port();
    let r = route("tcp_raw", "db.test", port, "db", "proxy_protocol = true");
    let v4 = format!("listen = \"127.0.0.1:{port}\"");
    let cfg = config(port, "tcp", &[("db", backend.addr)], &r)
        .replace(&v4, &format!("listen = \"[::1]:{port}\""));
    let proxy = ProxyProcess::start(&cfg, &[]).unwrap();
    let mut s = TcpStream::connect(proxy.addr("l4")).await.unwrap();
    let client = s.local_addr().unwrap();
    assert!(client.is_ipv6());
    assert_eq!(echo_roundtrip(&mut s, b"v6").await, b"v6");
    let h = &backend.seen().proxy_headers[0];
    assert_eq!(
        (h[12], h[13], h.len()),
        (0x21, 0x21, 52),
        "v2 PROXY, TCP over IPv6"
    );
    assert_eq!(
        &h[16..32],
        &std::net::Ipv6Addr::LOCALHOST.octets(),
        "source ::1"
    );
    assert_eq!(u16::from_be_bytes([h[48], h[49]]), client.port());
}

#[tokio::test]
async fn connection_limit_closes_the_extra_connection() {
    let backend = EchoBackend::start(false, None).await;
    let port = free_port();
    let r = route("tcp_raw", "db.test", port, "db", "max_connections = 1");
    let proxy =
        ProxyProcess::start(&config(port, "tcp", &[("db", backend.addr)], &r), &[]).unwrap();
    let mut first = TcpStream::connect(proxy.addr("l4")).await.unwrap();
    assert_eq!(echo_roundtrip(&mut first, b"one").await, b"one");
    let mut second = TcpStream::connect(proxy.addr("l4")).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(20), second.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the second connection is closed");
    assert_eq!(echo_roundtrip(&mut first, b"still").await, b"still");
    assert_eq!(
        proxy
            .metric(
                "tollgate_l4_connections_total",
                &["result=\"limit_reached\""]
            )
            .await
            .unwrap(),
        1.0
    );
}

#[tokio::test]
async fn new_routes_for_new_connections_open_ones_keep_flowing() {
    let (a, b) = (
        EchoBackend::start(false, None).await,
        EchoBackend::start(false, None).await,
    );
    let port = free_port();
    let apps = [("a", a.addr), ("b", b.addr)];
    let proxy = ProxyProcess::start(
        &config(
            port,
            "tcp",
            &apps,
            &route("tcp_raw", "x.test", port, "a", ""),
        ),
        &[],
    )
    .unwrap();
    let mut old = TcpStream::connect(proxy.addr("l4")).await.unwrap();
    assert_eq!(echo_roundtrip(&mut old, b"before").await, b"before");
    proxy
        .write_config(&config(
            port,
            "tcp",
            &apps,
            &route("tcp_raw", "x.test", port, "b", ""),
        ))
        .unwrap();
    proxy
        .wait_metric(
            "tollgate_config_version",
            &[],
            Duration::from_secs(20),
            |v| v >= 2.0,
        )
        .await
        .unwrap();
    let mut new = TcpStream::connect(proxy.addr("l4")).await.unwrap();
    assert_eq!(echo_roundtrip(&mut new, b"after").await, b"after");
    assert_eq!(
        b.seen().connections,
        1,
        "new connection went to the new route"
    );
    assert_eq!(echo_roundtrip(&mut old, b"still a").await, b"still a");
    assert_eq!(a.seen().connections, 1);
}

#[test]
fn risky_port_is_refused_at_config_time() {
    let cfg = "[admin]\nlisten = \"127.0.0.1:0\"\n[[apps]]\nid = \"mail\"\n[apps.upstreams.default]\nendpoints = [{ address = \"127.0.0.1:2525\" }]\n"
        .to_string()
        + &route("tcp_raw", "smtp.test", 25, "mail", "");
    let (status, stderr) = ProxyProcess::start_expect_failure(&cfg, &[]).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("port 25 is denied by default (risky)"),
        "{stderr}"
    );
}
