//! Serving `TestServiceImpl` over h2c on an already-bound listener.

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Error, Server};

use super::TestServiceImpl;
use crate::test::v1::test_service_server::TestServiceServer;

/// Serves `svc` on `listener` (plaintext HTTP/2) until the listener fails.
pub async fn serve(listener: TcpListener, svc: TestServiceImpl) -> Result<(), Error> {
    Server::builder()
        .add_service(TestServiceServer::new(svc))
        .serve_with_incoming(TcpListenerStream::new(listener))
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
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
        .await
}
