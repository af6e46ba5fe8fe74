//! Keyed GCRA in this process, one `governor` limiter per window.
//!
//! Keys are the 64-bit hash of the key value under a per-process random seed, so a
//! check allocates nothing for borrowed values and callers cannot aim collisions.
//!
//! State grows with the number of distinct keys seen. [`LocalLimiter::retain_recent`]
//! drops every key whose bucket has refilled (indistinguishable from a fresh one) and
//! shrinks the maps; run it periodically, e.g. with [`spawn_housekeeping`], so memory
//! stays proportional to the keys active within the longest window.

use super::{Decision, RequestKeys, Window};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

type Keyed<C> = RateLimiter<u64, DefaultKeyedStateStore<u64>, C, StateInformationMiddleware>;

/// Local rate limits for one set of windows (typically one app's rules).
pub struct LocalLimiter<C: Clock = DefaultClock> {
    windows: Vec<(Window, Keyed<C>)>,
    clock: C,
    seed: RandomState,
}

impl LocalLimiter<DefaultClock> {
    /// A limiter on the monotonic clock.
    pub fn new(windows: Vec<Window>) -> Self {
        Self::with_clock(windows, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LocalLimiter<C> {
    /// A limiter on `clock` (tests pass `governor::clock::FakeRelativeClock`).
    pub fn with_clock(windows: Vec<Window>, clock: C) -> Self {
        let windows = windows
            .into_iter()
            .filter_map(|w| {
                let burst = NonZeroU32::new(w.burst)?;
                let quota = Quota::with_period(w.interval())?.allow_burst(burst);
                let limiter = RateLimiter::dashmap_with_clock(quota, clock.clone())
                    .with_middleware::<StateInformationMiddleware>();
                Some((w, limiter))
            })
            .collect();
        LocalLimiter {
            windows,
            clock,
            seed: RandomState::new(),
        }
    }

    /// Counts the request in every window whose key it has; refused if any window
    /// refuses. Windows are checked in order and stop at the first refusal.
    pub fn check(&self, keys: &RequestKeys<'_>) -> Decision {
        let mut out = Decision::unlimited();
        for (w, limiter) in &self.windows {
            let Some(value) = keys.value(&w.key) else {
                continue;
            };
            let d = self.check_one(w, limiter, &value);
            let refused = !d.allowed;
            out = out.merge(d);
            if refused {
                break;
            }
        }
        out
    }

    /// Counts one request under `key` in every window, whatever each window keys on.
    pub fn check_key(&self, key: &str) -> Decision {
        let mut out = Decision::unlimited();
        for (w, limiter) in &self.windows {
            let d = self.check_one(w, limiter, key);
            let refused = !d.allowed;
            out = out.merge(d);
            if refused {
                break;
            }
        }
        out
    }

    fn check_one(&self, w: &Window, limiter: &Keyed<C>, value: &str) -> Decision {
        let interval = w.interval();
        let base = Decision {
            allowed: true,
            limit: w.burst,
            remaining: 0,
            reset: Duration::ZERO,
            retry_after: None,
            window: w.policy_window(),
            policy: Some(w.id.clone()),
        };
        match limiter.check_key(&self.seed.hash_one(value)) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision {
                    remaining,
                    reset: interval.saturating_mul(w.burst.saturating_sub(remaining)),
                    ..base
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision {
                    allowed: false,
                    reset: wait + interval.saturating_mul(w.burst.saturating_sub(1)),
                    retry_after: Some(wait),
                    ..base
                }
            }
        }
    }

    /// Forgets keys whose buckets are full again and releases spare map capacity.
    pub fn retain_recent(&self) {
        for (_, limiter) in &self.windows {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys held across all windows.
    pub fn len(&self) -> usize {
        self.windows.iter().map(|(_, l)| l.len()).sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The windows enforced, in check order.
    pub fn windows(&self) -> impl Iterator<Item = &Window> {
        self.windows.iter().map(|(w, _)| w)
    }
}

/// Runs [`LocalLimiter::retain_recent`] every `every` until the limiter is dropped.
pub fn spawn_housekeeping<C>(
    limiter: &Arc<LocalLimiter<C>>,
    every: Duration,
) -> tokio::task::JoinHandle<()>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    let weak: Weak<LocalLimiter<C>> = Arc::downgrade(limiter);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(l) => l.retain_recent(),
                None => return,
            }
        }
    })
}
