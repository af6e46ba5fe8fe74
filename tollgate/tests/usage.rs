//! Usage records from the recorder to a real control service (started in-process
//! on SQLite): totals read back from `GET /api/v1/apps/{app}/usage` equal what was
//! recorded, through a control outage, lost answers and a proxy restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use prometheus::Registry;
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_control::{ControlOptions, Running};
use tollgate_proxy::usage::{
    FlushConfig, UsageDelta, UsageFlusher, UsageMetrics, UsageRecorder, spawn_flusher,
};

const ADMIN: &str = "admin-token-0123456789";
const PROXY: &str = "proxy-token-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// 2026-11-23T00:00:00Z.
fn midnight() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(20_780 * 86_400)
}

async fn control(dir: &Path, listen: SocketAddr) -> Running {
    tollgate_control::start(ControlOptions {
        store: format!("sqlite://{}", dir.join("control.db").display()),
        listen,
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        admin_token: Some(ADMIN.into()),
        proxy_token: Some(PROXY.into()),
        poll_ms: 100,
        ..ControlOptions::default()
    })
    .await
    .unwrap()
}

async fn stop(control: Running) {
    control.shutdown();
    control.wait().await.unwrap();
}

/// A flusher to `addr` with short intervals, spooling in `spool`.
fn flusher(
    recorder: &Arc<UsageRecorder>,
    addr: SocketAddr,
    spool: &Path,
    node: &str,
) -> (UsageFlusher, UsageMetrics) {
    let metrics = UsageMetrics::register(&Registry::new()).unwrap();
    let config = FlushConfig {
        interval: Duration::from_millis(50),
        spool_dir: Some(spool.to_path_buf()),
        request_timeout: Duration::from_secs(2),
        retry_max: Duration::from_millis(300),
        max_pending: 4,
        ..FlushConfig::new(
            format!("http://{addr}").parse().unwrap(),
            Some(PROXY.into()),
            node.into(),
        )
    };
    let f = spawn_flusher(recorder.clone(), config, metrics.clone()).unwrap();
    (f, metrics)
}

/// `[requests, bytes_in, bytes_out, units]` of `app` on `period`, read as admin.
async fn totals(addr: SocketAddr, app: &str, period: &str) -> [i64; 4] {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/v1/apps/{app}/usage?period={period} HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer {ADMIN}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    let v: Value = serde_json::from_str(body).unwrap();
    ["requests", "bytes_in", "bytes_out", "units"].map(|k| v["totals"][k].as_i64().unwrap())
}

fn as_array(d: UsageDelta) -> [i64; 4] {
    [d.requests, d.bytes_in, d.bytes_out, d.units].map(|n| i64::try_from(n).unwrap())
}

/// Waits until `check` holds, failing with `what` after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Records one request of `size` bytes out for `app` at `at`; returns its delta.
fn request(r: &UsageRecorder, app: &str, size: u64, at: SystemTime) -> UsageDelta {
    let d = UsageDelta {
        requests: 1,
        bytes_in: size / 10,
        bytes_out: size,
        units: size % 7,
    };
    r.record_at(app, d, at);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn totals_equal_what_was_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = control(tmp.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = cp.http_addr;
    let recorder = Arc::new(UsageRecorder::new());
    let (f, metrics) = flusher(&recorder, addr, &tmp.path().join("spool"), "edge-1");

    // Eight tasks record concurrently while the flusher drains, across midnight.
    let before = midnight() - Duration::from_millis(100);
    let after = midnight() + Duration::from_millis(100);
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let r = recorder.clone();
            tokio::spawn(async move {
                let mut sums = [UsageDelta::default(); 2];
                for i in 0..400u64 {
                    let app = if i % 3 == 0 { "globex" } else { "acme" };
                    let (at, k) = if (i + t) % 2 == 0 {
                        (before, 0)
                    } else {
                        (after, 1)
                    };
                    let d = request(&r, app, 100 + i * t, at);
                    if app == "acme" {
                        sums[k] = sums[k].saturating_add(d);
                    }
                    if i % 50 == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                sums
            })
        })
        .collect();
    let mut expected = [UsageDelta::default(); 2];
    for t in tasks {
        let sums = t.await.unwrap();
        expected[0] = expected[0].saturating_add(sums[0]);
        expected[1] = expected[1].saturating_add(sums[1]);
    }
    let [day1, day2] = expected.map(as_array);
    eventually("acme's totals of both days", || async {
        totals(addr, "acme", "2026-11-22").await == day1
            && totals(addr, "acme", "2026-11-23").await == day2
    })
    .await;
    assert!(day1[0] > 0 && day2[0] > 0);
    // The usage of every request of globex too, and nothing more later.
    eventually("globex's totals", || async {
        let a = totals(addr, "globex", "2026-11-22").await;
        let b = totals(addr, "globex", "2026-11-23").await;
        a[0] + b[0] == 8 * 134
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(totals(addr, "acme", "2026-11-22").await, day1);
    assert_eq!(totals(addr, "acme", "2026-11-23").await, day2);
    assert_eq!(metrics.pending_batches.get(), 0);
    assert!(metrics.batches_sent.with_label_values(&["stored"]).get() > 0);
    assert_eq!(
        metrics.batches_sent.with_label_values(&["duplicate"]).get(),
        0
    );
    assert_eq!(metrics.batches_rejected.get(), 0);

    // `record` counts the current UTC day.
    let today = tollgate_control::usage::Period::of(SystemTime::now()).to_string();
    recorder.record(
        "initech",
        UsageDelta {
            requests: 1,
            bytes_in: 2,
            bytes_out: 3,
            units: 4,
        },
    );
    f.shutdown().await;
    assert_eq!(totals(addr, "initech", &today).await, [1, 2, 3, 4]);
    stop(cp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_control_outage_loses_nothing_and_counts_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = control(tmp.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = cp.http_addr;
    let recorder = Arc::new(UsageRecorder::new());
    let (f, metrics) = flusher(&recorder, addr, &tmp.path().join("spool"), "edge-1");
    let at = midnight() + Duration::from_secs(60);

    // Records keep coming the whole time, from another task.
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let (r, running) = (recorder.clone(), running.clone());
        tokio::spawn(async move {
            let mut sum = UsageDelta::default();
            let mut i = 0u64;
            while running.load(Ordering::Acquire) {
                sum = sum.saturating_add(request(&r, "acme", 1000 + i, at));
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sum
        })
    };
    eventually("some usage delivered", || async {
        totals(addr, "acme", "2026-11-23").await[0] > 0
    })
    .await;

    stop(cp).await;
    eventually("sends failing and batches piling up", || async {
        metrics.send_failures.with_label_values(&["network"]).get() > 0
            && metrics.pending_batches.get() >= 4
    })
    .await;
    // With the spool full, intervals merge into the newest pending batch.
    eventually("merging", || async { metrics.batches_merged.get() > 0 }).await;
    assert!(metrics.pending_batches.get() <= 4, "spool bounded");

    let cp = control(tmp.path(), addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.store(false, Ordering::Release);
    let expected = as_array(traffic.await.unwrap());
    eventually("totals after the outage", || async {
        totals(addr, "acme", "2026-11-23").await == expected
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(totals(addr, "acme", "2026-11-23").await, expected);
    assert_eq!(metrics.pending_batches.get(), 0);
    assert_eq!(metrics.batches_rejected.get(), 0);
    f.shutdown().await;
    stop(cp).await;
}

/// Forwards each connection to `target` but closes it as soon as the answer
/// starts: the service handled the request, the client never hears so.
async fn answer_eating_relay(target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(upstream) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut client_read, client_write) = client.into_split();
                let (mut up_read, mut up_write) = upstream.into_split();
                let forward = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
                });
                let mut first = [0u8; 1];
                let _ = up_read.read(&mut first).await;
                forward.abort();
                drop(client_write);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_restart_resends_the_pending_batch_once() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let cp = control(tmp.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = cp.http_addr;
    let at = midnight();

    // First run: the service stores the batch, but every answer is lost.
    let relay = answer_eating_relay(addr).await;
    let first = Arc::new(UsageRecorder::new());
    let (f1, m1) = flusher(&first, relay, &spool, "edge-1");
    let x = as_array(request(&first, "acme", 5000, at));
    eventually("the batch stored, its answers lost", || async {
        totals(addr, "acme", "2026-11-23").await == x
            && m1.send_failures.with_label_values(&["network"]).get() >= 2
    })
    .await;
    assert_eq!(m1.pending_batches.get(), 1);
    f1.shutdown().await;
    let spooled: Value =
        serde_json::from_slice(&std::fs::read(spool.join("usage-spool.json")).unwrap()).unwrap();
    assert_eq!(spooled["pending"].as_array().unwrap().len(), 1, "{spooled}");

    // Second run on the same spool, the service reachable: the pending batch is
    // resent under its name, acknowledged as a duplicate, and counted once.
    let second = Arc::new(UsageRecorder::new());
    let (f2, m2) = flusher(&second, addr, &spool, "edge-1");
    eventually("the pending batch resent", || async {
        m2.pending_batches.get() == 0
            && m2.batches_sent.with_label_values(&["duplicate"]).get() == 1
    })
    .await;
    assert_eq!(m2.batches_sent.with_label_values(&["stored"]).get(), 0);
    assert_eq!(totals(addr, "acme", "2026-11-23").await, x);

    // New usage gets new names: stored, not mistaken for the old batch.
    let y = as_array(request(&second, "acme", 700, at));
    let sum: [i64; 4] = std::array::from_fn(|i| x[i] + y[i]);
    eventually("new usage after the restart", || async {
        totals(addr, "acme", "2026-11-23").await == sum
    })
    .await;
    assert_eq!(m2.batches_sent.with_label_values(&["stored"]).get(), 1);
    assert_eq!(m2.batches_sent.with_label_values(&["duplicate"]).get(), 1);
    f2.shutdown().await;
    let spooled: Value =
        serde_json::from_slice(&std::fs::read(spool.join("usage-spool.json")).unwrap()).unwrap();
    assert_eq!(spooled["pending"], serde_json::json!([]));
    stop(cp).await;
}
