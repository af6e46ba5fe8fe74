//! The bulk lane: batches are decided on a thread of their own, at a low OS
//! priority, so a bulk load gets the CPU that single commands, the feed, the
//! projection and the API leave, rather than an equal share of it.
//!
//! Only what a batch works out off every lock runs here: its decision (step 1 of
//! the `batch` module) and its rebase on a copy of the open stage (step 2).
//! Anything a batch does under the group or commit lock stays on the runtime's
//! workers at their priority: a lock held by a starved thread would hold single
//! commands up behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use tokio::sync::{mpsc, oneshot};

/// How much nicer than the process the lane is (Linux: -20 highest, 19 lowest).
/// Below the runtime's workers, not starved: it still gets a share when the
/// machine is busy.
const NICER: i32 = 10;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Jobs for the lane's thread; `None` when the thread could not be started.
static LANE: OnceLock<Option<mpsc::UnboundedSender<Job>>> = OnceLock::new();

/// Runs `work` on the bulk lane and waits for its output; on the caller's task
/// when the lane could not be started. `None` when the work panicked.
pub(crate) async fn run<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let Some(lane) = LANE.get_or_init(start) else {
        return Some(work.await);
    };
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::pin(async move {
        let _ = tx.send(work.await);
    });
    if let Err(mpsc::error::SendError(job)) = lane.send(job) {
        job.await;
    }
    rx.await.ok()
}

/// Starts the lane: a current-thread runtime on a thread of its own, lowered in
/// priority where the OS allows it.
fn start() -> Option<mpsc::UnboundedSender<Job>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(
            |e| tracing::warn!(error = %e, "bulk lane: no runtime; batches decide on the workers"),
        )
        .ok()?;
    let spawned = std::thread::Builder::new()
        .name("tollgate-bulk".into())
        .spawn(move || {
            lower_priority();
            runtime.block_on(async move {
                while let Some(job) = rx.recv().await {
                    // A job of its own: batches decide side by side, and a panic
                    // ends that job only.
                    tokio::spawn(job);
                }
            });
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "bulk lane: no thread; batches decide on the workers");
            None
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // Linux keeps a nice value per thread: this lowers the lane's thread only.
    use rustix::process::{getpriority_process, setpriority_process};
    let me = rustix::thread::gettid();
    let lowered = getpriority_process(Some(me))
        .and_then(|now| setpriority_process(Some(me), (now + NICER).min(19)));
    if let Err(e) = lowered {
        tracing::warn!(error = %e, "bulk lane: priority not lowered");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_lane_thread_and_a_panic_is_none() {
        let name = run(async { std::thread::current().name().map(str::to_string) }).await;
        assert_eq!(name.unwrap().as_deref(), Some("tollgate-bulk"));
        let failed: Option<()> = run(async { panic!("a job panics") }).await;
        assert!(failed.is_none());
        // The lane goes on after a job panicked.
        assert_eq!(run(async { 7 }).await, Some(7));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_lane_runs_below_normal_priority() {
        let lane =
            run(async { rustix::process::getpriority_process(Some(rustix::thread::gettid())) })
                .await
                .unwrap()
                .unwrap();
        let here = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        assert!(
            lane > here || here == 19,
            "lane nice {lane}, worker nice {here}"
        );
    }
}
