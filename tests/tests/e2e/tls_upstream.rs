//! Upstreams over TLS: the proxy verifies the upstream's certificate against the
//! cluster's CA file and server name, over HTTP/1.1 (`https`) and HTTP/2 (`h2`).

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tollgate_certs::{CertResolver, CertSource, CertStore, TlsOptions};
use tollgate_tests::client;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::tls::TestCert;

/// A TLS upstream answering with the HTTP version it was spoken to in.
async fn tls_upstream(cert: &TestCert) -> SocketAddr {
    let store = CertStore::build(&[CertSource {
        cert_pem: cert.cert_pem.clone(),
        key_pem: cert.key_pem.clone(),
        names: None,
    }])
    .unwrap()
    .with_default("upstream.internal")
    .unwrap();
    let cfg =
        tollgate_certs::server_config(Arc::new(CertResolver::new(store)), &TlsOptions::default())
            .unwrap();
    let acceptor = TlsAcceptor::from(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let v = format!("{:?}", req.version());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(v))))
                });
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn config(upstream: SocketAddr, protocol: &str, server_name: &str) -> String {
    format!(
        r#"
api_hosts = ["api.test"]
[admin]
listen = "127.0.0.1:0"
[[listeners]]
name = "http"
listen = "127.0.0.1:0"
[[apps]]
id = "secure"
[apps.upstreams.default]
endpoints = [{{ address = "{upstream}" }}]
protocol = "{protocol}"
tls_ca_file = "upstream-ca.pem"
tls_server_name = "{server_name}"
"#
    )
}

#[tokio::test]
async fn https_and_h2_upstreams_are_verified() {
    let cert = TestCert::new(&["upstream.internal"]);
    let up = tls_upstream(&cert).await;
    for (protocol, want) in [("https", "HTTP/1.1"), ("h2", "HTTP/2.0")] {
        let cfg = config(up, protocol, "upstream.internal");
        // The CA path in the config is relative to the config file's folder.
        let proxy = ProxyProcess::start(&cfg, &[("upstream-ca.pem", &cert.cert_pem)])
            .expect("proxy starts");
        let (status, _, body) = client::get_plain(proxy.addr("http"), "api.test", "/v1/secure/")
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (200, want), "protocol {protocol}");
    }
}

#[tokio::test]
async fn wrong_server_name_is_refused() {
    let cert = TestCert::new(&["upstream.internal"]);
    let up = tls_upstream(&cert).await;
    let cfg = config(up, "https", "someone-else.internal");
    let proxy =
        ProxyProcess::start(&cfg, &[("upstream-ca.pem", &cert.cert_pem)]).expect("proxy starts");
    let (status, _, body) = client::get_plain(proxy.addr("http"), "api.test", "/v1/secure/")
        .await
        .unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_connect_failed"), "{body}");
}
