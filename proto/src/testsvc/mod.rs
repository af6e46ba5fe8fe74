//! Reference implementation of `tollgate.test.v1.TestService` plus helpers to
//! serve it over plaintext HTTP/2 (h2c), optionally beside a settable
//! `grpc.health.v1.Health` ([`HealthServiceImpl`]).

mod deadline;
mod fail;
mod health;
mod metadata;
mod payload;
mod serve;
mod stream;

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::test::v1::{
    EchoRequest, EchoResponse, FailRequest, FailResponse, SlowRequest, StreamRequest,
    StreamResponse, test_service_server::TestService,
};

pub use fail::{ERROR_DETAIL_DOMAIN, ERROR_DETAIL_REASON};
pub use health::HealthServiceImpl;
pub use serve::{ServeOptions, serve, serve_with, serve_with_shutdown};

/// Queued server-stream messages per call before the producer waits.
const STREAM_BUFFER: usize = 16;

/// `TestService` implementation. Clones share the stream counters.
#[derive(Debug, Clone, Default)]
pub struct TestServiceImpl {
    cancelled_streams: Arc<AtomicU64>,
    open_streams: Arc<AtomicU64>,
    echoes: Arc<AtomicU64>,
}

impl TestServiceImpl {
    /// Creates a service with a zeroed cancellation counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Server streams that ended because the client went away before the
    /// last message was queued.
    pub fn cancelled_streams(&self) -> u64 {
        self.cancelled_streams.load(Ordering::Relaxed)
    }

    /// Shared handle to the counter behind [`Self::cancelled_streams`].
    pub fn cancelled_streams_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.cancelled_streams)
    }

    /// `Echo` calls answered so far (tells which of several servers a call reached).
    pub fn echoes(&self) -> u64 {
        self.echoes.load(Ordering::Relaxed)
    }

    /// Server streams whose producer is running now: from the call until the last
    /// message is queued or the client goes away.
    pub fn open_streams(&self) -> u64 {
        self.open_streams.load(Ordering::Relaxed)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl TestService for TestServiceImpl {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        self.echoes.fetch_add(1, Ordering::Relaxed);
        let metadata = metadata::visible(request.metadata());
        let req = request.into_inner();
        let payload = payload::zeroes(req.payload_bytes)?;
        Ok(Response::new(EchoResponse {
            message: req.message,
            metadata,
            payload,
        }))
    }

    type ServerStreamStream = ReceiverStream<Result<StreamResponse, Status>>;

    async fn server_stream(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        let plan = stream::Plan::new(&request.into_inner())?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let open = stream::Open::count(&self.open_streams);
        let cancelled = self.cancelled_streams_counter();
        tokio::spawn(async move {
            stream::produce(plan, tx, cancelled).await;
            drop(open);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let metadata = metadata::visible(request.metadata());
        let mut inbound = request.into_inner();
        let mut message = String::new();
        while let Some(req) = inbound.next().await {
            message.push_str(&req?.message);
        }
        Ok(Response::new(EchoResponse {
            message,
            metadata,
            payload: Vec::new(),
        }))
    }

    type BidiStreamStream = BoxStream<EchoResponse>;

    async fn bidi_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidiStreamStream>, Status> {
        // Metadata rides on the first response only.
        let mut metadata = Some(metadata::visible(request.metadata()));
        let outbound = request.into_inner().map(move |req| {
            let req = req?;
            Ok(EchoResponse {
                payload: payload::zeroes(req.payload_bytes)?,
                message: req.message,
                metadata: metadata.take().unwrap_or_default(),
            })
        });
        Ok(Response::new(Box::pin(outbound)))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<FailResponse>, Status> {
        Err(fail::status(&request.into_inner()))
    }

    async fn slow(&self, request: Request<SlowRequest>) -> Result<Response<EchoResponse>, Status> {
        let budget = deadline::grpc_timeout(request.metadata());
        let delay_ms = payload::non_negative("delay_ms", request.get_ref().delay_ms)?;
        let delay = Duration::from_millis(u64::from(delay_ms));
        match budget {
            Some(budget) if budget < delay => {
                tokio::time::sleep(deadline::give_up_after(budget)).await;
                Err(Status::deadline_exceeded(format!(
                    "delay of {delay_ms}ms exceeds the {budget:?} deadline"
                )))
            }
            _ => {
                tokio::time::sleep(delay).await;
                Ok(Response::new(EchoResponse {
                    message: format!("slept {delay_ms}ms"),
                    ..Default::default()
                }))
            }
        }
    }
}
