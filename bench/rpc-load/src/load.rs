//! The load loop: workers sharing the HTTP/2 connections each run one stream at a time,
//! counting messages into shared totals as envelopes complete; the run measures the
//! totals' growth between the end of the warm-up and the end of the window. Then the
//! workers finish the streams they are in (up to `--drain` seconds) rather than cancel
//! them, so a run measures throughput, not how the target handles mass cancellation.

use crate::Args;
use crate::conn::Target;
use crate::cpu;
use crate::wire::{self, Protocol, Scanner};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Counters every worker adds to.
#[derive(Default)]
struct Totals {
    messages: AtomicU64,
    bytes: AtomicU64,
    /// HTTP/2 DATA frames (body chunks) received: messages per chunk shows batching.
    chunks: AtomicU64,
    streams: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Total of `messages` that ends a `--messages` run (`u64::MAX` until measuring).
    goal: AtomicU64,
    reached: Notify,
    /// Set after the window: workers open no further stream.
    stop: AtomicBool,
    /// Milliseconds from sending each stream's request to its first message, for every
    /// stream of the run, warm-up included (`first_message_ms` in the report).
    first_ms: Mutex<Vec<f64>>,
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    messages: u64,
    bytes: u64,
    chunks: u64,
    streams: u64,
    errors: u64,
}

impl Totals {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            chunks: self.chunks.load(Ordering::Relaxed),
            streams: self.streams.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    fn add(&self, c: wire::Counted) {
        self.chunks.fetch_add(1, Ordering::Relaxed);
        if c.messages == 0 {
            return;
        }
        self.bytes.fetch_add(c.bytes, Ordering::Relaxed);
        let total = self.messages.fetch_add(c.messages, Ordering::Relaxed) + c.messages;
        if total >= self.goal.load(Ordering::Relaxed) {
            self.reached.notify_one();
        }
    }

    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(e);
        }
    }
}

/// What every stream asks for and checks.
#[derive(Clone)]
struct Call {
    protocol: Protocol,
    target: Target,
    body: Bytes,
    payload_bytes: u32,
}

/// Runs the load described by `args`; returns the report as one JSON line.
pub async fn run(args: &Args) -> Result<String, String> {
    if args.concurrency == 0 || args.connections == 0 || args.stream_messages == 0 {
        return Err("--concurrency, --connections and --stream-messages must be at least 1".into());
    }
    let window = Duration::try_from_secs_f64(args.duration)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or("--duration must be a positive number of seconds")?;
    let warmup =
        Duration::try_from_secs_f64(args.warmup).map_err(|_| "--warmup must be >= 0 seconds")?;
    let target = Target::new(&args.url, args.connect, args.ca.as_deref()).await?;
    let call = Call {
        protocol: args.protocol,
        body: wire::request_body(
            args.protocol,
            args.stream_messages,
            args.payload_bytes,
            args.interval_ms,
        ),
        target,
        payload_bytes: args.payload_bytes,
    };
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(call.target.connect().await?);
    }
    let totals = Arc::new(Totals {
        goal: AtomicU64::new(u64::MAX),
        ..Totals::default()
    });
    let mut workers = JoinSet::new();
    for i in 0..args.concurrency {
        let send = conns[i % conns.len()].clone();
        workers.spawn(worker(send, call.clone(), Arc::clone(&totals)));
    }

    let warm_end = Instant::now() + warmup;
    wait(&mut workers, tokio::time::sleep_until(warm_end)).await?;
    let base = totals.snapshot();
    let cpu_base = cpu_seconds(&args.cpu)?;
    if args.messages > 0 {
        totals.goal.store(
            base.messages.saturating_add(args.messages),
            Ordering::Relaxed,
        );
        if totals.messages.load(Ordering::Relaxed) >= base.messages + args.messages {
            totals.reached.notify_one();
        }
    }
    let start = Instant::now();
    let end = start + window;
    let until = async {
        tokio::select! {
            () = tokio::time::sleep_until(end) => {}
            () = totals.reached.notified(), if args.messages > 0 => {}
        }
    };
    wait(&mut workers, until).await?;
    let seconds = start.elapsed().as_secs_f64();
    let now = totals.snapshot();
    let cpu_now = cpu_seconds(&args.cpu)?;
    let rss = rss_kib(&args.cpu);
    totals.stop.store(true, Ordering::Relaxed);
    let cancelled = drain(&mut workers, args.drain).await?;
    let cpu: serde_json::Map<String, serde_json::Value> = cpu_now
        .iter()
        .zip(&cpu_base)
        .map(|((name, after), (_, before))| (name.clone(), round3(after - before).into()))
        .collect();

    let messages = now.messages - base.messages;
    let bytes = now.bytes - base.bytes;
    let errors = now.errors - base.errors;
    let first_error = totals.first_error.lock().ok().and_then(|e| e.clone());
    if messages == 0 {
        return Err(format!(
            "no message arrived in {seconds:.1} s; first error: {}",
            first_error.as_deref().unwrap_or("none")
        ));
    }
    let mut report = serde_json::json!({
        "protocol": args.protocol.name(),
        "payload_bytes": args.payload_bytes,
        "concurrency": args.concurrency,
        "connections": args.connections,
        "messages": messages,
        "bytes": bytes,
        "chunks": now.chunks - base.chunks,
        "seconds": round3(seconds),
        "msgs_per_s": round3(messages as f64 / seconds),
        "mb_per_s": round3(bytes as f64 / seconds / 1e6),
        "streams": now.streams - base.streams,
        "errors": errors,
        "cancelled_streams": cancelled,
        "cpu_s": cpu,
        "rss_kib": rss,
        "first_message_ms": percentiles(&totals.first_ms),
    });
    if let (Some(e), true) = (first_error, errors > 0) {
        report["first_error"] = e.into();
    }
    Ok(report.to_string())
}

/// CPU seconds so far of each watched process, of this one as `load`, and of the
/// whole machine as `machine`.
fn cpu_seconds(watch: &[(String, u32)]) -> Result<Vec<(String, f64)>, String> {
    let mut out = vec![
        ("machine".to_owned(), cpu::machine_seconds()?),
        ("load".to_owned(), cpu::seconds(None)?),
    ];
    for (name, pid) in watch {
        out.push((name.clone(), cpu::seconds(Some(*pid))?));
    }
    Ok(out)
}

/// Resident memory (KiB) of each watched process at the end of the window.
fn rss_kib(watch: &[(String, u32)]) -> serde_json::Map<String, serde_json::Value> {
    watch
        .iter()
        .filter_map(|(name, pid)| Some((name.clone(), cpu::rss_kib(*pid)?.into())))
        .collect()
}

/// `{n, p50, p99, max}` of the recorded times, in ms.
fn percentiles(times: &Mutex<Vec<f64>>) -> serde_json::Value {
    let mut t = times.lock().map(|t| t.clone()).unwrap_or_default();
    if t.is_empty() {
        return serde_json::Value::Null;
    }
    t.sort_by(f64::total_cmp);
    let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    serde_json::json!({
        "n": t.len(),
        "p50": round3(at(0.5)),
        "p99": round3(at(0.99)),
        "max": round3(at(1.0)),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Waits for `until`, failing if a worker stops first (before `stop`, workers only
/// stop on a fatal connection error).
async fn wait(
    workers: &mut JoinSet<Result<(), String>>,
    until: impl Future<Output = ()>,
) -> Result<(), String> {
    tokio::select! {
        () = until => Ok(()),
        Some(ended) = workers.join_next() => Err(match ended {
            Ok(Ok(())) => "a worker stopped early".to_owned(),
            Ok(Err(e)) => e,
            Err(e) => format!("worker: {e}"),
        }),
    }
}

/// Lets the workers finish their streams for up to `secs`, then cancels the rest;
/// returns how many were cancelled.
async fn drain(workers: &mut JoinSet<Result<(), String>>, secs: f64) -> Result<usize, String> {
    let limit = Duration::try_from_secs_f64(secs).map_err(|_| "--drain must be >= 0")?;
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, workers.join_next()).await {
            Ok(None) => return Ok(0),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(format!("worker: {e}")),
            Err(_) => {
                let left = workers.len();
                workers.abort_all();
                return Ok(left);
            }
        }
    }
}

/// Opens streams one after the other until told to stop; fails if the connection does.
async fn worker(
    mut send: SendRequest<Full<Bytes>>,
    call: Call,
    totals: Arc<Totals>,
) -> Result<(), String> {
    while !totals.stop.load(Ordering::Relaxed) {
        send.ready().await.map_err(|e| format!("connection: {e}"))?;
        let req = match wire::request(
            call.protocol,
            &call.target.authority,
            &call.target.scheme,
            call.body.clone(),
        ) {
            Ok(r) => r,
            Err(e) => return Err(format!("request: {e}")),
        };
        let sent = Instant::now();
        let outcome = match send.send_request(req).await {
            Ok(resp) => read_stream(resp, &call, &totals, sent).await,
            Err(e) if send.is_closed() => return Err(format!("connection: {e}")),
            Err(e) => Err(format!("stream: {e}")),
        };
        match outcome {
            Ok(()) => {
                totals.streams.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                totals.error(e);
                // Keep a persistent failure from spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok(())
}

/// Reads one response to its end, counting its messages as they arrive.
async fn read_stream(
    resp: http::Response<Incoming>,
    call: &Call,
    totals: &Totals,
    sent: Instant,
) -> Result<(), String> {
    let (parts, mut body) = resp.into_parts();
    if parts.status != http::StatusCode::OK {
        let text = Limited::new(body, 4096)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(format!("HTTP status {}: {text}", parts.status));
    }
    let mut scanner = Scanner::new(call.protocol);
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        match frame.into_data() {
            Ok(data) => {
                let counted = scanner.feed(&data)?;
                if counted.messages > 0
                    && scanner.first_seen_now()
                    && let Ok(mut t) = totals.first_ms.lock()
                {
                    t.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                totals.add(counted);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    if !scanner.at_boundary() {
        return Err("body ended inside an envelope".into());
    }
    wire::check_status(
        call.protocol,
        parts.status,
        &parts.headers,
        trailers.as_ref(),
        scanner.end.as_deref(),
    )?;
    let first = scanner.first.ok_or("the stream carried no message")?;
    wire::check_first(call.protocol, &first, call.payload_bytes)
}
