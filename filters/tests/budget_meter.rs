//! Budgets are exact on both stores: a meter stops on exactly the message the budget
//! cannot pay for, concurrent meters never exceed the total, unused leases come back,
//! a spent budget refuses up front, and periods roll over on the (injected) clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::redis::{Server, prefix, shared};
use tollgate_filters::budget::{
    Budget, BudgetAccount, BudgetStore, InProcessStore, RedisBudgetStore, Verdict,
};
use tollgate_filters::limit::{RedisBackend, RedisConfig};
use tollgate_routing::BudgetPeriod;

/// Each test runs on both stores; the guard keeps the shared Redis alive.
fn stores(test: &str) -> (Vec<(&'static str, BudgetStore)>, Arc<Server>) {
    let redis = shared();
    let backend = RedisBackend::connect(&RedisConfig {
        url: redis.url(),
        prefix: prefix(test),
        timeout: Duration::from_secs(1),
    })
    .expect("backend");
    let stores = vec![
        (
            "in-process",
            BudgetStore::InProcess(Arc::new(InProcessStore::new())),
        ),
        ("redis", BudgetStore::Redis(RedisBudgetStore::new(backend))),
    ];
    (stores, redis)
}

fn account(limit: u64) -> BudgetAccount {
    BudgetAccount {
        app: "app1".into(),
        period: BudgetPeriod::Day,
        limit,
    }
}

#[tokio::test]
async fn a_meter_stops_after_exactly_the_budget() {
    let (stores, _redis) = stores("exact");
    for (name, store) in stores {
        for lease in [1, 4, 64] {
            let acct = BudgetAccount {
                app: format!("app-{lease}").into(),
                ..account(10)
            };
            let budget = Budget::new(store.clone()).with_lease(lease);
            let mut meter = budget.meter(acct.clone());
            for i in 0..10 {
                let v = meter.consume(1).await.unwrap();
                assert_eq!(v, Verdict::Continue, "{name} lease {lease} message {i}");
            }
            assert_eq!(
                meter.consume(1).await.unwrap(),
                Verdict::Exhausted,
                "{name}"
            );
            assert_eq!(
                meter.consume(1).await.unwrap(),
                Verdict::Exhausted,
                "sticky"
            );
            assert_eq!(meter.consumed(), 10);
            meter.finish().await.unwrap();
            assert_eq!(budget.remaining(&acct).await.unwrap(), 0, "{name}");
        }
    }
}

#[tokio::test]
async fn a_message_larger_than_what_is_left_is_not_forwarded() {
    let (stores, _redis) = stores("larger");
    for (name, store) in stores {
        let budget = Budget::new(store).with_lease(3);
        let acct = account(10);
        let mut meter = budget.meter(acct.clone());
        assert_eq!(meter.consume(4).await.unwrap(), Verdict::Continue);
        assert_eq!(meter.consume(4).await.unwrap(), Verdict::Continue);
        assert_eq!(
            meter.consume(3).await.unwrap(),
            Verdict::Exhausted,
            "{name}"
        );
        assert_eq!(meter.consumed(), 8);
        // The 2 units it could not use went back at once.
        assert_eq!(meter.held(), 0);
        assert_eq!(budget.remaining(&acct).await.unwrap(), 2, "{name}");
        let mut small = budget.meter(acct.clone());
        assert_eq!(small.consume(2).await.unwrap(), Verdict::Continue);
        assert_eq!(small.consume(1).await.unwrap(), Verdict::Exhausted);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_meters_never_exceed_the_total() {
    let (stores, _redis) = stores("concurrent");
    for (name, store) in stores {
        let budget = Budget::new(store).with_lease(16);
        let acct = account(1000);
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let mut meter = budget.meter(acct.clone());
                tokio::spawn(async move {
                    while meter.consume(1).await.unwrap() == Verdict::Continue {
                        tokio::task::yield_now().await;
                    }
                    meter.consumed()
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        assert_eq!(total, 1000, "{name}: every unit used once, none twice");
        assert_eq!(budget.remaining(&acct).await.unwrap(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_share_one_redis_budget() {
    let redis = shared();
    let p = prefix("two_proxies");
    let proxy = || {
        let backend = RedisBackend::connect(&RedisConfig {
            url: redis.url(),
            prefix: p.clone(),
            timeout: Duration::from_secs(1),
        })
        .expect("backend");
        Budget::new(BudgetStore::Redis(RedisBudgetStore::new(backend))).with_lease(7)
    };
    let acct = account(500);
    let tasks: Vec<_> = [proxy(), proxy()]
        .into_iter()
        .map(|b| {
            let mut meter = b.meter(acct.clone());
            tokio::spawn(async move {
                while meter.consume(1).await.unwrap() == Verdict::Continue {}
                meter.consumed()
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 500);
    assert_eq!(proxy().remaining(&acct).await.unwrap(), 0);
}

#[tokio::test]
async fn unused_leases_are_returned() {
    let (stores, _redis) = stores("returned");
    for (name, store) in stores {
        let budget = Budget::new(store).with_lease(64);
        let acct = account(100);
        let mut meter = budget.meter(acct.clone());
        assert_eq!(meter.consume(1).await.unwrap(), Verdict::Continue);
        assert_eq!(meter.held(), 63);
        assert_eq!(
            budget.remaining(&acct).await.unwrap(),
            36,
            "{name}: lease counted"
        );
        assert_eq!(meter.finish().await.unwrap(), 63);
        assert_eq!(budget.remaining(&acct).await.unwrap(), 99, "{name}");

        // Dropped without finish: returned too (Redis: by a spawned task).
        let mut meter = budget.meter(acct.clone());
        meter.consume(1).await.unwrap();
        drop(meter);
        let mut left = 0;
        for _ in 0..100 {
            left = budget.remaining(&acct).await.unwrap();
            if left == 98 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(left, 98, "{name}");
    }
}

#[tokio::test]
async fn spent_budget_refuses_up_front_and_grants_can_be_partial() {
    let (stores, _redis) = stores("upfront");
    for (name, store) in stores {
        let budget = Budget::new(store);
        let acct = account(5);
        assert_eq!(budget.remaining(&acct).await.unwrap(), 5);
        let g = budget.reserve(&acct, 3).await.unwrap();
        assert_eq!(g.units, 3);
        let g = budget.reserve(&acct, 3).await.unwrap();
        assert_eq!(g.units, 2, "{name}: partial grant");
        assert_eq!(
            budget.remaining(&acct).await.unwrap(),
            0,
            "refuse before upstream"
        );
        assert_eq!(budget.reserve(&acct, 1).await.unwrap().units, 0);
        let mut meter = budget.meter(acct.clone());
        assert_eq!(meter.consume(1).await.unwrap(), Verdict::Exhausted);
        budget.release(&acct, g).await.unwrap();
        assert_eq!(
            budget.remaining(&acct).await.unwrap(),
            2,
            "{name}: released"
        );
    }
}

/// The clock crosses midnight UTC: a fresh day's budget, and the old day's unused
/// lease goes back to the old day.
#[tokio::test]
async fn periods_roll_over_on_the_clock() {
    let (stores, _redis) = stores("rollover");
    // Today and tomorrow in real time, so Redis keeps the counters (EXPIREAT at the
    // period end would drop a past period's counter at once).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let midnight = (now / 86_400 + 1) * 86_400;
    for (name, store) in stores {
        let t = Arc::new(AtomicU64::new(midnight - 60));
        let clock = t.clone();
        let budget = Budget::new(store.clone())
            .with_lease(4)
            .with_clock(move || UNIX_EPOCH + Duration::from_secs(clock.load(Ordering::SeqCst)));
        let acct = account(10);
        let today = budget.period(&acct).key;
        let mut meter = budget.meter(acct.clone());
        for _ in 0..3 {
            assert_eq!(meter.consume(1).await.unwrap(), Verdict::Continue);
        }
        assert_eq!(meter.held(), 1);
        let mut spent = budget.meter(acct.clone());
        while spent.consume(1).await.unwrap() == Verdict::Continue {}
        assert_eq!(spent.consumed(), 6, "{name}: the first meter holds one");
        assert_eq!(budget.remaining(&acct).await.unwrap(), 0);

        t.store(midnight + 1, Ordering::SeqCst);
        let tomorrow = budget.period(&acct).key;
        assert_ne!(today, tomorrow);
        assert_eq!(
            budget.remaining(&acct).await.unwrap(),
            10,
            "{name}: new day"
        );
        assert_eq!(meter.consume(1).await.unwrap(), Verdict::Continue);
        assert_eq!(
            store.used("app1", &today).await.unwrap(),
            9,
            "{name}: lease back"
        );
        assert_eq!(store.used("app1", &tomorrow).await.unwrap(), 4);
        meter.finish().await.unwrap();
        assert_eq!(budget.remaining(&acct).await.unwrap(), 9);
    }
}

#[tokio::test]
async fn month_periods_use_calendar_months() {
    let store = BudgetStore::InProcess(Arc::new(InProcessStore::new()));
    let t = Arc::new(AtomicU64::new(1_796_083_199)); // 2026-11-30T23:59:59Z
    let clock = t.clone();
    let budget = Budget::new(store)
        .with_clock(move || UNIX_EPOCH + Duration::from_secs(clock.load(Ordering::SeqCst)));
    let acct = BudgetAccount {
        period: BudgetPeriod::Month,
        ..account(3)
    };
    assert_eq!(budget.period(&acct).key, "2026-11");
    assert_eq!(budget.reserve(&acct, 5).await.unwrap().units, 3);
    t.store(1_796_083_200, Ordering::SeqCst);
    assert_eq!(budget.period(&acct).key, "2026-12");
    assert_eq!(budget.remaining(&acct).await.unwrap(), 3);
}

/// Redis down: the meter reports the error and keeps its state; Redis back: it goes on.
#[tokio::test]
async fn a_redis_outage_is_an_error_not_a_grant() {
    let mut redis = support::redis::Private::start();
    let backend = RedisBackend::connect(&RedisConfig {
        url: redis.url(),
        prefix: "tollgate".into(),
        timeout: Duration::from_millis(200),
    })
    .expect("backend");
    let budget = Budget::new(BudgetStore::Redis(RedisBudgetStore::new(backend))).with_lease(2);
    let acct = account(10);
    let mut meter = budget.meter(acct.clone());
    assert_eq!(meter.consume(2).await.unwrap(), Verdict::Continue);
    redis.stop();
    assert!(meter.consume(1).await.is_err());
    assert!(budget.remaining(&acct).await.is_err());
    assert_eq!((meter.consumed(), meter.held()), (2, 0));
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let verdict = loop {
        match meter.consume(1).await {
            Ok(v) => break v,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("redis did not come back: {e}"),
        }
    };
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(meter.consumed(), 3);
}
