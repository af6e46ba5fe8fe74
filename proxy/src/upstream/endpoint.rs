//! One upstream address with the state the balancer reads: in-flight requests,
//! active health, and passive ejection after consecutive failures.

use crate::clock::now_ms;
use http::uri::Authority;
use prometheus::IntGauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use tollgate_routing::OutlierSpec;

#[derive(Debug)]
pub struct Endpoint {
    pub address: Arc<str>,
    pub authority: Authority,
    pub weight: u32,
    in_flight: AtomicU32,
    /// Active health-check verdict; true when the cluster has no health check.
    healthy: AtomicBool,
    ejected_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    gauge: IntGauge,
}

impl Endpoint {
    pub fn new(address: &str, authority: Authority, weight: u32, gauge: IntGauge) -> Self {
        gauge.set(1);
        Endpoint {
            address: address.into(),
            authority,
            weight,
            in_flight: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            gauge,
        }
    }

    /// Healthy and not ejected at `now_ms`.
    pub fn available(&self, now: u64) -> bool {
        self.healthy.load(Relaxed) && self.ejected_until_ms.load(Relaxed) <= now
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Counts a request until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    pub fn record_success(&self) {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Counts a failure; returns true when this failure ejected the endpoint.
    pub fn record_failure(&self, outlier: &OutlierSpec) -> bool {
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n < outlier.consecutive_failures {
            return false;
        }
        self.consecutive_failures.store(0, Relaxed);
        self.ejected_until_ms
            .store(now_ms() + outlier.ejection_ms, Relaxed);
        self.refresh_gauge();
        true
    }

    /// Applies an active health-check verdict.
    pub fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Relaxed) != healthy {
            tracing::info!(endpoint = %self.address, healthy, "endpoint health changed");
        }
        if healthy {
            // A passing check ends an ejection early.
            self.ejected_until_ms.store(0, Relaxed);
        }
        self.refresh_gauge();
    }

    pub fn refresh_gauge(&self) {
        self.gauge.set(i64::from(self.available(now_ms())));
    }
}

/// Decrements the endpoint's in-flight count on drop.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}
