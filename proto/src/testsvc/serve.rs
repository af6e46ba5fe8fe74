//! Serving `TestServiceImpl` over h2c on an already-bound listener.

use std::future::Future;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Error, Server};

use super::TestServiceImpl;
use crate::test::v1::test_service_server::TestServiceServer;

/// Accepted connections with Nagle's algorithm off: small streamed messages go out at
/// once (tonic applies its own `tcp_nodelay` only to listeners it binds itself).
fn incoming(listener: TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Serves `svc` on `listener` (plaintext HTTP/2) until the listener fails.
pub async fn serve(listener: TcpListener, svc: TestServiceImpl) -> Result<(), Error> {
    Server::builder()
        .add_service(TestServiceServer::new(svc))
        .serve_with_incoming(incoming(listener))
        .await
}

/// Like [`serve`], but shuts down gracefully once `signal` completes.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    svc: TestServiceImpl,
    signal: impl Future<Output = ()>,
) -> Result<(), Error> {
    Server::builder()
        .add_service(TestServiceServer::new(svc))
        .serve_with_incoming_shutdown(incoming(listener), signal)
        .await
}
