//! Concurrent commands: exactly one wins per aggregate version, within one service
//! and across two services on the same database; no event is duplicated or lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use tollgate_control::commands::{CommandError, Ctx};
use tollgate_control::store::EventStore;
use tollgate_routing::EndpointSpec;

#[tokio::test]
async fn concurrent_creates_of_one_app_have_one_winner() {
    let svc = start().await;
    let c = svc.http();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.post("/api/v1/apps", json!({ "id": "race" })).await.status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        23,
        "{statuses:?}"
    );
    let events = svc
        .running
        .commands
        .store()
        .read_aggregate("app", "race")
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    svc.stop().await;
}

#[tokio::test]
async fn if_match_lets_one_writer_win_per_version() {
    let svc = start().await;
    let c = svc.http();
    expect(c.post("/api/v1/apps", json!({ "id": "acme" })).await, 201);
    for round in 0..3 {
        let version = expect(c.get("/api/v1/apps/acme").await, 200)["version"]
            .as_i64()
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let c = c.clone();
            let v = version.to_string();
            tasks.push(tokio::spawn(async move {
                let body = json!({ "connect_timeout_ms": 1000 + round * 100 + i });
                let a = c
                    .send(
                        "PUT",
                        "/api/v1/apps/acme/upstreams/default",
                        Some(&body),
                        &[("if-match", &v)],
                    )
                    .await;
                (a.status, a.body)
            }));
        }
        let mut won = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                200 => won += 1,
                409 => assert_eq!(body["error"]["code"], "version_conflict"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(won, 1, "round {round}");
        let after = expect(c.get("/api/v1/apps/acme").await, 200)["version"]
            .as_i64()
            .unwrap();
        assert_eq!(after, version + 1);
    }
    svc.stop().await;
}

/// Two services (two processes' worth of state: separate locks, projections and
/// connections) on one SQLite file race on the same aggregate.
#[tokio::test]
async fn two_services_on_one_database_never_duplicate_or_lose_events() {
    let tmp = tempfile::tempdir().unwrap();
    let a = start_in(tmp.path()).await;
    let b = start_in(tmp.path()).await;
    let ca = Client {
        addr: a.http_addr,
        token: Some(ADMIN.into()),
    };
    expect(
        ca.post("/api/v1/apps", json!({ "id": "shared" })).await,
        201,
    );
    b.projection().sync().await.unwrap();

    let mut accepted: BTreeSet<String> = BTreeSet::new();
    for round in 0..15 {
        let version = a.commands.store().version("app", "shared").await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let commands = if i % 2 == 0 {
                a.commands.clone()
            } else {
                b.commands.clone()
            };
            let address = format!("10.{round}.0.{i}:80");
            tasks.push(tokio::spawn(async move {
                let ctx = Ctx {
                    actor: format!("writer-{i}"),
                    expected_version: Some(version),
                };
                let endpoint = EndpointSpec {
                    address: address.clone(),
                    weight: 1,
                };
                let r = commands
                    .add_instance(&ctx, "shared", "default", endpoint)
                    .await;
                (address, r)
            }));
        }
        let mut winners = 0;
        for t in tasks {
            let (address, r) = t.await.unwrap();
            match r {
                Ok(w) => {
                    assert!(w.changed);
                    assert_eq!(w.version, version + 1);
                    accepted.insert(address);
                    winners += 1;
                }
                Err(CommandError::VersionConflict { .. }) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }

    // The aggregate's events are contiguous and each accepted command is there once.
    let events = a
        .commands
        .store()
        .read_aggregate("app", "shared")
        .await
        .unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.aggregate_seq).collect();
    assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
    let logged: Vec<String> = events
        .iter()
        .filter(|e| e.event_type == "instance_added")
        .map(|e| {
            e.payload["endpoint"]["address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(logged.len(), accepted.len());
    assert_eq!(logged.iter().cloned().collect::<BTreeSet<_>>(), accepted);

    // Both projections agree with the log.
    a.projection().sync().await.unwrap();
    b.projection().sync().await.unwrap();
    let va = a.projection().view();
    let vb = b.projection().view();
    assert_eq!(va.config, vb.config);
    let served: BTreeSet<String> = va.config.apps["shared"]
        .upstreams
        .get("default")
        .unwrap()
        .endpoints
        .iter()
        .map(|e| e.address.clone())
        .collect();
    assert_eq!(served, accepted);

    for r in [a, b] {
        r.shutdown();
        r.wait().await.unwrap();
    }
}

/// Without `If-Match`, concurrent commands on different aggregates all apply, each
/// exactly once.
#[tokio::test]
async fn concurrent_commands_on_many_aggregates_all_land_once() {
    let svc = start().await;
    let c = svc.http();
    expect(c.post("/api/v1/apps", json!({ "id": "many" })).await, 201);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let a = c
                .post(
                    "/api/v1/routes",
                    json!({ "id": format!("route-{i}"), "hostname": format!("h{i}.example"), "app": "many" }),
                )
                .await;
            assert_eq!(a.status, 201, "{}", a.body);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let events = svc
        .running
        .commands
        .store()
        .read_after(0, 1000)
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "route_created")
            .count(),
        40
    );
    assert_eq!(svc.running.projection().view().config.routes.len(), 40);
    svc.stop().await;
}

/// Concurrent single commands are committed in groups: each answer still names its
/// own event (id, aggregate, version, actor), whichever group carried it, and a
/// command decided on events of its group not yet committed sees them.
#[tokio::test]
async fn grouped_commands_each_get_their_own_events() {
    use tollgate_control::commands::CreateApp;
    let svc = start().await;
    let commands = svc.running.commands.clone();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let commands = commands.clone();
        tasks.push(tokio::spawn(async move {
            let ctx = Ctx::actor(if i % 3 == 0 { "bob" } else { "alice" });
            let app = format!("g{i}");
            let created = commands
                .create_app(
                    &ctx,
                    CreateApp {
                        id: app.clone(),
                        auth: None,
                    },
                )
                .await
                .unwrap();
            let host = format!("h{i}.example");
            let bound = commands.bind_hostname(&ctx, &host, &app).await.unwrap();
            // The same bind again: decided on the first, which is then committed.
            let again = commands.bind_hostname(&ctx, &host, &app).await.unwrap();
            assert!(!again.changed && again.event_id >= bound.event_id);
            [
                (
                    "app",
                    app,
                    ctx.actor.clone(),
                    created.event_id,
                    created.version,
                ),
                ("hostname", host, ctx.actor, bound.event_id, bound.version),
            ]
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    // Two apps race for one name: one wins, the other is refused, nothing is lost.
    let (a, b) = (commands.clone(), commands.clone());
    let first = tokio::spawn(async move {
        a.bind_hostname(&Ctx::actor("alice"), "contested.example", "g1")
            .await
    });
    let second = tokio::spawn(async move {
        b.bind_hostname(&Ctx::actor("alice"), "contested.example", "g2")
            .await
    });
    let results = [first.await.unwrap(), second.await.unwrap()];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(CommandError::Conflict(_)))),
        "{results:?}"
    );

    let events = commands.store().read_after(0, 1000).await.unwrap();
    assert_eq!(events.len(), 61, "30 apps, 30 binds, one contested bind");
    for (kind, id, actor, event_id, version) in answers {
        let e = events
            .iter()
            .find(|e| e.event_id == event_id)
            .unwrap_or_else(|| panic!("{kind} {id}: no event {event_id}"));
        assert_eq!(
            (
                e.aggregate_type.as_str(),
                e.aggregate_id.as_str(),
                e.aggregate_seq
            ),
            (kind, id.as_str(), version),
            "the answer for {kind} {id} names another event"
        );
        assert_eq!(e.actor_id, actor);
    }
    svc.stop().await;
}

/// Actors take turns: a command of one actor waits for another actor's staged
/// commands to commit, and every command of every round lands.
#[tokio::test]
async fn commands_of_different_actors_each_land() {
    use tollgate_control::commands::CreateApp;
    let svc = start().await;
    let commands = svc.running.commands.clone();
    for round in 0..100 {
        let mut tasks = Vec::new();
        for actor in ["carol", "dave", "erin"] {
            let commands = commands.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("{actor}-{round}");
                let w = commands
                    .create_app(&Ctx::actor(actor), CreateApp { id, auth: None })
                    .await
                    .unwrap();
                assert!(w.changed);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let events = commands.store().read_after(0, 1000).await.unwrap();
    assert_eq!(events.len(), 300);
    for e in &events {
        assert!(e.aggregate_id.starts_with(&e.actor_id), "{e:?}");
    }
    svc.stop().await;
}
