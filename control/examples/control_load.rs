//! Load driver for `bench/control-load.sh`: starts the control service in this
//! process on a fresh store and loads apps, one hostname each and API keys over
//! its HTTP API, through batches and through single commands; prints commands/s.
//!
//! Environment: `APPS` [1000], `KEYS_PER_APP` [1], `ROUTES` [0] (1: one route
//! per app, on its hostname; batches only), `CLIENTS` [8] (single
//! commands), `BATCH` [999] (commands per batch), `BATCH_CLIENTS` [2],
//! `PROBE` [300] (single commands of each kind measured on top of the batch
//! load), `SINGLE_FROM_EMPTY` [1] (also load the same scale through single
//! commands on a second fresh store), `CERTS` [0] (upload that many certificates,
//! one per hostname, as single commands), `STORE` (a `postgres://` URL; a temporary
//! SQLite file without it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tollgate_control::ControlOptions;

const TOKEN: &str = "bench-admin-token-0123456789";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone)]
struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let res = self.client.request(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }
}

struct Service {
    running: tollgate_control::Running,
    api: Api,
    _tmp: tempfile::TempDir,
}

async fn start(store: Option<&str>) -> Service {
    let tmp = tempfile::tempdir().unwrap();
    let opts = ControlOptions {
        store: store.map_or_else(
            || format!("sqlite://{}", tmp.path().join("control.db").display()),
            str::to_string,
        ),
        listen: "127.0.0.1:0".parse().unwrap(),
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        admin_token: Some(TOKEN.into()),
        sealing_key_file: Some(tmp.path().join("sealing.key")),
        ..ControlOptions::default()
    };
    let running = tollgate_control::start(opts).await.unwrap();
    let api = Api {
        client: Client::builder(TokioExecutor::new()).build_http(),
        addr: running.http_addr,
    };
    Service {
        running,
        api,
        _tmp: tmp,
    }
}

async fn stop(s: Service) {
    s.running.shutdown();
    s.running.wait().await.unwrap();
}

/// Runs `jobs` on `clients` concurrent clients; seconds taken.
async fn parallel(api: &Api, clients: usize, jobs: Vec<(&'static str, String, Value)>) -> f64 {
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (api, jobs, next) = (api.clone(), jobs.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((method, path, body)) = jobs.get(i) else {
                        return;
                    };
                    api.call(method, path, body).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    t0.elapsed().as_secs_f64()
}

fn app_jobs(from: usize, to: usize) -> Vec<(&'static str, String, Value)> {
    (from..to)
        .map(|i| {
            (
                "POST",
                "/api/v1/apps".to_string(),
                json!({ "id": format!("a{i}") }),
            )
        })
        .collect()
}
fn host_jobs(from: usize, to: usize) -> Vec<(&'static str, String, Value)> {
    (from..to)
        .map(|i| {
            (
                "PUT",
                format!("/api/v1/hostnames/h{i}.load.bench"),
                json!({ "app": format!("a{i}") }),
            )
        })
        .collect()
}
fn key_jobs(from: usize, to: usize, per_app: usize) -> Vec<(&'static str, String, Value)> {
    (from..to)
        .flat_map(|i| {
            (0..per_app).map(move |_| {
                (
                    "POST",
                    format!("/api/v1/apps/a{i}/keys"),
                    json!({ "scopes": ["read"] }),
                )
            })
        })
        .collect()
}

/// Uploads of a self-signed certificate for hostname `i`, made before the clock starts.
fn cert_jobs(from: usize, to: usize) -> Vec<(&'static str, String, Value)> {
    (from..to)
        .map(|i| {
            let c = tollgate_certs::self_signed(&[format!("h{i}.load.bench")]).unwrap();
            (
                "POST",
                "/api/v1/certificates".to_string(),
                json!({ "id": format!("c{i}"), "cert_pem": c.cert_pem, "key_pem": c.key_pem }),
            )
        })
        .collect()
}

/// Single commands: apps, then hostnames, then keys; one line per kind.
async fn singles(api: &Api, clients: usize, from: usize, to: usize, keys: usize) -> f64 {
    let mut total = (0, 0.0);
    for (kind, jobs) in [
        ("create app", app_jobs(from, to)),
        ("bind hostname", host_jobs(from, to)),
        ("create API key", key_jobs(from, to, keys)),
    ] {
        let n = jobs.len();
        let dt = parallel(api, clients, jobs).await;
        println!(
            "    {kind:<15} {n:>6} in {dt:>6.2} s  {:>7.0} /s",
            n as f64 / dt
        );
        total = (total.0 + n, total.1 + dt);
    }
    total.0 as f64 / total.1
}

#[tokio::main]
async fn main() {
    let apps = env("APPS", 1000);
    let keys = env("KEYS_PER_APP", 1);
    let clients = env("CLIENTS", 8);
    let batch = env("BATCH", 999).max(1);
    let batch_clients = env("BATCH_CLIENTS", 2).max(1);
    let probe = env("PROBE", 300);
    let store = std::env::var("STORE").ok();
    let backend = if store.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let routes = env("ROUTES", 0).min(1);
    let per_app = 2 + keys + routes;
    let total = apps * per_app;
    println!(
        "# control load: {apps} apps, {apps} hostnames, {} routes, {} keys ({total} commands), {backend}",
        apps * routes,
        apps * keys
    );

    // Batches: each app's create, bind and keys in the same batch (cross-references).
    let s = start(store.as_deref()).await;
    let apps_per_batch = (batch / per_app).max(1);
    let mut jobs = Vec::new();
    for first in (0..apps).step_by(apps_per_batch) {
        let mut commands = Vec::new();
        for i in first..(first + apps_per_batch).min(apps) {
            commands.push(json!({ "op": "create_app", "id": format!("a{i}") }));
            commands.push(json!({ "op": "bind_hostname", "hostname": format!("h{i}.load.bench"), "app": format!("a{i}") }));
            if routes == 1 {
                commands.push(json!({ "op": "create_route", "route": {
                    "id": format!("r{i}"), "hostname": format!("h{i}.load.bench"),
                    "path_prefix": "/api", "app": format!("a{i}") } }));
            }
            for _ in 0..keys {
                commands.push(json!({ "op": "create_key", "app": format!("a{i}"), "key": { "scopes": ["read"] } }));
            }
        }
        jobs.push((
            "POST",
            "/api/v1/batch".to_string(),
            json!({ "commands": commands }),
        ));
    }
    let n_batches = jobs.len();
    let dt = parallel(&s.api, batch_clients, jobs).await;
    println!(
        "batch load: {total} commands in {n_batches} batches of <= {} on {batch_clients} clients: {dt:.2} s, {:.0} commands/s",
        apps_per_batch * per_app,
        total as f64 / dt
    );
    let cursor = s.running.projection().event_id();
    println!("    event log after the load: {cursor} events");

    // Where a single write's time goes at this scale: what every command does
    // with the whole config (projection copy, check's copy, routing spec, validation).
    let config = s.running.projection().view().config.clone();
    let time = |f: &dyn Fn()| {
        let t0 = Instant::now();
        for _ in 0..5 {
            f();
        }
        t0.elapsed().as_secs_f64() * 1000.0 / 5.0
    };
    let clone_ms = time(&|| drop(std::hint::black_box(config.clone())));
    let spec_ms = time(&|| drop(std::hint::black_box(config.routing_spec())));
    let spec = config.routing_spec();
    let validate_ms = time(&|| drop(std::hint::black_box(tollgate_routing::validate(&spec))));
    println!(
        "    whole-config work at this scale (a command now clones and validates only what it touches): \
         clone {clone_ms:.2} ms, routing_spec {spec_ms:.2} ms, validate {validate_ms:.2} ms"
    );
    // What a new proxy's first message carries, raw and as the feed sends it (gzip).
    let snapshot = serde_json::to_vec(&config).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let zipped = std::io::Write::write_all(&mut gz, &snapshot)
        .and_then(|()| gz.finish())
        .map_or(0, |v| v.len());
    println!(
        "    feed snapshot: {} bytes of JSON, {zipped} gzip-compressed on the wire ({:.1}x smaller)",
        snapshot.len(),
        snapshot.len() as f64 / zipped.max(1) as f64
    );

    // Certificate uploads, one per hostname: the second half's rate against the
    // first's shows whether an upload's cost grows with the certificates held.
    let certs = env("CERTS", 0).min(apps);
    if certs > 0 {
        println!("certificate uploads (one per hostname, {clients} clients):");
        for (from, to) in [(0, certs / 2), (certs / 2, certs)] {
            let jobs = cert_jobs(from, to);
            let dt = parallel(&s.api, clients, jobs).await;
            println!(
                "    certificates {from:>6} to {to:<6} in {dt:>6.2} s  {:>7.0} /s",
                (to - from) as f64 / dt
            );
        }
    }

    // Single commands at that scale.
    if probe > 0 {
        println!("single commands on top ({probe} apps more, {clients} clients, at {apps} apps):");
        let rate = singles(&s.api, clients, apps, apps + probe, keys).await;
        println!("    overall {rate:.0} commands/s");
    }
    stop(s).await;

    if env("SINGLE_FROM_EMPTY", 1) == 1 && store.is_none() {
        let s = start(None).await;
        println!("single commands from an empty log to {apps} apps ({clients} clients):");
        let rate = singles(&s.api, clients, 0, apps, keys).await;
        println!("    overall {rate:.0} commands/s");
        stop(s).await;
    }
}
