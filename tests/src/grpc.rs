//! tonic channels to the proxy: h2c over TCP or HTTP/2 over TLS (ALPN h2), always to a
//! fixed proxy address whatever the URI's host, so the URI can carry the tenant name.

use crate::BoxError;
use crate::tls;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
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
