//! What a proxy pays to apply the control service's updates at tenant scale
//! (issue 12): builds a model of `APPS` apps (one hostname, one explicit route and
//! `KEYS_PER_APP` API keys each, plus `CERTS` per-host certificates), hands it to a
//! real follower as a feed snapshot (a cold start), then applies `DELTAS` single
//! events of each kind one at a time, as the feed delivers them, and prints the time
//! of each apply (p50, p99, max) and the process RSS. The stages of the whole-config
//! pipeline are timed apart once, for the profile. Run by `bench/proxy-apply.sh`.
//!
//! Then `BURSTS` bursts of `BURST` new keys, each handed over as one batch, as the
//! feed delivers a bulk load's batch command (decoded from the feed's JSON, as there).
//!
//! Environment: APPS [10000] KEYS_PER_APP [10] CERTS [APPS] DELTAS [50] WORKERS [2]
//! (the serving workers a proxy would size its per-worker upstream pools for)
//! BURST [500] BURSTS [10].

// A bench tool: its inputs are its own, and failing loudly on them is right.
#![allow(clippy::expect_used, clippy::type_complexity)]

use std::time::{Duration, Instant};
use tollgate_certs::{CertSource, CertStore};
use tollgate_proxy::benching::{self, Outcome, Update};
use tollgate_routing::{EdgeCert, EdgeConfig, EdgeEvent, Snapshot};

// The allocator of the `tollgate` binary, so that RSS here is what a proxy would hold.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(value: serde_json::Value) -> EdgeEvent {
    serde_json::from_value(value).expect("a well-formed bench event")
}

fn app_events(i: usize, keys: usize) -> Vec<EdgeEvent> {
    let app = format!("app{i:05}");
    let host = format!("h{i:05}.tenants.example");
    let mut out = vec![
        event(serde_json::json!({"type": "app_created", "app_id": app})),
        event(
            serde_json::json!({"type": "upstream_configured", "app_id": app, "name": "default",
            "cluster": {"endpoints": []}}),
        ),
        // A cluster's instances come by their own events (upstream_configured keeps them).
        event(
            serde_json::json!({"type": "instance_added", "app_id": app, "upstream": "default",
            "endpoint": {"address": format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256)}}),
        ),
        event(serde_json::json!({"type": "hostname_bound", "hostname": host, "app_id": app})),
        event(
            serde_json::json!({"type": "route_created", "route": {"id": format!("r{i:05}"),
            "hostname": host, "path_prefix": "/api", "app": app}}),
        ),
    ];
    for k in 0..keys {
        out.push(key_event(&app, i * 1000 + k));
    }
    out
}

fn key_event(app: &str, n: usize) -> EdgeEvent {
    let digest = format!("{:064x}", (n as u128) * 0x9e37_79b9_7f4a_7c15 + 1);
    event(serde_json::json!({"type": "api_key_created", "key": {
        "key_id": format!("key_{n:08}"), "app": app, "kind": "secret", "sha256": digest}}))
}

fn cert_event(i: usize) -> EdgeEvent {
    let host = format!("h{i:05}.tenants.example");
    let source = tollgate_certs::self_signed(std::slice::from_ref(&host)).expect("rcgen");
    EdgeEvent::CertificateUploaded {
        cert: EdgeCert {
            id: format!("cert{i:05}"),
            cert_pem: source.cert_pem,
            key_pem: source.key_pem,
            names: vec![host],
        },
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(label: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| ms(times[((times.len() - 1) as f64 * q).round() as usize]);
    println!(
        "  {label:<22} n={:<4} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        times.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

/// The whole-config stages, timed one by one: what a cold start or a platform-wide
/// change (API hosts, port policy, issuers) pays; a change to a few apps pays for
/// those apps only.
fn profile(model: &EdgeConfig) {
    let t = Instant::now();
    let spec = model.routing_spec_without_keys();
    let routing_spec = t.elapsed();
    let t = Instant::now();
    let valid = tollgate_routing::validate(&spec).is_ok();
    let validate = t.elapsed();
    let t = Instant::now();
    let snapshot = Snapshot::build(spec, 1);
    let snapshot_build = t.elapsed();
    let t = Instant::now();
    let json = serde_json::to_vec(model).map(|j| j.len()).unwrap_or(0);
    let persist = t.elapsed();
    println!(
        "  whole config: routing spec without keys {:.1} ms, validate {:.1} ms{}, Snapshot::build (validate + compile) {:.1} ms{}; persisted JSON {:.1} MiB in {:.1} ms (background, at most once a second)",
        ms(routing_spec),
        ms(validate),
        if valid { "" } else { " (refused)" },
        ms(snapshot_build),
        if snapshot.is_ok() { "" } else { " (refused)" },
        json as f64 / 1048576.0,
        ms(persist)
    );
    let t = Instant::now();
    let sources: Vec<CertSource> = model
        .certificates
        .values()
        .map(benching::cert_source)
        .collect();
    let (certs, _) = CertStore::build_isolated(&sources);
    println!(
        "  loaded once (cold start), then per change: {} certificates {:.1} ms",
        certs.len(),
        ms(t.elapsed())
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let apps = env("APPS", 10_000);
    let keys = env("KEYS_PER_APP", 10);
    let certs = env("CERTS", apps).min(apps);
    let deltas = env("DELTAS", 50);
    let workers =
        std::num::NonZeroUsize::new(env("WORKERS", 2)).unwrap_or(std::num::NonZeroUsize::MIN);
    benching::set_workers(workers);
    println!(
        "# apply_cost: {apps} apps, {apps} hostnames, {apps} routes, {} keys, {certs} certificates, {workers} workers",
        apps * keys
    );

    let t = Instant::now();
    let mut model = EdgeConfig::default();
    let mut event_id = 0i64;
    let mut fold = |model: &mut EdgeConfig, e: &EdgeEvent| {
        model.apply(e).expect("bench events apply");
        event_id += 1;
    };
    for i in 0..apps {
        for e in app_events(i, keys) {
            fold(&mut model, &e);
        }
    }
    for i in 0..certs {
        fold(&mut model, &cert_event(i));
    }
    println!(
        "  model built in {:.1} s, RSS {:.0} MiB",
        t.elapsed().as_secs_f64(),
        rss_mib()
    );
    // The index a proxy keeps (a proxy's model comes deserialized, and builds only it).
    model.refresh_edge_index();
    // Profiled at the end, so that its garbage does not count in the RSS figures.
    let profiled = model.clone();

    let mut follower = benching::follower().await?;
    let rss_before = rss_mib();
    let t = Instant::now();
    let outcome = follower
        .apply_batch(vec![Update::Snapshot {
            event_id,
            config: model,
            last_edge: None,
            resync: None,
        }])
        .await;
    println!(
        "  cold start from a snapshot: {:.1} ms ({outcome:?}), RSS {:.0} -> {:.0} MiB",
        ms(t.elapsed()),
        rss_before,
        rss_mib()
    );
    let state = follower.shared().state.load();
    let endpoints: usize = state
        .upstreams
        .iter()
        .flat_map(|(_, app)| app.clusters())
        .map(|c| c.endpoints.len())
        .sum();
    println!(
        "  serving config version {}: {} apps with upstreams, {endpoints} endpoints",
        state.version,
        state.upstreams.iter().count()
    );

    let kinds: [(&str, Box<dyn Fn(usize) -> EdgeEvent>); 6] = [
        (
            "api_key_created",
            Box::new(|n| key_event("app00000", 900_000_000 + n)),
        ),
        (
            "app_created",
            Box::new(|n| {
                event(serde_json::json!({"type": "app_created", "app_id": format!("new{n:05}")}))
            }),
        ),
        (
            "hostname_bound",
            Box::new(|n| {
                event(serde_json::json!({"type": "hostname_bound",
            "hostname": format!("extra{n:05}.tenants.example"), "app_id": "app00001"}))
            }),
        ),
        (
            "route_created",
            Box::new(|n| {
                event(serde_json::json!({"type": "route_created", "route": {
                    "id": format!("extra-r{n:05}"), "hostname": "h00002.tenants.example",
                    "path_prefix": format!("/extra{n}"), "app": "app00002"}}))
            }),
        ),
        (
            "instance_added",
            Box::new(|n| {
                event(
                    serde_json::json!({"type": "instance_added", "app_id": "app00003",
                    "upstream": "default", "endpoint": {"address": format!("10.200.0.{}:8080", n % 250 + 1)}}),
                )
            }),
        ),
        ("certificate_uploaded", Box::new(|n| cert_event(apps + n))),
    ];
    for (label, make) in &kinds {
        let mut times = Vec::with_capacity(deltas);
        for n in 0..deltas {
            let e = make(n);
            event_id += 1;
            let t = Instant::now();
            let outcome = follower
                .apply_batch(vec![Update::Delta {
                    event_id,
                    event: e,
                    marker: None,
                }])
                .await;
            times.push(t.elapsed());
            if outcome != Outcome::Continue {
                println!("  {label}: {outcome:?}");
            }
        }
        summary(label, times);
    }
    let (burst, bursts) = (env("BURST", 500), env("BURSTS", 10));
    let mut times = Vec::with_capacity(bursts);
    for b in 0..bursts {
        let json: Vec<(i64, Vec<u8>)> = (0..burst)
            .map(|n| {
                event_id += 1;
                let e = key_event("app00004", 800_000_000 + b * burst + n);
                (event_id, serde_json::to_vec(&e).expect("an event encodes"))
            })
            .collect();
        let t = Instant::now();
        let updates = json
            .iter()
            .map(|(id, j)| Update::delta(*id, "api_key_created", j, String::new()))
            .collect();
        let outcome = follower.apply_batch(updates).await;
        times.push(t.elapsed());
        if outcome != Outcome::Continue {
            println!("  burst: {outcome:?}");
        }
    }
    if !times.is_empty() {
        summary(&format!("burst of {burst} keys"), times);
    }
    println!("  RSS after the deltas {:.0} MiB", rss_mib());
    profile(&profiled);
    Ok(())
}
