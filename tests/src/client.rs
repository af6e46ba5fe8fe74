//! HTTP clients on hyper's connection API, so tests choose the protocol, the TLS
//! name and the exact headers sent.

use crate::BoxError;
use crate::tls;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Request body type of the test clients: anything that streams bytes.
pub type TestBody = BoxBody<Bytes, BoxError>;

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// An empty body.
pub fn empty() -> TestBody {
    full(Bytes::new())
}

/// One client connection, HTTP/1.1 or HTTP/2.
pub enum Sender {
    H1(http1::SendRequest<TestBody>),
    H2(http2::SendRequest<TestBody>),
}

impl Sender {
    /// Opens a connection over `io`; the connection task runs in the background.
    pub async fn handshake<I>(io: I, h2: bool) -> Result<Self, BoxError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Ok(Sender::H2(send))
        } else {
            let (send, conn) = http1::handshake(io).await?;
            tokio::spawn(conn.with_upgrades());
            Ok(Sender::H1(send))
        }
    }

    pub async fn send(&mut self, req: Request<TestBody>) -> Result<Response<Incoming>, BoxError> {
        Ok(match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        })
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }
}

/// Plain TCP connection: HTTP/1.1, or h2c with prior knowledge.
pub async fn connect_plain(addr: SocketAddr, h2: bool) -> Result<Sender, BoxError> {
    Sender::handshake(TcpStream::connect(addr).await?, h2).await
}

/// TLS connection for `sni`; HTTP/2 when ALPN agrees on it.
pub async fn connect_tls(
    addr: SocketAddr,
    sni: &str,
    cfg: std::sync::Arc<rustls::ClientConfig>,
) -> Result<Sender, BoxError> {
    let stream = tls::connect(addr, sni, cfg).await?;
    let h2 = tls::is_h2(&stream);
    Sender::handshake(stream, h2).await
}

/// Builds a GET for `path` with `host` (as `Host` on HTTP/1.1, `:authority` on HTTP/2).
pub fn get(sender: &Sender, scheme: &str, host: &str, path: &str) -> Request<TestBody> {
    request(sender, "GET", scheme, host, path, empty())
}

/// Builds a request suited to the sender's protocol.
pub fn request(
    sender: &Sender,
    method: &str,
    scheme: &str,
    host: &str,
    path: &str,
    body: TestBody,
) -> Request<TestBody> {
    let b = Request::builder().method(method);
    let b = if sender.is_h2() {
        b.uri(format!("{scheme}://{host}{path}"))
            .version(http::Version::HTTP_2)
    } else {
        b.uri(path).header("host", host)
    };
    b.body(body).expect("valid request")
}

/// Reads a whole body as text.
pub async fn text(resp: Response<Incoming>) -> Result<(u16, HeaderMap, String), BoxError> {
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok((
        status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// One Connect unary call with a JSON body (`connect-protocol-version: 1`) over a fresh
/// plain HTTP/1.1 connection: what a browser's Connect client sends.
pub async fn connect_json_plain(
    addr: SocketAddr,
    host: &str,
    path: &str,
    json: &'static str,
) -> Result<(u16, HeaderMap, String), BoxError> {
    let mut s = connect_plain(addr, false).await?;
    let mut req = request(&s, "POST", "http", host, path, full(json));
    let h = req.headers_mut();
    h.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        "connect-protocol-version",
        http::HeaderValue::from_static("1"),
    );
    text(s.send(req).await?).await
}

/// One HTTP/1.1 GET over a fresh plain connection.
pub async fn get_plain(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(u16, HeaderMap, String), BoxError> {
    let mut s = connect_plain(addr, false).await?;
    let req = get(&s, "http", host, path);
    text(s.send(req).await?).await
}
