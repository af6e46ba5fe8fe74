//! A `grpc.health.v1.Health` implementation whose statuses a test sets at will.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_server::Health,
};

/// The health service of a test upstream. Clones share their statuses; a new one
/// reports `SERVING` for the server as a whole (service `""`) and knows no other service.
#[derive(Debug, Clone)]
pub struct HealthServiceImpl {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    statuses: Mutex<HashMap<String, ServingStatus>>,
    /// Bumped on every change, so `Watch` streams send the new status.
    changed: watch::Sender<u64>,
    checks: AtomicU64,
}

impl Default for HealthServiceImpl {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthServiceImpl {
    pub fn new() -> Self {
        let statuses = HashMap::from([(String::new(), ServingStatus::Serving)]);
        HealthServiceImpl {
            inner: Arc::new(Inner {
                statuses: Mutex::new(statuses),
                changed: watch::Sender::new(0),
                checks: AtomicU64::new(0),
            }),
        }
    }

    /// Sets the status `Check` and `Watch` report for `service` (`""`: the whole server).
    pub fn set(&self, service: &str, status: ServingStatus) {
        if let Ok(mut statuses) = self.inner.statuses.lock() {
            statuses.insert(service.to_string(), status);
        }
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// `Check` calls answered so far, whatever their outcome.
    pub fn checks(&self) -> u64 {
        self.inner.checks.load(Ordering::Relaxed)
    }

    fn status(&self, service: &str) -> Option<ServingStatus> {
        self.inner
            .statuses
            .lock()
            .ok()
            .and_then(|s| s.get(service).copied())
    }
}

#[tonic::async_trait]
impl Health for HealthServiceImpl {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.checks.fetch_add(1, Ordering::Relaxed);
        let service = request.into_inner().service;
        match self.status(&service) {
            Some(status) => Ok(Response::new(HealthCheckResponse {
                status: status.into(),
            })),
            None => Err(Status::not_found(format!("unknown service `{service}`"))),
        }
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let (tx, rx) = mpsc::channel(4);
        let mut changed = self.inner.changed.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let status = this
                    .status(&service)
                    .unwrap_or(ServingStatus::ServiceUnknown);
                let msg = HealthCheckResponse {
                    status: status.into(),
                };
                if tx.send(Ok(msg)).await.is_err() || changed.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
