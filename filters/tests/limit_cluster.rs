//! Cluster-wide limits on a real Redis: three limiters (three proxies) sharing one
//! limit, atomic multi-window charging, timeouts, and Redis stopped mid-test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};
use support::redis::{Private, prefix, shared};
use tollgate_filters::limit::{
    AppLimiter, BackendError, ClusterLimiter, RedisBackend, RedisConfig, RequestKeys, Source,
    Window,
};
use tollgate_routing::{LimitsSpec, OnBackendError, RateKey, RateRule};

fn backend(url: &str, prefix: &str, timeout_ms: u64) -> RedisBackend {
    RedisBackend::connect(&RedisConfig {
        url: url.into(),
        prefix: prefix.into(),
        timeout: Duration::from_millis(timeout_ms),
    })
    .expect("backend")
}

fn per_minute(key: RateKey, n: u32) -> RateRule {
    RateRule {
        key,
        per_second: None,
        per_minute: Some(n),
        per_hour: None,
        burst: None,
    }
}

/// Three proxies, each with its own connection, admit one burst between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_limiters_share_one_burst() {
    let redis = shared();
    let p = prefix("three_burst");
    let windows = Window::compile(&[per_minute(RateKey::App, 30)]);
    let proxies: Vec<ClusterLimiter> = (0..3)
        .map(|_| ClusterLimiter::new(backend(&redis.url(), &p, 1000)))
        .collect();
    let tasks: Vec<_> = proxies
        .into_iter()
        .map(|l| {
            let windows = windows.clone();
            tokio::spawn(async move {
                let mut allowed = 0u32;
                for _ in 0..40 {
                    let d = l.check("app1", &windows, &RequestKeys::app("app1")).await;
                    allowed += u32::from(d.expect("redis answers").allowed);
                }
                allowed
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    // The bucket holds 30 and earns one back every 2 s; the test takes well under 2 s.
    assert!((30..=31).contains(&total), "admitted {total}, limit 30");
}

/// Sustained load from three proxies: admitted = burst + rate × time, within 5 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_limiters_hold_a_sustained_rate() {
    let redis = shared();
    let p = prefix("three_rate");
    let rule = RateRule {
        key: RateKey::App,
        per_second: Some(50),
        per_minute: None,
        per_hour: None,
        burst: Some(10),
    };
    let windows = Window::compile(&[rule]);
    let run_for = Duration::from_secs(2);
    let start = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let l = ClusterLimiter::new(backend(&redis.url(), &p, 1000));
            let windows = windows.clone();
            tokio::spawn(async move {
                let (mut allowed, mut sent) = (0u64, 0u64);
                while start.elapsed() < run_for && sent < 50_000 {
                    sent += 1;
                    let d = l.check("app1", &windows, &RequestKeys::app("app1")).await;
                    allowed += u64::from(d.expect("redis answers").allowed);
                }
                (allowed, sent)
            })
        })
        .collect();
    let (mut allowed, mut sent) = (0, 0);
    for t in tasks {
        let (a, s) = t.await.unwrap();
        allowed += a;
        sent += s;
    }
    let secs = start.elapsed().as_secs_f64();
    let expected = 10.0 + 50.0 * secs;
    let error = (allowed as f64 - expected).abs() / expected;
    eprintln!("sustained: admitted {allowed} of {sent} in {secs:.2} s, expected {expected:.0}");
    assert!(
        sent > allowed * 2,
        "the limit must actually bind (sent {sent})"
    );
    assert!(
        error <= 0.05,
        "admitted {allowed}, expected {expected:.0} over {secs:.2} s ({:.1} %)",
        error * 100.0
    );
}

/// A request refused by one window is charged in none (all or nothing).
#[tokio::test]
async fn refused_requests_are_not_charged() {
    let redis = shared();
    let l = ClusterLimiter::new(backend(&redis.url(), &prefix("atomic"), 1000));
    let windows = Window::compile(&[
        per_minute(RateKey::ApiKey, 4),
        per_minute(RateKey::ClientIp, 2),
    ]);
    let check = |ip: [u8; 4]| {
        let (l, windows) = (l.clone(), windows.clone());
        async move {
            let keys = RequestKeys {
                app: "app1",
                api_key: Some("k1"),
                client_ip: Some(ip.into()),
                ..Default::default()
            };
            l.check("app1", &windows, &keys).await.expect("redis")
        }
    };
    assert!(check([10, 0, 0, 1]).await.allowed);
    let d = check([10, 0, 0, 1]).await;
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
    assert_eq!(d.policy.as_deref(), Some("client_ip.2/60s"));
    let refused = check([10, 0, 0, 1]).await;
    assert!(!refused.allowed);
    assert_eq!(refused.policy.as_deref(), Some("client_ip.2/60s"));
    let wait = refused.retry_after.expect("retry after");
    assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
    // The key has spent 2 of 4: the refusal above did not count.
    assert!(check([10, 0, 0, 2]).await.allowed);
    assert!(check([10, 0, 0, 2]).await.allowed);
    let d = check([10, 0, 0, 3]).await;
    assert!(!d.allowed);
    assert_eq!(d.policy.as_deref(), Some("api_key.4/60s"));
}

#[tokio::test]
async fn remaining_counts_down_across_proxies() {
    let redis = shared();
    let p = prefix("countdown");
    let windows = Window::compile(&[per_minute(RateKey::Subject, 5)]);
    let a = ClusterLimiter::new(backend(&redis.url(), &p, 1000));
    let b = ClusterLimiter::new(backend(&redis.url(), &p, 1000));
    let keys = RequestKeys {
        app: "app1",
        subject: Some("user-42"),
        ..Default::default()
    };
    for (i, l) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let d = l.check("app1", &windows, &keys).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining as usize, 4 - i);
        assert_eq!(d.limit, 5);
    }
    assert!(!b.check("app1", &windows, &keys).await.unwrap().allowed);
    let anonymous = RequestKeys::app("app1");
    let d = b.check("app1", &windows, &anonymous).await.unwrap();
    assert!(
        d.allowed && d.policy.is_none(),
        "no subject, rule does not apply"
    );
}

/// A frozen Redis (accepts, never answers) costs a check its timeout, no more.
#[tokio::test]
async fn every_call_is_bounded_by_the_timeout() {
    let redis = Private::start();
    let l = ClusterLimiter::new(backend(&redis.url(), "tollgate", 150));
    let windows = Window::compile(&[per_minute(RateKey::App, 100)]);
    let keys = RequestKeys::app("app1");
    assert!(l.check("app1", &windows, &keys).await.is_ok());
    redis.freeze();
    let t = Instant::now();
    let r = l.check("app1", &windows, &keys).await;
    let took = t.elapsed();
    assert_eq!(r, Err(BackendError::Timeout(Duration::from_millis(150))));
    assert!(took < Duration::from_millis(400), "took {took:?}");
    redis.thaw();
    wait_for_cluster(|| l.check("app1", &windows, &keys)).await;
}

/// Redis stops mid-test: each app's policy applies; it comes back: cluster limiting
/// resumes on the same limiters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_then_restarted() {
    let mut redis = Private::start();
    let cluster = ClusterLimiter::new(backend(&redis.url(), "tollgate", 200));
    let limiter = |policy: &str| {
        let spec = LimitsSpec::from_json(&serde_json::json!({
            "rate": [{"key": "app", "per_minute": 3}],
            "scope": "cluster",
            "on_backend_error": policy,
        }))
        .unwrap();
        AppLimiter::new(&format!("app-{policy}"), &spec, Some(cluster.clone()))
    };
    let (local, deny, allow) = (limiter("local"), limiter("deny"), limiter("allow"));
    let keys = RequestKeys::app("a");
    for l in [&local, &deny, &allow] {
        let c = l.check(&keys).await;
        assert_eq!(c.source, Source::Cluster);
        assert!(c.decision.allowed && c.decision.remaining == 2);
    }

    redis.stop();
    for allowed in [true, true, true, false] {
        let t = Instant::now();
        let c = local.check(&keys).await;
        assert!(t.elapsed() < Duration::from_millis(500));
        assert_eq!(c.source, Source::Fallback(OnBackendError::Local));
        assert!(c.error.is_some());
        assert_eq!(c.decision.allowed, allowed, "local limiter, 3 per minute");
    }
    let c = deny.check(&keys).await;
    assert_eq!(c.source, Source::Fallback(OnBackendError::Deny));
    assert!(!c.decision.allowed);
    assert_eq!(c.decision.retry_after, Some(Duration::from_secs(1)));
    let c = allow.check(&keys).await;
    assert_eq!(c.source, Source::Fallback(OnBackendError::Allow));
    assert!(c.decision.allowed);

    redis.restart();
    // Same limiters, same connection manager: it reconnects on its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = deny.check(&keys).await;
        if c.source == Source::Cluster {
            assert!(
                c.decision.allowed,
                "restarted Redis starts with empty buckets"
            );
            break;
        }
        assert!(Instant::now() < deadline, "cluster limiting did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = deny.check(&keys).await;
    assert_eq!((c.source, c.decision.remaining), (Source::Cluster, 1));
    deny.check(&keys).await;
    let c = deny.check(&keys).await;
    assert_eq!(c.source, Source::Cluster);
    assert!(!c.decision.allowed, "cluster limit enforced again");
}

#[tokio::test]
async fn cluster_scope_without_redis_applies_the_policy() {
    let spec = LimitsSpec::from_json(&serde_json::json!({
        "rate": [{"key": "app", "per_second": 1}],
        "scope": "cluster",
        "on_backend_error": "deny",
    }))
    .unwrap();
    let c = AppLimiter::new("a", &spec, None)
        .check(&RequestKeys::app("a"))
        .await;
    assert_eq!(c.source, Source::Fallback(OnBackendError::Deny));
    assert!(matches!(c.error, Some(BackendError::Config(_))));
}

async fn wait_for_cluster<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tollgate_filters::limit::Decision, BackendError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while check().await.is_err() {
        assert!(Instant::now() < deadline, "redis did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
