//! Restoring the control service's event log from a backup (deploy/README.md, "Restoring
//! the event log"), end to end on SQLite: the real service, one proxy following it over
//! gRPC and one polling its HTTP API, neither restarted.
//!
//! After the restore the log is a prefix of the one the proxies followed, and new
//! events reuse the ids of the lost ones. A proxy resumes only after an event the log
//! still holds (by id and fingerprint); its last one was lost, so it is told the log
//! diverged and takes a fresh snapshot: it drops what the lost events did and serves
//! what the new ones do. Waits are bounded polls; nothing depends on timing.

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tollgate_tests::auth::get;
use tollgate_tests::config::Config;
use tollgate_tests::control::{ApiClient, ControlProcess, PROXY_TOKEN};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::upstream::Upstream;
use tollgate_tests::wait::{config_view, settled_at, until};

/// Generous bound for the proxies to catch up on a loaded 2-core machine.
const CATCH_UP: Duration = Duration::from_secs(60);
const RESYNCS: &str = "tollgate_control_resyncs_total";

/// App `id` with `upstream` as its instance and `<id>.test` bound to it; with a route
/// `/api` → `/` when `route`. Returns the last event id.
async fn create_app(api: &ApiClient, id: &str, upstream: &Upstream, route: bool) -> i64 {
    api.write("POST", "/api/v1/apps", Some(&json!({"id": id})))
        .await;
    api.write(
        "POST",
        &format!("/api/v1/apps/{id}/upstreams/default/instances"),
        Some(&json!({"address": upstream.addr.to_string()})),
    )
    .await;
    let mut last = api
        .write(
            "PUT",
            &format!("/api/v1/hostnames/{id}.test"),
            Some(&json!({"app": id})),
        )
        .await;
    if route {
        last = api
            .write(
                "POST",
                "/api/v1/routes",
                Some(
                    &json!({"id": format!("{id}-api"), "hostname": format!("{id}.test"),
                             "path_prefix": "/api", "rewrite_prefix": "/", "app": id}),
                ),
            )
            .await;
    }
    last
}

/// A proxy with a plain listener `http` following `cp` over gRPC (polling as the
/// fallback), or only by polling.
fn start_proxy(cp: &ControlProcess, node: &str, state_dir: &Path, grpc: bool) -> ProxyProcess {
    let table = if grpc {
        cp.proxy_table(node, state_dir)
    } else {
        format!(
            "[control]\nhttp_url = \"http://{}\"\ntoken = \"{PROXY_TOKEN}\"\nnode_id = \"{node}\"\n\
             state_dir = \"{}\"\npoll_interval_ms = 100\nusage_flush_interval_ms = 200\n",
            cp.http,
            state_dir.display()
        )
    };
    let config = Config::new().listener("http").raw(&table).build();
    ProxyProcess::start(&config, &[]).expect("proxy starts")
}

/// The status `host` answers on the proxy, and the upstream that answered (if any).
async fn answer(proxy: &ProxyProcess, host: &str, path: &str) -> (u16, Option<String>) {
    let r = get(proxy.addr("http"), false, host, path, &[]).await;
    let upstream = serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v["upstream"].as_str().map(str::to_string));
    (r.status, upstream)
}

/// Waits until the proxy serves exactly `served` (each `<app>.test` from its own
/// upstream) and answers 404 for every host in `gone`.
async fn wait_serving(proxy: &ProxyProcess, what: &str, served: &[&str], gone: &[&str]) {
    until(what, CATCH_UP, || async {
        for app in served {
            let host = format!("{app}.test");
            if answer(proxy, &host, "/").await != (200, Some(app.to_string())) {
                return None;
            }
        }
        for app in gone {
            if answer(proxy, &format!("{app}.test"), "/").await.0 != 404 {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// The SQLite files of the log in `dir` that a copy must take: the database and its
/// write-ahead log, if any (the shared-memory index is rebuilt on open).
const DB_FILES: [&str; 2] = ["control.db", "control.db-wal"];

fn copy_db(from: &Path, to: &Path) {
    for name in DB_FILES.iter().chain(&["control.db-shm"]) {
        let _ = std::fs::remove_file(to.join(name));
    }
    for name in DB_FILES {
        let src = from.join(name);
        if src.exists() {
            std::fs::copy(&src, to.join(name)).expect("copy the log");
        }
    }
}

#[tokio::test]
async fn proxies_follow_a_restored_log_without_a_restart() {
    let mut cp = ControlProcess::start()
        .await
        .expect("control service starts");
    let api = cp.client();
    let upstreams = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
        Upstream::start("d").await,
        Upstream::start("e2").await,
    ];
    let [up_a, up_b, up_c, up_d, up_e2] = &upstreams;
    let (grpc_state, poll_state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let grpc = start_proxy(&cp, "edge-grpc", grpc_state.path(), true);
    let poll = start_proxy(&cp, "edge-poll", poll_state.path(), false);
    let proxies = [("grpc", &grpc), ("polling", &poll)];

    // App A and a route, served by both.
    let a = create_app(&api, "a", up_a, true).await;
    for (_, p) in proxies {
        settled_at(p, a, CATCH_UP).await;
        wait_serving(p, "app a", &["a"], &[]).await;
        assert_eq!(answer(p, "a.test", "/api/x").await, (200, Some("a".into())));
    }

    // The backup: the log up to E = `a`.
    cp.stop().await.expect("control service stops");
    let backup = tempfile::tempdir().unwrap();
    copy_db(cp.dir.path(), backup.path());
    cp.restart().await.expect("control service restarts");

    // Apps B and C, after the backup: the proxies' cursors move past E.
    create_app(&api, "b", up_b, false).await;
    let lost = create_app(&api, "c", up_c, false).await;
    for (_, p) in proxies {
        settled_at(p, lost, CATCH_UP).await;
        wait_serving(p, "apps b and c", &["a", "b", "c"], &[]).await;
        assert_eq!(p.metric(RESYNCS, &[]).await.unwrap(), 0.0);
    }

    // The restore. Apps D and E2 are written while the proxies cannot reach the
    // service (a second service on the same log, on other ports), so that when they
    // reconnect the log is already past their cursors: ids up to them are reused.
    cp.stop().await.expect("control service stops");
    copy_db(backup.path(), cp.dir.path());
    let mut writer = ControlProcess::start_on(&cp.store_url(), &[], &[])
        .await
        .expect("a second control service on the restored log");
    assert_eq!(
        writer.event_id().await,
        a,
        "the restored log ends at the backup"
    );
    let writes = writer.client();
    create_app(&writes, "d", up_d, true).await;
    let head = create_app(&writes, "e2", up_e2, true).await;
    assert!(
        head > lost,
        "the log ({head}) passes the proxies' cursor ({lost})"
    );
    writer.stop().await.expect("the second service stops");
    cp.restart().await.expect("control service restarts");
    assert_eq!(api.event_id().await, head);

    // Both converge on the restored log without a restart: D and E2 served, B and C
    // gone, A kept; each noticed the divergence.
    for (name, p) in proxies {
        wait_serving(
            p,
            &format!("the {name} proxy on the restored log"),
            &["a", "d", "e2"],
            &["b", "c"],
        )
        .await;
        settled_at(p, head, CATCH_UP).await;
        let c = config_view(p).await["control"].clone();
        assert_eq!(c["last_edge_event_id"].as_i64(), Some(head), "{name}: {c}");
        assert_eq!(answer(p, "d.test", "/api/x").await, (200, Some("d".into())));
        let diverged = p
            .metric(RESYNCS, &["reason=\"log_diverged\""])
            .await
            .unwrap();
        assert!(diverged >= 1.0, "{name}: {diverged}\n{}", p.logs());
        let logs = format!("{}{}", p.logs(), p.stderr());
        assert!(
            logs.contains("restored from a backup or replaced"),
            "{name}: the resync is logged"
        );
        assert_eq!(
            p.metric("tollgate_control_apply_errors_total", &[])
                .await
                .unwrap(),
            0.0,
            "{name}"
        );
    }
}
