//! A TLS client session with what its handshake settled on, for tests that check
//! certificates, versions and cipher suites and then send requests on it.

use crate::BoxError;
use crate::client::{self, Sender};
use crate::tls;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the handshake negotiated, read before the stream is handed to HTTP.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// DER of the leaf certificate the server presented.
    pub peer_cert: Vec<u8>,
    pub h2: bool,
    pub version: Option<rustls::ProtocolVersion>,
    pub suite: Option<rustls::CipherSuite>,
}

/// A TLS connection ready for requests.
pub struct TlsSession {
    pub negotiated: Negotiated,
    pub sender: Sender,
    pub sni: String,
}

impl TlsSession {
    /// Handshakes with `sni`, then starts HTTP/2 when ALPN chose it, else HTTP/1.1.
    pub async fn open(
        addr: SocketAddr,
        sni: &str,
        cfg: Arc<rustls::ClientConfig>,
    ) -> Result<Self, BoxError> {
        let stream = tls::connect(addr, sni, cfg).await?;
        let conn = stream.get_ref().1;
        let negotiated = Negotiated {
            peer_cert: tls::peer_cert(&stream).ok_or("server presented no certificate")?,
            h2: tls::is_h2(&stream),
            version: conn.protocol_version(),
            suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        };
        let sender = Sender::handshake(stream, negotiated.h2).await?;
        Ok(TlsSession {
            negotiated,
            sender,
            sni: sni.to_string(),
        })
    }

    /// GETs `path` with the SNI name as host; returns status, headers and body text.
    pub async fn get(&mut self, path: &str) -> Result<(u16, http::HeaderMap, String), BoxError> {
        let req = client::get(&self.sender, "https", &self.sni, path);
        client::text(self.sender.send(req).await?).await
    }
}
