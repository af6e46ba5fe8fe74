//! Endpoint selection: weighted round-robin, least-request (power of two choices)
//! and weighted rendezvous hashing on request headers.

use super::endpoint::Endpoint;
use http::HeaderMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use tollgate_routing::BalancePolicy;

/// Picks endpoints for one cluster.
#[derive(Debug)]
pub struct Balancer {
    policy: BalancePolicy,
    /// Endpoint indexes repeated by weight, interleaved, for round-robin.
    schedule: Vec<usize>,
    next: AtomicUsize,
    hasher: std::hash::RandomState,
}

impl Balancer {
    pub fn new(policy: BalancePolicy, endpoints: &[Arc<Endpoint>]) -> Self {
        Balancer {
            policy,
            schedule: weighted_schedule(endpoints),
            next: AtomicUsize::new(0),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// An available endpoint other than `exclude`, or `None` when there is none.
    pub fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        headers: &HeaderMap,
        app_id: &str,
        exclude: Option<usize>,
        now: u64,
    ) -> Option<usize> {
        let ok = |i: usize| Some(i) != exclude && endpoints[i].available(now);
        match &self.policy {
            BalancePolicy::RoundRobin => {
                let n = self.schedule.len();
                let start = self.next.fetch_add(1, Relaxed);
                (0..n)
                    .map(|k| self.schedule[(start + k) % n])
                    .find(|&i| ok(i))
            }
            BalancePolicy::LeastRequest => {
                let n = endpoints.len();
                if n == 0 {
                    return None;
                }
                // Two distinct candidates: drawing the same one twice would send a share of
                // the traffic to a loaded endpoint without any comparison.
                let a = fastrand::usize(..n);
                let b = if n > 1 {
                    (a + 1 + fastrand::usize(..n - 1)) % n
                } else {
                    a
                };
                let load = |i: usize| {
                    u64::from(endpoints[i].in_flight()) * 1000
                        / u64::from(endpoints[i].weight.max(1))
                };
                match (ok(a), ok(b)) {
                    (true, true) => Some(if load(b) < load(a) { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => {
                        let start = fastrand::usize(..n);
                        (0..n)
                            .map(|k| (start + k) % n)
                            .filter(|&i| ok(i))
                            .min_by_key(|&i| load(i))
                    }
                }
            }
            BalancePolicy::ConsistentHash { headers: names } => {
                let mut h = self.hasher.build_hasher();
                h.write(app_id.as_bytes());
                for name in names {
                    h.write_u8(0);
                    if let Some(v) = headers.get(name.as_str()) {
                        h.write(v.as_bytes());
                    }
                }
                let key = h.finish();
                (0..endpoints.len()).filter(|&i| ok(i)).max_by(|&i, &j| {
                    rendezvous_score(key, &endpoints[i])
                        .total_cmp(&rendezvous_score(key, &endpoints[j]))
                })
            }
        }
    }
}

/// Weighted rendezvous score: the endpoint with the highest score owns the key.
fn rendezvous_score(key: u64, ep: &Endpoint) -> f64 {
    let mut x = key ^ fnv1a(ep.address.as_bytes());
    // splitmix64 finaliser spreads the combined bits
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^= x >> 31;
    let unit = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64; // (0, 1)
    f64::from(ep.weight) / -unit.ln()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Smooth weighted round-robin order (as nginx does) over one full cycle of weights.
fn weighted_schedule(endpoints: &[Arc<Endpoint>]) -> Vec<usize> {
    let weights: Vec<i64> = endpoints
        .iter()
        .map(|e| i64::from(e.weight.clamp(1, 100)))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, usize::MAX - *i))
        else {
            break;
        };
        current[best] -= total;
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::endpoint::Member;
    use prometheus::IntGauge;

    fn eps(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        let addrs: Vec<String> = (0..weights.len())
            .map(|i| format!("10.0.0.{i}:80"))
            .collect();
        let members = addrs
            .iter()
            .zip(weights)
            .map(|(addr, w)| Member {
                address: addr,
                authority: addr.parse().unwrap(),
                weight: *w,
                gauge: IntGauge::new("g", "g").unwrap(),
            })
            .collect();
        Endpoint::group(members)
    }

    #[test]
    fn round_robin_follows_weights_and_skips_excluded() {
        let e = eps(&[3, 1]);
        let b = Balancer::new(BalancePolicy::RoundRobin, &e);
        let h = HeaderMap::new();
        let picks: Vec<_> = (0..8)
            .map(|_| b.pick(&e, &h, "a", None, 0).unwrap())
            .collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 6);
        assert!((0..10).all(|_| b.pick(&e, &h, "a", Some(0), 0) == Some(1)));
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let e = eps(&[1, 1]);
        let _busy: Vec<_> = (0..5).map(|_| e[0].begin()).collect();
        let b = Balancer::new(BalancePolicy::LeastRequest, &e);
        let h = HeaderMap::new();
        let to_idle = (0..200)
            .filter(|_| b.pick(&e, &h, "a", None, 0) == Some(1))
            .count();
        // The two candidates are distinct, so with two endpoints the idle one always wins.
        assert_eq!(to_idle, 200);
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_only_the_lost_keys() {
        let e = eps(&[1, 1, 1, 1]);
        let b = Balancer::new(
            BalancePolicy::ConsistentHash {
                headers: vec!["x-agent".into()],
            },
            &e,
        );
        let mut before = Vec::new();
        for k in 0..200 {
            let mut h = HeaderMap::new();
            h.insert("x-agent", k.to_string().parse().unwrap());
            let first = b.pick(&e, &h, "a", None, 0).unwrap();
            assert_eq!(b.pick(&e, &h, "a", None, 0), Some(first));
            before.push((h, first));
        }
        let used: std::collections::HashSet<_> = before.iter().map(|(_, i)| *i).collect();
        assert_eq!(used.len(), 4, "keys spread over all endpoints");
        for (h, first) in &before {
            let after = b.pick(&e, h, "a", Some(2), 0).unwrap();
            if *first != 2 {
                assert_eq!(after, *first, "keys of surviving endpoints stay put");
            }
        }
    }

    #[test]
    fn unavailable_endpoints_are_never_picked() {
        let e = eps(&[1, 1]);
        e[0].set_healthy(false);
        for policy in [BalancePolicy::RoundRobin, BalancePolicy::LeastRequest] {
            let b = Balancer::new(policy, &e);
            assert!((0..50).all(|_| b.pick(&e, &HeaderMap::new(), "a", None, 0) == Some(1)));
            assert_eq!(b.pick(&e, &HeaderMap::new(), "a", Some(1), 0), None);
        }
    }
}
