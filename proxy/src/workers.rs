//! Serving workers: one OS thread per worker, each with its own single-threaded tokio
//! runtime, accepting from its own `SO_REUSEPORT` socket of every HTTP listener.
//!
//! A connection and everything its requests spawn stay on the worker that accepted
//! it: no work stealing, no scheduler atomics, no wake-ups that cross threads on the
//! request path. Upstream HTTP/1.1 connections are pooled per worker for the same
//! reason ([`index`]). Admin, reloads, the control client and health checks run on
//! the main runtime.
//!
//! A worker's runtime lives until [`Workers`] is dropped at the very end of a run, so
//! what a request started there (a connection another worker later borrows, a
//! refresh loop) keeps running while the process drains.

use once_cell::race::OnceBox;
use std::cell::Cell;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::OnceLock;
use tokio::sync::oneshot;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The number of workers, once the proxy has started them.
static COUNT: OnceLock<usize> = OnceLock::new();

/// This thread's worker, 1-based; 0 on any other thread (the main runtime, tests).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Slots a per-worker structure needs: one per worker, and slot 0 for other threads.
pub fn slots() -> usize {
    COUNT.get().map_or(1, |n| n + 1)
}

/// One `T` per serving worker and one for other threads, so each worker's share is
/// used on the runtime that made it.
///
/// Entries are made on first use: a structure no worker touches (an upstream
/// endpoint of a tenant that gets no traffic) costs one pointer per slot.
#[derive(Debug)]
pub struct PerWorker<T>(Box<[OnceBox<T>]>);

impl<T: Default> PerWorker<T> {
    /// [`slots`] empty entries.
    pub fn new() -> Self {
        PerWorker(std::iter::repeat_with(OnceBox::new).take(slots()).collect())
    }

    /// This thread's entry, made now if it is the first use (the last entry on a
    /// worker the count did not include).
    pub fn mine(&self) -> &T {
        let i = index().min(self.0.len().saturating_sub(1));
        // `new` made `slots()` >= 1 entries, so `i` is in range. Only this thread
        // makes a worker's entry; slot 0's threads may race, and one box wins.
        self.0[i].get_or_init(Box::default)
    }

    /// Every entry made so far.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().filter_map(OnceBox::get)
    }
}

impl<T: Default> Default for PerWorker<T> {
    fn default() -> Self {
        PerWorker::new()
    }
}

/// The worker count when the config does not set one: the CPUs this process may use
/// (cgroup quotas included).
pub fn default_count() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Fixes the worker count for the process (the first call wins) and returns the
/// count in force. Upstream pools size their per-worker slots from it, so it comes
/// before the first config is built.
pub fn set_count(n: NonZeroUsize) -> usize {
    *COUNT.get_or_init(|| n.get())
}

/// Running workers. Dropping it ends their threads and runtimes.
pub struct Workers {
    done: Vec<oneshot::Receiver<()>>,
    /// Dropped to let the threads finish.
    _release: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts one thread per entry of `serve`, each running its future on its own
    /// runtime, after [`set_count`] with that many.
    pub fn start<F>(serve: Vec<F>) -> std::io::Result<Workers>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let count = serve.len();
        let mut done = Vec::with_capacity(count);
        let mut release = Vec::with_capacity(count);
        for (i, work) in serve.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (done_tx, done_rx) = oneshot::channel();
            let (release_tx, release_rx) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("tollgate-w{}", i + 1))
                .spawn(move || {
                    INDEX.with(|c| c.set(i + 1));
                    runtime.block_on(async move {
                        work.await;
                        let _ = done_tx.send(());
                        let _ = release_rx.await;
                    });
                })?;
            done.push(done_rx);
            release.push(release_tx);
        }
        Ok(Workers {
            done,
            _release: release,
        })
    }

    /// Waits until every worker's serving future has finished.
    pub async fn finished(&mut self) {
        for d in std::mem::take(&mut self.done) {
            let _ = d.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use tokio::runtime::RuntimeFlavor;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn each_worker_runs_on_its_own_thread_and_runtime_until_dropped() {
        // The only call in this test binary: one slot per worker, one for other threads.
        assert_eq!(set_count(NonZeroUsize::new(3).expect("3")), 3);
        assert_eq!(set_count(NonZeroUsize::MIN), 3, "the first call wins");
        let slots_before = slots();
        assert_eq!(slots_before, 4);
        let per = std::sync::Arc::new(PerWorker::<AtomicUsize>::new());
        assert_eq!(per.iter().count(), 0, "entries are made on first use");
        per.mine().fetch_add(10, Relaxed);
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
        let (ask_tx, ask_rx) = oneshot::channel::<oneshot::Sender<usize>>();
        let mut ask_rx = Some(ask_rx);
        let serve: Vec<_> = (0..3)
            .map(|_| {
                let seen = seen_tx.clone();
                let per = per.clone();
                let ask = ask_rx.take();
                async move {
                    per.mine().fetch_add(1, Relaxed);
                    let flavor = tokio::runtime::Handle::current().runtime_flavor();
                    let _ = seen.send((index(), std::thread::current().id(), flavor));
                    // A task outliving the serving future, as a pooled connection's does.
                    if let Some(ask) = ask {
                        tokio::spawn(async move {
                            if let Ok(reply) = ask.await {
                                let _ = reply.send(index());
                            }
                        });
                    }
                }
            })
            .collect();
        drop(seen_tx);
        let mut workers = Workers::start(serve).expect("threads start");
        assert_eq!(
            slots(),
            slots_before,
            "the count is fixed by set_count only"
        );
        workers.finished().await;
        let mut seen = Vec::new();
        while let Some(s) = seen_rx.recv().await {
            seen.push(s);
        }
        seen.sort_by_key(|s| s.0);
        let indices: Vec<usize> = seen.iter().map(|s| s.0).collect();
        assert_eq!(indices, [1, 2, 3]);
        let threads: std::collections::HashSet<_> = seen.iter().map(|s| s.1).collect();
        assert_eq!(threads.len(), 3, "one thread per worker");
        assert!(!threads.contains(&std::thread::current().id()));
        assert!(seen.iter().all(|s| s.2 == RuntimeFlavor::CurrentThread));
        assert_eq!(index(), 0, "not a worker thread");
        let counts: Vec<usize> = per.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(counts, [10, 1, 1, 1], "each thread used its own entry");

        // The runtime still runs the task after its serving future ended...
        let (reply_tx, reply_rx) = oneshot::channel();
        ask_tx.send(reply_tx).expect("task alive");
        assert_eq!(reply_rx.await.expect("reply"), 1);
        // ...and the runtimes end when the workers are dropped.
        drop(workers);
    }
}
