//! Concurrent streams per app on this proxy: an atomic counter and an RAII permit.
//!
//! Acquiring and releasing is one compare-and-swap each; no lock. The maximum can be
//! changed live (config update) without losing the count of streams in flight:
//! lowering it refuses new streams until enough old ones end, it never cuts any.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// One app's stream quota; share it as `Arc` and take a permit per stream.
#[derive(Debug)]
pub struct StreamQuota {
    max: AtomicU32,
    in_use: AtomicU32,
}

/// A held stream slot; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamPermit {
    quota: Arc<StreamQuota>,
}

impl StreamQuota {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(StreamQuota {
            max: AtomicU32::new(max),
            in_use: AtomicU32::new(0),
        })
    }

    /// A permit if fewer than `max` streams are open, else `None` (refuse the stream).
    pub fn try_acquire(self: &Arc<Self>) -> Option<StreamPermit> {
        let max = self.max.load(Ordering::Relaxed);
        self.in_use
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamPermit {
                quota: Arc::clone(self),
            })
    }

    /// Changes the maximum; streams already open keep their permits.
    pub fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }

    /// Streams holding a permit now.
    pub fn in_use(&self) -> u32 {
        self.in_use.load(Ordering::Relaxed)
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.quota.in_use.fetch_sub(1, Ordering::Release);
    }
}
