//! Starts a `TestServiceImpl` on an ephemeral port and connects a client.
#![allow(dead_code)] // each test binary uses a different subset

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use tokio::net::TcpListener;
use tollgate_proto::{TestServiceImpl, serve, test::v1::test_service_client::TestServiceClient};
use tonic::transport::Channel;

pub struct Harness {
    pub client: TestServiceClient<Channel>,
    pub cancelled: Arc<AtomicU64>,
}

pub async fn start() -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let svc = TestServiceImpl::new();
    let cancelled = svc.cancelled_streams_counter();
    tokio::spawn(serve(listener, svc));
    let client = TestServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    Harness { client, cancelled }
}

/// Polls `cond` every 10ms for up to 10s.
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}
