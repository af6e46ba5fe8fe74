//! A retry budget: retries may add a percentage of live traffic plus a small floor,
//! so a failing upstream is not hit with a multiple of its normal load.

use crate::clock::now_ms;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Token bucket in thousandths of a retry.
#[derive(Debug)]
pub struct RetryBudget {
    milli: AtomicI64,
    last_refill_ms: AtomicU64,
    per_request: i64,
    per_second: i64,
    cap: i64,
}

impl RetryBudget {
    pub fn new(budget_percent: u32, min_per_sec: u32) -> Self {
        let per_second = i64::from(min_per_sec) * 1000;
        RetryBudget {
            milli: AtomicI64::new(per_second),
            last_refill_ms: AtomicU64::new(now_ms()),
            per_request: i64::from(budget_percent) * 10,
            per_second,
            cap: per_second.max(1000) * 10,
        }
    }

    /// Credits one original request.
    pub fn deposit(&self) {
        if self.per_request > 0 && self.milli.load(Relaxed) < self.cap {
            self.milli.fetch_add(self.per_request, Relaxed);
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let now = now_ms();
        let last = self.last_refill_ms.load(Relaxed);
        if now > last
            && self
                .last_refill_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            let add = self.per_second * (now - last) as i64 / 1000;
            let cur = self.milli.load(Relaxed);
            self.milli
                .fetch_add(add.min(self.cap - cur).max(0), Relaxed);
        }
        if self.milli.fetch_sub(1000, Relaxed) >= 1000 {
            true
        } else {
            self.milli.fetch_add(1000, Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_bounded_by_traffic() {
        let b = RetryBudget::new(20, 0);
        assert!(!b.withdraw(), "no traffic, no floor: no retry");
        for _ in 0..10 {
            b.deposit();
        }
        assert!(
            b.withdraw() && b.withdraw(),
            "20% of 10 requests is 2 retries"
        );
        assert!(!b.withdraw());
    }

    #[test]
    fn floor_allows_retries_without_traffic() {
        let b = RetryBudget::new(0, 3);
        assert_eq!((0..10).filter(|_| b.withdraw()).count(), 3);
    }
}
