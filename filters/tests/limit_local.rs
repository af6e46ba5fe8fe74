//! Local GCRA: bursts, refusals with exact waits (fake clock), several windows,
//! rendered headers, key selection and housekeeping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use governor::clock::FakeRelativeClock;
use http::HeaderMap;
use std::time::Duration;
use tollgate_filters::limit::{
    AppLimiter, Decision, LocalLimiter, RequestKeys, Source, Window, render_headers,
};
use tollgate_routing::{LimitsSpec, RateKey, RateRule};

fn rule(
    key: RateKey,
    per_second: Option<u32>,
    per_minute: Option<u32>,
    burst: Option<u32>,
) -> RateRule {
    RateRule {
        key,
        per_second,
        per_minute,
        per_hour: None,
        burst,
    }
}

fn limiter(rules: &[RateRule]) -> (LocalLimiter<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (
        LocalLimiter::with_clock(Window::compile(rules), clock.clone()),
        clock,
    )
}

#[test]
fn burst_then_refusal_with_exact_retry_after() {
    let (l, clock) = limiter(&[rule(RateKey::App, Some(10), None, Some(20))]);
    let keys = RequestKeys::app("a");
    for i in 0..20u32 {
        let d = l.check(&keys);
        assert!(d.allowed, "request {i}");
        assert_eq!(d.remaining, 19 - i);
        assert_eq!(d.limit, 20);
    }
    let d = l.check(&keys);
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
    assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
    // A full bucket again after the wait plus 19 more intervals.
    assert_eq!(d.reset, Duration::from_millis(100 + 19 * 100));

    clock.advance(Duration::from_millis(99));
    assert!(!l.check(&keys).allowed, "1 ms early");
    clock.advance(Duration::from_millis(1));
    assert!(l.check(&keys).allowed, "one request earned back");
    assert!(!l.check(&keys).allowed);
    // Other keys have their own buckets.
    assert!(l.check(&RequestKeys::app("b")).allowed);
    assert!(l.check_key("someone").allowed);
}

#[test]
fn several_windows_on_one_key() {
    let rules = [
        rule(RateKey::ApiKey, None, Some(8), None),
        rule(RateKey::ApiKey, Some(5), None, None),
    ];
    let (l, clock) = limiter(&rules);
    let ids: Vec<&str> = l.windows().map(|w| &*w.id).collect();
    assert_eq!(ids, ["api_key.5/1s", "api_key.8/60s"], "shortest first");
    let keys = RequestKeys {
        app: "a",
        api_key: Some("key1"),
        ..Default::default()
    };
    for _ in 0..5 {
        assert!(l.check(&keys).allowed);
    }
    let d = l.check(&keys);
    assert!(!d.allowed);
    assert_eq!(d.policy.as_deref(), Some("api_key.5/1s"));
    assert_eq!(d.retry_after, Some(Duration::from_millis(200)));

    clock.advance(Duration::from_secs(1));
    for _ in 0..3 {
        let d = l.check(&keys);
        assert!(d.allowed);
        assert_eq!(
            d.policy.as_deref(),
            Some("api_key.8/60s"),
            "fewest left binds"
        );
    }
    // The minute window is spent: 8 taken, one earned back every 7.5 s since t=0.
    let d = l.check(&keys);
    assert!(!d.allowed);
    assert_eq!(d.policy.as_deref(), Some("api_key.8/60s"));
    assert_eq!(d.retry_after, Some(Duration::from_millis(6500)));
    assert_eq!(d.window, Duration::from_secs(60));

    let other = RequestKeys {
        api_key: Some("key2"),
        ..keys
    };
    assert!(l.check(&other).allowed);
}

#[test]
fn headers_follow_the_ratelimit_draft() {
    let (l, _clock) = limiter(&[rule(RateKey::App, Some(10), None, Some(20))]);
    let keys = RequestKeys::app("a");
    let mut h = HeaderMap::new();
    render_headers(&l.check(&keys), &mut h);
    assert_eq!(h["ratelimit-policy"], r#""app.10/1s";q=20;w=2"#);
    assert_eq!(h["ratelimit"], r#""app.10/1s";r=19;t=1"#);
    assert!(h.get("retry-after").is_none());

    let mut last = l.check(&keys);
    while last.allowed {
        last = l.check(&keys);
    }
    let mut h = HeaderMap::new();
    render_headers(&last, &mut h);
    assert_eq!(h["ratelimit"], r#""app.10/1s";r=0;t=2"#);
    assert_eq!(h["retry-after"], "1");

    let mut h = HeaderMap::new();
    render_headers(&Decision::unlimited(), &mut h);
    assert!(h.is_empty());
    render_headers(&Decision::refused(Duration::from_millis(1500)), &mut h);
    assert_eq!(h.len(), 1);
    assert_eq!(h["retry-after"], "2");
}

#[test]
fn windows_apply_only_when_the_request_has_their_key() {
    let rules = [
        rule(RateKey::Header("x-user".into()), Some(1), None, None),
        rule(RateKey::ClientIp, Some(2), None, None),
    ];
    let (l, _clock) = limiter(&rules);
    let mut h = HeaderMap::new();
    h.insert("x-user", "u1".parse().unwrap());
    let anonymous = RequestKeys::app("a");
    for _ in 0..10 {
        let d = l.check(&anonymous);
        assert!(d.allowed && d.policy.is_none());
    }
    let with_header = RequestKeys {
        headers: Some(&h),
        client_ip: Some("192.0.2.7".parse().unwrap()),
        ..anonymous
    };
    assert!(l.check(&with_header).allowed);
    let d = l.check(&with_header);
    assert!(!d.allowed);
    assert_eq!(d.policy.as_deref(), Some("header:x-user.1/1s"));
}

#[test]
fn idle_keys_are_forgotten() {
    let (l, clock) = limiter(&[rule(RateKey::ClientIp, None, Some(60), None)]);
    for i in 0..100u8 {
        let keys = RequestKeys {
            client_ip: Some([10, 0, 0, i].into()),
            ..RequestKeys::app("a")
        };
        assert!(l.check(&keys).allowed);
    }
    assert_eq!(l.len(), 100);
    l.retain_recent();
    assert_eq!(l.len(), 100, "buckets still refilling are kept");
    clock.advance(Duration::from_secs(3));
    l.retain_recent();
    assert!(l.is_empty(), "full buckets are dropped");
}

#[tokio::test]
async fn app_limiter_with_local_scope_answers_locally() {
    let spec = LimitsSpec::from_json(&serde_json::json!({
        "rate": [{"key": "app", "per_minute": 2}],
        "scope": "local"
    }))
    .unwrap();
    let l = AppLimiter::new("a", &spec, None);
    let keys = RequestKeys::app("a");
    for allowed in [true, true, false] {
        let c = l.check(&keys).await;
        assert_eq!(c.source, Source::Local);
        assert_eq!(c.decision.allowed, allowed);
        assert!(c.error.is_none());
    }
}

#[tokio::test]
async fn housekeeping_runs_in_the_background_until_the_limiter_is_dropped() {
    let clock = FakeRelativeClock::default();
    let rules = [rule(RateKey::App, Some(1), None, None)];
    let l = std::sync::Arc::new(LocalLimiter::with_clock(
        Window::compile(&rules),
        clock.clone(),
    ));
    assert!(l.check(&RequestKeys::app("a")).allowed);
    let task = tollgate_filters::limit::spawn_housekeeping(&l, Duration::from_millis(10));
    clock.advance(Duration::from_secs(3));
    for _ in 0..100 {
        if l.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(l.is_empty());
    drop(l);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the task ends with the limiter")
        .unwrap();
}
