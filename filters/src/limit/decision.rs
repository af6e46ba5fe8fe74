//! The answer of a rate check, and how several windows' answers combine.

use std::sync::Arc;
use std::time::Duration;

/// Whether a request may pass, and what to tell the caller about the binding window.
///
/// With several windows, the fields describe the one that binds: the refusing window
/// with the longest wait, else the window with the fewest requests left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Quota of the binding window (its burst), for `RateLimit-Policy: q=`.
    pub limit: u32,
    /// Requests still allowed right now after this one.
    pub remaining: u32,
    /// Until the binding window's quota is whole again.
    pub reset: Duration,
    /// Set when refused: wait at least this long before retrying.
    pub retry_after: Option<Duration>,
    /// The binding window's length, for `RateLimit-Policy: w=`.
    pub window: Duration,
    /// Name of the binding window; `None` when no window applied.
    pub policy: Option<Arc<str>>,
}

impl Decision {
    /// No window applied: allowed, nothing to advertise.
    pub fn unlimited() -> Decision {
        Decision {
            allowed: true,
            limit: 0,
            remaining: 0,
            reset: Duration::ZERO,
            retry_after: None,
            window: Duration::ZERO,
            policy: None,
        }
    }

    /// Refused without a window to name (fail closed); retry after `wait`.
    pub fn refused(wait: Duration) -> Decision {
        Decision {
            allowed: false,
            reset: wait,
            retry_after: Some(wait),
            ..Decision::unlimited()
        }
    }

    /// The more binding of two answers for the same request.
    pub fn merge(self, other: Decision) -> Decision {
        if self.policy.is_none() && self.allowed {
            return other;
        }
        if other.policy.is_none() && other.allowed {
            return self;
        }
        match (self.allowed, other.allowed) {
            (true, false) => other,
            (false, true) => self,
            (false, false) => {
                if other.retry_after > self.retry_after {
                    other
                } else {
                    self
                }
            }
            (true, true) => {
                if (other.remaining, std::cmp::Reverse(other.reset))
                    < (self.remaining, std::cmp::Reverse(self.reset))
                {
                    other
                } else {
                    self
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(allowed: bool, remaining: u32, retry_ms: Option<u64>, name: &str) -> Decision {
        Decision {
            allowed,
            limit: 10,
            remaining,
            reset: Duration::from_secs(1),
            retry_after: retry_ms.map(Duration::from_millis),
            window: Duration::from_secs(1),
            policy: Some(name.into()),
        }
    }

    #[test]
    fn refusal_with_longest_wait_binds() {
        let m = d(true, 3, None, "a")
            .merge(d(false, 0, Some(100), "b"))
            .merge(d(false, 0, Some(900), "c"))
            .merge(Decision::unlimited());
        assert_eq!(m.policy.as_deref(), Some("c"));
        assert!(!m.allowed);
    }

    #[test]
    fn fewest_remaining_binds_when_allowed() {
        let m = Decision::unlimited()
            .merge(d(true, 7, None, "a"))
            .merge(d(true, 2, None, "b"));
        assert_eq!(m.policy.as_deref(), Some("b"));
        assert!(Decision::unlimited().merge(Decision::unlimited()).allowed);
    }
}
