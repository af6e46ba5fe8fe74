//! tonic channels to the proxy: h2c over TCP or HTTP/2 over TLS (ALPN h2), always to a
//! fixed proxy address whatever the URI's host, so the URI can carry the tenant name.
//! [`UntimedChannel`] is the same connection without tonic's client-side deadline timer,
//! and [`serve_without_server_timer`] the test service without tonic's server-side one.

use crate::BoxError;
use crate::tls;
use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::ClientConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tollgate_proto::TestServiceImpl;
use tollgate_proto::test::v1::test_service_server::TestServiceServer;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint, Uri};

/// A connection of either kind.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Connects to `addr`, with TLS for `sni` when a client config is given.
#[derive(Clone)]
pub struct FixedConnector {
    pub addr: SocketAddr,
    pub tls: Option<(String, Arc<ClientConfig>)>,
}

impl Service<Uri> for FixedConnector {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let io: Box<dyn Io> = match this.tls {
                None => Box::new(TcpStream::connect(this.addr).await?),
                Some((sni, cfg)) => {
                    let s = tls::connect(this.addr, &sni, cfg).await?;
                    if !tls::is_h2(&s) {
                        return Err("the proxy did not agree on ALPN h2".into());
                    }
                    Box::new(s)
                }
            };
            Ok(TokioIo::new(io))
        })
    }
}

/// An h2c channel to a plain listener, with `host` as `:authority`.
pub async fn h2c_channel(addr: SocketAddr, host: &str) -> Result<Channel, BoxError> {
    let ep = Endpoint::from_shared(format!("http://{host}"))?;
    Ok(ep
        .connect_with_connector(FixedConnector { addr, tls: None })
        .await?)
}

/// An HTTP/2-over-TLS channel to a TLS listener, SNI and `:authority` both `host`.
pub async fn tls_channel(
    addr: SocketAddr,
    host: &str,
    cfg: Arc<ClientConfig>,
) -> Result<Channel, BoxError> {
    let ep = Endpoint::from_shared(format!("https://{host}"))?;
    let connector = FixedConnector {
        addr,
        tls: Some((host.to_string(), cfg)),
    };
    Ok(ep.connect_with_connector(connector).await?)
}

/// One HTTP/2 connection to the proxy as a tonic transport, without `Channel`'s layers.
///
/// `Channel` arms a client-side timer from every request's `grpc-timeout` header, however
/// it got there (`Request::set_timeout` or the metadata directly), and fails the call with
/// `CANCELLED "Timeout expired"` when that timer fires first. A call sent on this
/// transport carries its `grpc-timeout` to the proxy and nothing on the client acts on it,
/// so what comes back is what the proxy (or the upstream) answered.
#[derive(Clone)]
pub struct UntimedChannel {
    send: http2::SendRequest<tonic::body::Body>,
    scheme: Scheme,
    authority: Authority,
}

impl UntimedChannel {
    /// Connects to `addr` (over TLS for `host` when `tls` is given); `host` is the
    /// `:authority` of every request.
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<Self, BoxError> {
        let scheme = if tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let mut connector = FixedConnector {
            addr,
            tls: tls.map(|cfg| (host.to_string(), cfg)),
        };
        let io = connector.call(Uri::default()).await?;
        let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(UntimedChannel {
            send,
            scheme,
            authority: host.parse()?,
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for UntimedChannel {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        // tonic gives the path alone; HTTP/2 wants the scheme and `:authority` as well.
        let mut uri = req.uri().clone().into_parts();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        *req.uri_mut() = Uri::from_parts(uri).expect("tonic always sends a path");
        Box::pin(self.send.send_request(req))
    }
}

/// Serves the test service over h2c on `listener` with hyper alone, until the task ends.
///
/// tonic's `Server` (behind `tollgate_proto::serve`) arms a timer of its own from each
/// request's `grpc-timeout` and answers `CANCELLED "Timeout expired"` when it fires.
/// `Slow` gives up at most 50 ms before that timer, counted from a later start (once the
/// request message is in), so on a busy machine either may answer a call that overruns
/// its deadline. Served this way, `Slow`'s own `DEADLINE_EXCEEDED` is the only answer.
pub async fn serve_without_server_timer(listener: TcpListener, svc: TestServiceImpl) {
    let svc = TowerToHyperService::new(TestServiceServer::new(svc));
    while let Ok((tcp, _)) = listener.accept().await {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), svc.clone());
        tokio::spawn(conn);
    }
}
