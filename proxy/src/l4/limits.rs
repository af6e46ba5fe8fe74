//! Per-route connection counts for `max_connections`, kept across config reloads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Open connections per L4 route id.
#[derive(Debug, Default)]
pub struct ConnLimits {
    counts: Mutex<HashMap<Arc<str>, Arc<AtomicU32>>>,
}

/// Holds one connection slot of a route until dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl ConnLimits {
    /// Takes a slot of `route`, or `None` when `max` are open.
    pub fn acquire(&self, route: &Arc<str>, max: Option<u32>) -> Option<Slot> {
        let counter = {
            let Ok(mut map) = self.counts.lock() else {
                return None;
            };
            map.entry(route.clone()).or_default().clone()
        };
        let prev = counter.fetch_add(1, Relaxed);
        if max.is_some_and(|m| prev >= m) {
            counter.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Slot(counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_released() {
        let l = ConnLimits::default();
        let id: Arc<str> = "r".into();
        let a = l.acquire(&id, Some(2)).unwrap();
        let _b = l.acquire(&id, Some(2)).unwrap();
        assert!(l.acquire(&id, Some(2)).is_none());
        drop(a);
        assert!(l.acquire(&id, Some(2)).is_some());
        assert!(l.acquire(&"other".into(), None).is_some());
    }
}
