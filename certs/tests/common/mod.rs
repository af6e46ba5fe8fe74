//! Shared helpers for the integration tests: certificates, a real TLS echo
//! server on 127.0.0.1:0, and a real TLS client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tollgate_certs::{CertSource, self_signed};

/// Upper bound on any single network step, so a broken test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(10);

pub fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A fresh self-signed certificate for `list`.
pub fn cert(list: &[&str]) -> CertSource {
    self_signed(&names(list)).expect("self-signed certificate")
}

/// The leaf certificate DER of a source.
pub fn leaf_der(source: &CertSource) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(source.cert_pem.as_bytes()).expect("leaf PEM")
}

/// A client trusting exactly the given (self-signed) certificates.
pub fn client(
    trusted: &[&CertSource],
    versions: &[&'static SupportedProtocolVersion],
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for source in trusted {
        roots.add(leaf_der(source)).expect("trust anchor");
    }
    ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(versions)
        .expect("client versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// What a server connection task reports.
#[derive(Debug)]
pub enum ServerEvent {
    HandshakeOk,
    HandshakeFailed(String),
    Panicked,
}

/// Starts an echo server on 127.0.0.1:0 that reports each connection's handshake outcome.
pub async fn spawn_server(
    config: Arc<ServerConfig>,
) -> (SocketAddr, mpsc::UnboundedReceiver<ServerEvent>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let events = tx.clone();
            let conn = tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let _ = events.send(ServerEvent::HandshakeOk);
                        tls
                    }
                    Err(e) => {
                        let _ = events.send(ServerEvent::HandshakeFailed(e.to_string()));
                        return;
                    }
                };
                let mut buf = [0u8; 1024];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            let events = tx.clone();
            tokio::spawn(async move {
                if conn.await.is_err() {
                    let _ = events.send(ServerEvent::Panicked);
                }
            });
        }
    });
    (addr, rx)
}

/// Connects with SNI/verification name `name`.
pub async fn connect(
    addr: SocketAddr,
    config: ClientConfig,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_owned()).expect("server name");
    tokio::time::timeout(
        STEP,
        TlsConnector::from(Arc::new(config)).connect(server_name, tcp),
    )
    .await
    .expect("client handshake timed out")
}

/// The next server event, failing the test if none arrives in time.
pub async fn next_event(events: &mut mpsc::UnboundedReceiver<ServerEvent>) -> ServerEvent {
    tokio::time::timeout(STEP, events.recv())
        .await
        .expect("server event timed out")
        .expect("server stopped")
}

/// The certificate the server presented on an established connection.
pub fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("peer certificate")
        .clone()
        .into_owned()
}

/// Sends `msg` and checks the server echoes it back.
pub async fn assert_echo(tls: &mut TlsStream<TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(STEP, tls.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .expect("read echo");
    assert_eq!(back, msg);
}

/// A certificate for `name` made with rcgen, valid over the given (y, m, d) window.
pub fn dated(name: &str, not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> CertSource {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.self_signed(&key).unwrap();
    CertSource {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        names: None,
    }
}
