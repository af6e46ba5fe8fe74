//! The in-process budget store survives restarts: persisted atomically, reloaded,
//! ended periods dropped, a damaged file refused rather than silently reset.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;
use tollgate_filters::budget::{
    Budget, BudgetAccount, BudgetError, BudgetStore, InProcessStore, Verdict, spawn_persist,
};
use tollgate_routing::BudgetPeriod;

fn account(app: &str, limit: u64) -> BudgetAccount {
    BudgetAccount {
        app: app.into(),
        period: BudgetPeriod::Month,
        limit,
    }
}

#[tokio::test]
async fn counters_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budgets.json");
    let (a, b) = (account("a", 10), account("b", 100));
    {
        let store = Arc::new(InProcessStore::open(&path).await.unwrap());
        let budget = Budget::new(BudgetStore::InProcess(store.clone())).with_lease(2);
        let mut meter = budget.meter(a.clone());
        for _ in 0..7 {
            assert_eq!(meter.consume(1).await.unwrap(), Verdict::Continue);
        }
        meter.finish().await.unwrap();
        assert_eq!(budget.reserve(&b, 40).await.unwrap().units, 40);
        store.persist().await.unwrap();
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["budgets.json"], "no temporary file left behind");

    let store = Arc::new(InProcessStore::open(&path).await.unwrap());
    assert_eq!(store.path(), Some(path.as_path()));
    let budget = Budget::new(BudgetStore::InProcess(store));
    assert_eq!(budget.remaining(&a).await.unwrap(), 3);
    assert_eq!(budget.remaining(&b).await.unwrap(), 60);
    let mut meter = budget.meter(a.clone());
    for _ in 0..3 {
        assert_eq!(meter.consume(1).await.unwrap(), Verdict::Continue);
    }
    assert_eq!(meter.consume(1).await.unwrap(), Verdict::Exhausted);
}

#[tokio::test]
async fn the_background_task_persists_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.json");
    let store = Arc::new(InProcessStore::open(&path).await.unwrap());
    let task = spawn_persist(&store, Duration::from_millis(20));
    let budget = Budget::new(BudgetStore::InProcess(store.clone()));
    let acct = account("a", 10);
    assert_eq!(budget.reserve(&acct, 4).await.unwrap().units, 4);
    let mut seen = 10;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let reloaded = InProcessStore::open(&path).await.unwrap();
        seen = Budget::new(BudgetStore::InProcess(Arc::new(reloaded)))
            .remaining(&acct)
            .await
            .unwrap();
        if seen == 6 {
            break;
        }
    }
    assert_eq!(seen, 6);
    drop(budget);
    drop(store);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the task ends once the store is gone")
        .unwrap();
}

#[tokio::test]
async fn ended_periods_are_dropped_and_damage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.json");
    let file = r#"{"version":1,"counters":[
        {"app":"old","period":"2020-01","used":5,"ends_at":1580515200},
        {"app":"new","period":"2999-01","used":5,"ends_at":32503680000}]}"#;
    std::fs::write(&path, file).unwrap();
    let store = Arc::new(InProcessStore::open(&path).await.unwrap());
    let bs = BudgetStore::InProcess(store.clone());
    assert_eq!(bs.used("old", "2020-01").await.unwrap(), 0);
    assert_eq!(bs.used("new", "2999-01").await.unwrap(), 5);
    store.persist().await.unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(!written.contains("old") && written.contains("2999-01"));

    std::fs::write(&path, b"{\"version\":1,\"counters\":[").unwrap();
    let err = InProcessStore::open(&path).await.unwrap_err();
    assert!(matches!(err, BudgetError::Persist { .. }), "{err}");
    std::fs::write(&path, br#"{"version":2,"counters":[]}"#).unwrap();
    assert!(InProcessStore::open(&path).await.is_err());
}

#[tokio::test]
async fn memory_only_store_persists_nothing() {
    let store = InProcessStore::new();
    assert!(store.path().is_none());
    store.persist().await.unwrap();
}
