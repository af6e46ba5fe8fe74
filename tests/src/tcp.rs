//! Raw TCP and TLS backends for L4 tests: byte echo, optional PROXY v2 header capture.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A free loopback port for configs that must name their port ([`crate::ports`]).
pub fn free_port() -> u16 {
    crate::ports::unused_local_port().expect("free port")
}

/// What an echo backend saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub connections: usize,
    /// The raw PROXY v2 header of each connection, when `expect_proxy_header` is on.
    pub proxy_headers: Vec<Vec<u8>>,
    /// The first bytes of each connection (after any PROXY header).
    pub first_bytes: Vec<Vec<u8>>,
}

/// A TCP echo backend; with `expect_proxy_header` it first reads a PROXY v2 header.
pub struct EchoBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoBackend {
    pub async fn start(expect_proxy_header: bool, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, tls) = (s.clone(), tls.clone());
                tokio::spawn(async move { serve(stream, expect_proxy_header, tls, s).await });
            }
        });
        EchoBackend { addr, seen, task }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    expect_proxy_header: bool,
    tls: Option<TlsAcceptor>,
    seen: Arc<Mutex<Seen>>,
) {
    if let Ok(mut s) = seen.lock() {
        s.connections += 1;
    }
    if expect_proxy_header {
        let mut fixed = [0u8; 16];
        if stream.read_exact(&mut fixed).await.is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        let mut rest = vec![0u8; len];
        if stream.read_exact(&mut rest).await.is_err() {
            return;
        }
        let mut header = fixed.to_vec();
        header.extend_from_slice(&rest);
        if let Ok(mut s) = seen.lock() {
            s.proxy_headers.push(header);
        }
    }
    match tls {
        Some(acceptor) => {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            echo(tls, seen).await;
        }
        None => echo(stream, seen).await,
    }
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    seen: Arc<Mutex<Seen>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut first = true;
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if first {
            first = false;
            if let Ok(mut sn) = seen.lock() {
                sn.first_bytes.push(buf[..n.min(16)].to_vec());
            }
        }
        if s.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
