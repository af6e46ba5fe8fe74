//! Producer task behind `ServerStream`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc::Sender;
use tonic::Status;

use super::payload;
use crate::test::v1::{StreamRequest, StreamResponse};

/// A validated `StreamRequest`.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    count: u32,
    interval: Duration,
    payload_bytes: i32,
    usage_tokens: i64,
}

impl Plan {
    pub(super) fn new(req: &StreamRequest) -> Result<Self, Status> {
        let count = payload::non_negative("count", req.count)?;
        let interval_ms = payload::non_negative("interval_ms", req.interval_ms)?;
        payload::zeroes(req.payload_bytes)?;
        Ok(Self {
            count,
            interval: Duration::from_millis(u64::from(interval_ms)),
            payload_bytes: req.payload_bytes,
            usage_tokens: i64::from(req.usage_per_message),
        })
    }
}

/// Sends the planned messages; if the receiver goes away first, bumps
/// `cancelled` and returns.
pub(super) async fn produce(
    plan: Plan,
    tx: Sender<Result<StreamResponse, Status>>,
    cancelled: Arc<AtomicU64>,
) {
    for seq in 0..plan.count {
        if seq > 0 && !plan.interval.is_zero() {
            tokio::select! {
                () = tx.closed() => {
                    cancelled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                () = tokio::time::sleep(plan.interval) => {}
            }
        }
        let msg = payload::zeroes(plan.payload_bytes).map(|payload| StreamResponse {
            seq: seq as i32,
            payload,
            usage_tokens: plan.usage_tokens,
        });
        if tx.send(msg).await.is_err() {
            cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// Counts one running producer until dropped.
pub(super) struct Open(Arc<AtomicU64>);

impl Open {
    pub(super) fn count(open: &Arc<AtomicU64>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Open(Arc::clone(open))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
