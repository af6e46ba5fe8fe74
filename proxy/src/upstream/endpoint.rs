//! One upstream address with the state the balancer reads: in-flight requests,
//! active health, and passive ejection after consecutive failures, bounded so that
//! failures never take out more than the cluster's `max_ejection_percent`; and, for
//! HTTP/2 clusters, its connections.

use super::h1_pool::H1Pool;
use super::h2_pool::{H2Pool, StreamSlot};
use crate::clock::now_ms;
use http::uri::Authority;
use prometheus::IntGauge;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use tollgate_routing::OutlierSpec;

use Ordering::Relaxed;

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
    peers: Arc<Peers>,
    /// HTTP/1.1 clusters: the idle keep-alive connections to this address.
    pub h1: H1Pool,
    /// HTTP/2 clusters: the connections to this address (unused otherwise).
    pub h2: H2Pool,
}

/// The endpoints of one cluster, as an ejection counts them.
#[derive(Debug, Default)]
struct Peers {
    members: OnceLock<Box<[Weak<Endpoint>]>>,
    /// Held while one ejection is decided, so two at once cannot both take the last place.
    deciding: AtomicBool,
}

/// What an endpoint is built from.
#[derive(Debug)]
pub struct Member<'a> {
    pub address: &'a str,
    pub authority: Authority,
    pub weight: u32,
    /// The endpoint's `tollgate_upstream_endpoint_healthy` series.
    pub gauge: IntGauge,
}

impl Endpoint {
    /// The endpoints of one cluster, sharing its ejection ceiling.
    pub fn group(members: Vec<Member<'_>>) -> Vec<Arc<Self>> {
        let peers = Arc::new(Peers::default());
        let endpoints: Vec<Arc<Self>> = members
            .into_iter()
            .map(|m| {
                m.gauge.set(1);
                Arc::new(Endpoint {
                    address: m.address.into(),
                    authority: m.authority,
                    weight: m.weight,
                    in_flight: AtomicU32::new(0),
                    healthy: AtomicBool::new(true),
                    ejected_until_ms: AtomicU64::new(0),
                    consecutive_failures: AtomicU32::new(0),
                    gauge: m.gauge,
                    peers: peers.clone(),
                    h1: H1Pool::default(),
                    h2: H2Pool::default(),
                })
            })
            .collect();
        let _ = peers
            .members
            .set(endpoints.iter().map(Arc::downgrade).collect());
        endpoints
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
        InFlight {
            endpoint: self.clone(),
            slot: None,
        }
    }

    /// Open HTTP/2 connections to this address (0 for HTTP/1.1 clusters).
    pub fn h2_connections(&self) -> usize {
        self.h2.connections()
    }

    /// Idle HTTP/1.1 keep-alive connections to this address (0 for HTTP/2 clusters).
    pub fn h1_idle(&self) -> usize {
        self.h1.idle()
    }

    pub fn record_success(&self) {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Counts a failure; returns true when this failure ejected the endpoint.
    ///
    /// An ejection that would put more of the cluster out than `max_ejection_percent`
    /// allows is skipped; the count stays, so a later failure asks again.
    pub fn record_failure(&self, outlier: &OutlierSpec) -> bool {
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n < outlier.consecutive_failures {
            return false;
        }
        // Another ejection being decided right now: leave it to a later failure.
        if self.peers.deciding.swap(true, Ordering::Acquire) {
            return false;
        }
        let now = now_ms();
        let allowed = self.may_eject(now, outlier.max_ejection_percent);
        if allowed {
            self.consecutive_failures.store(0, Relaxed);
            self.ejected_until_ms
                .store(now + outlier.ejection_ms, Relaxed);
        }
        self.peers.deciding.store(false, Ordering::Release);
        if allowed {
            self.refresh_gauge();
        } else {
            tracing::debug!(endpoint = %self.address, "ejection skipped: the cluster's ejection ceiling is reached");
        }
        allowed
    }

    /// Whether this endpoint going out keeps the cluster's out share (ejected or
    /// failing health checks) within `max_percent`, rounded down.
    fn may_eject(&self, now: u64, max_percent: u32) -> bool {
        let Some(members) = self.peers.members.get() else {
            return false;
        };
        let total = members.len() as u64;
        let out = members
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|e| !std::ptr::eq(&**e, self) && !e.available(now))
            .count() as u64;
        (out + 1) * 100 <= total * u64::from(max_percent)
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

/// Decrements the endpoint's in-flight count on drop, and gives back the request's
/// place on its HTTP/2 connection.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    slot: Option<StreamSlot>,
}

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Keeps the stream's place on its connection until this request ends.
    pub(super) fn hold(&mut self, slot: StreamSlot) {
        self.slot = Some(slot);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: usize) -> Vec<Arc<Endpoint>> {
        let members = (0..n)
            .map(|i| {
                let gauge = IntGauge::new("g", "g").expect("gauge");
                Member {
                    address: "10.0.0.1:80",
                    authority: format!("10.0.0.{i}:80").parse().expect("authority"),
                    weight: 1,
                    gauge,
                }
            })
            .collect();
        Endpoint::group(members)
    }

    fn outlier(max_ejection_percent: u32) -> OutlierSpec {
        OutlierSpec {
            consecutive_failures: 1,
            ejection_ms: 600_000,
            max_ejection_percent,
        }
    }

    fn out(eps: &[Arc<Endpoint>]) -> usize {
        let now = now_ms();
        eps.iter().filter(|e| !e.available(now)).count()
    }

    #[test]
    fn ejections_stop_at_the_ceiling() {
        for (n, percent, most) in [(1, 50, 0), (2, 50, 1), (3, 50, 1), (4, 50, 2), (10, 10, 1)] {
            let eps = group(n);
            for _ in 0..3 {
                for e in &eps {
                    e.record_failure(&outlier(percent));
                }
            }
            assert_eq!(out(&eps), most, "{n} endpoints at {percent}%");
        }
        // 100% lets every endpoint go; 0% none.
        let eps = group(2);
        assert!(eps.iter().all(|e| e.record_failure(&outlier(100))));
        let eps = group(2);
        assert!(!eps.iter().any(|e| e.record_failure(&outlier(0))));
    }

    #[test]
    fn endpoints_failing_health_checks_count_as_out() {
        let eps = group(2);
        eps[0].set_healthy(false);
        assert!(
            !eps[1].record_failure(&outlier(50)),
            "the last available endpoint stays"
        );
        assert_eq!(out(&eps), 1);
        eps[0].set_healthy(true);
        assert!(
            eps[1].record_failure(&outlier(50)),
            "the failure count was kept"
        );
        assert_eq!(out(&eps), 1);
    }
}
