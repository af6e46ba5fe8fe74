//! Serving `TestServiceImpl` over h2c on an already-bound listener, optionally with
//! a health service and a limit on concurrent streams per connection.

use std::future::Future;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Error, Server};

use super::{HealthServiceImpl, TestServiceImpl};
use crate::grpc::health::v1::health_server::HealthServer;
use crate::test::v1::test_service_server::TestServiceServer;

/// What [`serve_with`] adds to the test service.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Served beside the test service as `grpc.health.v1.Health`.
    pub health: Option<HealthServiceImpl>,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` advertised to each client connection.
    pub max_concurrent_streams: Option<u32>,
}

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

/// Like [`serve`], with the health service and stream limit of `options`.
pub async fn serve_with(
    listener: TcpListener,
    svc: TestServiceImpl,
    options: ServeOptions,
) -> Result<(), Error> {
    Server::builder()
        .max_concurrent_streams(options.max_concurrent_streams)
        .add_service(TestServiceServer::new(svc))
        .add_optional_service(options.health.map(HealthServer::new))
        .serve_with_incoming(incoming(listener))
        .await
}
