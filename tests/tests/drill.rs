//! The upgrade drill (issue 17, "Upgrades that drop nothing"), a test binary of its own:
//! it holds fixed ports across proxy restarts, which no other test may take meanwhile.
//! three proxies following a
//! control service on a private PostgreSQL, under load from HTTP/1.1, HTTP/2, native gRPC
//! and resumable Connect / gRPC-Web clients that spread their work over the three. The
//! proxies are restarted one by one (SIGTERM, drain, exit, a new process on the same
//! config, ports and state dir), then the control service (one proxy is restarted again
//! while it is down: it serves the config saved in its state dir), then PostgreSQL itself
//! under the running control service; afterwards a write through the API must reach
//! every proxy, in its cursor and in its behaviour.
//!
//! What must never happen: a request the proxy *accepted* (read its head) failing: a
//! non-200 answer, an error or reset after the answer began, a truncated or wrong body,
//! no answer for [`BODY_TIMEOUT`] from a running proxy, an error before any answer to a
//! request the proxy logged (access log, by `x-request-id`) or the upstream saw. A
//! refused connection, or a request sent on a connection the proxy was already closing
//! and never read (in no access log, not at the upstream), is not a failure: the client
//! moves on to the next proxy, as a load balancer would. No drain may reach its deadline.
//! Every resumable stream ends with exactly messages 0..N, resuming on another proxy when
//! its own drains.
//!
//! Besides the background load, each rolling restart pins streams of every kind on the
//! proxy about to stop (an HTTP/1.1 and an HTTP/2 chunked answer, a native gRPC server
//! stream, a resumable Connect or gRPC-Web stream), started before the SIGTERM: the first
//! three must end whole on the draining proxy, the last must resume elsewhere, gap-free.
//!
//! Waits are bounded polls; nothing asserts on timing. Phase times and counts are printed
//! (`--nocapture`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tollgate_proto::TestServiceImpl;
use tollgate_proto::test::v1::StreamRequest;
use tollgate_proto::test::v1::test_service_client::TestServiceClient;
use tollgate_tests::client::{self, Sender};
use tollgate_tests::config::Config;
use tollgate_tests::connect::{Call, NodeClient, RunningCall, Transport};
use tollgate_tests::control::{ApiClient, ControlProcess};
use tollgate_tests::grpc::{UntimedChannel, serve_without_server_timer};
use tollgate_tests::postgres::PrivateCluster;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::redis;
use tollgate_tests::tls::{TestCert, client_config};
use tollgate_tests::wait::{config_view, until};

const WEB_HOST: &str = "web.test";
const STREAM_HOST: &str = "stream.test";
const PROXIES: usize = 3;
/// Generous bound for anything to happen on a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(60);
/// A drained proxy runs its resumable streams' upstream calls to their end (they last a
/// few seconds here); far above that, so the drain never cuts one.
const DRAIN_MS: u64 = 20_000;
/// Bound on one answer's body, streams included.
const BODY_TIMEOUT: Duration = Duration::from_secs(40);
/// Bound on the wait for an answer's head once the proxy process the request went to
/// has exited. hyper's HTTP/2 client can leave a request sent as the connection closes
/// waiting for ever (seen on a proxy that had exited); such a request is decided like
/// any other unanswered one, from the logs. From a live proxy, the wait is
/// [`BODY_TIMEOUT`], past which it is a failure.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two requests of one lane: load, not a flood, on two cores.
const PACE: Duration = Duration::from_millis(25);
/// Requests a lane sends on a connection (per HTTP/2 stream) before moving to the next
/// proxy: at random up to this, so the lanes do not move in step with the restarts.
const PER_CONNECTION: usize = 30;
/// Accepted requests the background lanes must complete over the drill, at least.
const FLOOR: u64 = 200;

// ---------------------------------------------------------------- the web upstream

/// Which request ids the upstream saw (the proxy forwards `x-request-id`).
#[derive(Default)]
struct Seen(Mutex<HashSet<String>>);

impl Seen {
    fn insert(&self, id: &str) {
        self.0.lock().unwrap().insert(id.to_string());
    }
    fn contains(&self, id: &str) -> bool {
        self.0.lock().unwrap().contains(id)
    }
}

/// `/fast`, `/slow` (200 ms) and `/chunks?n=N&ms=M` (N chunks M ms apart), each body
/// naming the request id so a mixed-up or cut answer shows.
async fn start_web_upstream(seen: Arc<Seen>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(web_answer(&seen, &req).await) }
                });
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

async fn web_answer(
    seen: &Seen,
    req: &http::Request<Incoming>,
) -> http::Response<BoxBody<Bytes, Infallible>> {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    seen.insert(&id);
    let path = req.uri().path();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if path == "/chunks" {
        let (n, ms) = chunk_params(req.uri().query().unwrap_or(""));
        let stream = futures_util::stream::unfold(0, move |i| {
            let id = id.clone();
            async move {
                if i == n {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let frame = Frame::data(Bytes::from(chunk(&id, i, n)));
                Some((Ok::<_, Infallible>(frame), i + 1))
            }
        });
        return http::Response::new(BodyExt::boxed(StreamBody::new(stream)));
    }
    http::Response::new(Full::new(Bytes::from(plain_body(&id))).boxed())
}

fn chunk_params(query: &str) -> (u64, u64) {
    let mut n = 5;
    let mut ms = 40;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("n", v)) => n = v.parse().unwrap_or(n),
            Some(("ms", v)) => ms = v.parse().unwrap_or(ms),
            _ => {}
        }
    }
    (n, ms)
}

fn chunk(id: &str, i: u64, n: u64) -> String {
    format!("chunk {i} of {n} for {id}\n")
}

fn plain_body(id: &str) -> String {
    format!("{id}\n{}", "x".repeat(512))
}

/// What the upstream answers to `path` (with its query) for request `id`.
fn expected_body(path: &str, id: &str) -> String {
    match path.split_once('?') {
        Some(("/chunks", query)) => {
            let (n, _) = chunk_params(query);
            (0..n).map(|i| chunk(id, i, n)).collect()
        }
        _ => plain_body(id),
    }
}

// ---------------------------------------------------------------- what the clients saw

/// Where the drill is; requests that succeed are counted per phase, and each phase
/// waits for some.
const PHASES: [&str; 7] = [
    "warm-up",
    "proxy 0 restart",
    "proxy 1 restart",
    "proxy 2 restart",
    "control service restart",
    "PostgreSQL restart",
    "after the restarts",
];
const CONTROL_PHASE: usize = 4;
const PG_PHASE: usize = 5;
const AFTER_PHASE: usize = 6;

/// An error with no answer: a failure only if the proxy had read the request.
struct Unanswered {
    lane: String,
    id: String,
    slot: usize,
    error: String,
}

#[derive(Default)]
struct Stats {
    phase: AtomicUsize,
    ok_by_phase: [AtomicU64; PHASES.len()],
    ok_by_slot: [AtomicU64; PROXIES],
    /// Connections refused (or cut during the TLS handshake) before any request.
    refused: AtomicU64,
    /// Sent, but never read by a proxy (resolved from [`Self::unanswered`] at the end).
    not_accepted: AtomicU64,
    /// Unanswered [`HEAD_TIMEOUT`] after their proxy exited (also in
    /// [`Self::unanswered`]).
    hung: AtomicU64,
    /// Processes of each proxy that have exited so far: a connection made while this
    /// was `g` went to the process that exits when it becomes `g + 1`.
    generation: [AtomicUsize; PROXIES],
    streams_ok: AtomicU64,
    stream_resumes: AtomicU64,
    grpc_streams_ok: AtomicU64,
    /// Set from a proxy's SIGTERM to its exit.
    draining: [AtomicBool; PROXIES],
    /// Lanes connected to each proxy now.
    on_slot: [AtomicUsize; PROXIES],
    /// Requests completed by a proxy while it drained.
    completed_draining: AtomicU64,
    failures: Mutex<Vec<String>>,
    unanswered: Mutex<Vec<Unanswered>>,
    stop: AtomicBool,
}

impl Stats {
    fn ok(&self, slot: usize) {
        self.ok_by_phase[self.phase.load(SeqCst)].fetch_add(1, SeqCst);
        self.ok_by_slot[slot].fetch_add(1, SeqCst);
        if self.draining[slot].load(SeqCst) {
            self.completed_draining.fetch_add(1, SeqCst);
        }
    }
    fn total_ok(&self) -> u64 {
        self.ok_by_phase.iter().map(|c| c.load(SeqCst)).sum()
    }
    fn fail(&self, what: String) {
        eprintln!("drill: FAILURE {what}");
        self.failures.lock().unwrap().push(what);
    }
    fn unanswered(&self, u: Unanswered) {
        self.unanswered.lock().unwrap().push(u);
    }
    fn stopped(&self) -> bool {
        self.stop.load(SeqCst)
    }
}

/// Addresses of the three proxies: fixed, kept across restarts (a Service's endpoints).
#[derive(Clone, Copy)]
struct Addrs {
    plain: SocketAddr,
    tls: SocketAddr,
}

/// Everything a lane needs.
struct Ctx {
    addrs: Vec<Addrs>,
    cert: TestCert,
    stats: Stats,
    node: NodeClient,
}

// ---------------------------------------------------------------- HTTP lanes

#[derive(Clone, Copy, Debug)]
enum Kind {
    H1Plain,
    H1Tls,
    H2Tls,
    H2c,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::H1Plain => "h1-plain",
            Kind::H1Tls => "h1-tls",
            Kind::H2Tls => "h2-tls",
            Kind::H2c => "h2c",
        }
    }
    fn h2(self) -> bool {
        matches!(self, Kind::H2Tls | Kind::H2c)
    }
    fn scheme(self) -> &'static str {
        match self {
            Kind::H1Tls | Kind::H2Tls => "https",
            Kind::H1Plain | Kind::H2c => "http",
        }
    }
}

async fn connect(ctx: &Ctx, kind: Kind, slot: usize) -> Result<Sender, String> {
    let a = ctx.addrs[slot];
    let tls = |alpn: &'static [u8]| client_config(&[&ctx.cert], &[alpn]);
    let connecting = async {
        match kind {
            Kind::H1Plain => client::connect_plain(a.plain, false).await,
            Kind::H2c => client::connect_plain(a.plain, true).await,
            Kind::H1Tls => client::connect_tls(a.tls, WEB_HOST, tls(b"http/1.1")).await,
            Kind::H2Tls => client::connect_tls(a.tls, WEB_HOST, tls(b"h2")).await,
        }
    };
    match tokio::time::timeout(Duration::from_secs(20), connecting).await {
        Ok(Ok(s)) if s.is_h2() == kind.h2() => Ok(s),
        Ok(Ok(_)) => Err("wrong protocol negotiated".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".into()),
    }
}

/// Awaits an answer's head (`fut`) from the process `generation` of proxy `slot`, as
/// long as that process runs (up to [`BODY_TIMEOUT`]) and [`HEAD_TIMEOUT`] past its exit.
async fn await_head<T>(
    ctx: &Ctx,
    slot: usize,
    generation: usize,
    fut: impl std::future::Future<Output = T>,
) -> Head<T> {
    let mut fut = std::pin::pin!(fut);
    let sent = Instant::now();
    let mut exited: Option<Instant> = None;
    loop {
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(250), &mut fut).await {
            return Head::Answer(v);
        }
        let now = Instant::now();
        if ctx.stats.generation[slot].load(SeqCst) > generation {
            let at = *exited.get_or_insert(now);
            if now - at >= HEAD_TIMEOUT {
                ctx.stats.hung.fetch_add(1, SeqCst);
                return Head::ProxyGone;
            }
        } else if now - sent >= BODY_TIMEOUT {
            return Head::Timeout;
        }
    }
}

enum Head<T> {
    Answer(T),
    /// Nothing, and the proxy process has exited (since [`HEAD_TIMEOUT`]).
    ProxyGone,
    /// Nothing for [`BODY_TIMEOUT`] from a running proxy.
    Timeout,
}

/// How one exchange ended.
enum Ended {
    /// Complete, or answered and found wrong (a failure, recorded): the connection
    /// goes on.
    Ok,
    /// An error before any answer: decided later from the logs and the upstream.
    Unanswered(String),
    /// A failure (recorded) that leaves the connection unusable.
    Broken,
}

/// Sends `GET path` with request id `id` and checks the whole answer. An answer that
/// began and is anything but the upstream's exact 200 is a failure (recorded here).
#[allow(clippy::too_many_arguments)]
async fn exchange(
    ctx: &Ctx,
    sender: &mut Sender,
    kind: Kind,
    lane: &str,
    slot: usize,
    generation: usize,
    id: &str,
    path: &str,
) -> Ended {
    let mut req = client::request(
        sender,
        "GET",
        kind.scheme(),
        WEB_HOST,
        path,
        client::empty(),
    );
    req.headers_mut()
        .insert("x-request-id", id.parse().expect("request id"));
    let resp = match await_head(ctx, slot, generation, sender.send(req)).await {
        Head::Answer(Ok(resp)) => resp,
        Head::Answer(Err(e)) => return Ended::Unanswered(error_chain(&*e)),
        Head::ProxyGone => {
            return Ended::Unanswered(format!(
                "no answer head {HEAD_TIMEOUT:?} after the proxy exited"
            ));
        }
        Head::Timeout => {
            ctx.stats.fail(format!(
                "{lane} {id} {path} on proxy {slot}: no answer head within {BODY_TIMEOUT:?} from a running proxy"
            ));
            return Ended::Broken;
        }
    };
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(BODY_TIMEOUT, resp.into_body().collect()).await;
    let body = match body {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Ok(Err(e)) => {
            ctx.stats.fail(format!(
                "{lane} {id} {path} on proxy {slot}: status {status}, then the body failed: {}",
                error_chain(&e)
            ));
            return Ended::Broken;
        }
        Err(_) => {
            ctx.stats.fail(format!(
                "{lane} {id} {path} on proxy {slot}: status {status}, body not done within {BODY_TIMEOUT:?}"
            ));
            return Ended::Broken;
        }
    };
    let want = expected_body(path, id);
    if status != 200 || body != want {
        let shown: String = body.chars().take(300).collect();
        ctx.stats.fail(format!(
            "{lane} {id} {path} on proxy {slot}: status {status}, body {} bytes (want 200 and {} bytes): {shown:?}",
            body.len(),
            want.len()
        ));
    } else {
        ctx.stats.ok(slot);
    }
    Ended::Ok
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

/// The background mix: mostly quick answers, some slow ones (in flight when a drain
/// starts), some short chunked streams.
fn pick_path(n: u64) -> &'static str {
    match n % 10 {
        3 | 7 => "/slow",
        5 => "/chunks?n=5&ms=40",
        _ => "/fast",
    }
}

/// One client lane: connects to proxy after proxy (round robin from `first`); HTTP/1.1
/// sends requests one at a time on a keep-alive connection, HTTP/2 runs `streams` at
/// once on one connection. On a refused connection or an unanswered request it moves
/// on to the next proxy.
async fn http_lane(ctx: Arc<Ctx>, kind: Kind, lane: String, first: usize, streams: usize) {
    let counter = Arc::new(AtomicU64::new(0));
    let mut slot = first;
    while !ctx.stats.stopped() {
        let generation = ctx.stats.generation[slot].load(SeqCst);
        let sender = match connect(&ctx, kind, slot).await {
            Ok(s) => s,
            Err(_) => {
                ctx.stats.refused.fetch_add(1, SeqCst);
                slot = (slot + 1) % PROXIES;
                tokio::time::sleep(PACE).await;
                continue;
            }
        };
        ctx.stats.on_slot[slot].fetch_add(1, SeqCst);
        let per_connection = fastrand::usize(1..=PER_CONNECTION);
        let runs = match sender {
            Sender::H1(_) => vec![sender],
            Sender::H2(ref s) => (0..streams).map(|_| Sender::H2(s.clone())).collect(),
        };
        let tasks: Vec<JoinHandle<()>> = runs
            .into_iter()
            .map(|mut sender| {
                let (ctx, lane, counter) = (ctx.clone(), lane.clone(), counter.clone());
                tokio::spawn(async move {
                    for _ in 0..per_connection {
                        if ctx.stats.stopped() {
                            return;
                        }
                        let n = counter.fetch_add(1, SeqCst);
                        let id = format!("drill.{lane}.{n:07}");
                        let path = pick_path(n);
                        let ended =
                            exchange(&ctx, &mut sender, kind, &lane, slot, generation, &id, path)
                                .await;
                        match ended {
                            Ended::Ok => {}
                            Ended::Broken => return,
                            Ended::Unanswered(error) => {
                                ctx.stats.unanswered(Unanswered {
                                    lane: lane.clone(),
                                    id,
                                    slot,
                                    error,
                                });
                                return;
                            }
                        }
                        tokio::time::sleep(PACE).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        ctx.stats.on_slot[slot].fetch_sub(1, SeqCst);
        slot = (slot + 1) % PROXIES;
    }
}

// ---------------------------------------------------------------- gRPC lane

async fn grpc_client(
    ctx: &Ctx,
    slot: usize,
    tls: bool,
) -> Result<TestServiceClient<UntimedChannel>, String> {
    let a = ctx.addrs[slot];
    let (addr, cfg) = if tls {
        (a.tls, Some(client_config(&[&ctx.cert], &[b"h2"])))
    } else {
        (a.plain, None)
    };
    let ch = tokio::time::timeout(
        Duration::from_secs(20),
        UntimedChannel::connect(addr, STREAM_HOST, cfg),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(TestServiceClient::new(ch))
}

/// A native gRPC server stream of `count` messages: `Ok` when all arrived in order and
/// the status was OK; an error before the answer began is [`Ended::Unanswered`] (the
/// proxy's access log tells later whether it had read the call); any other end is a
/// failure (recorded).
#[allow(clippy::too_many_arguments)]
async fn grpc_stream(
    ctx: &Ctx,
    client: &mut TestServiceClient<UntimedChannel>,
    lane: &str,
    slot: usize,
    generation: usize,
    id: &str,
    count: i32,
    interval_ms: i32,
) -> Ended {
    let mut req = tonic::Request::new(StreamRequest {
        count,
        interval_ms,
        payload_bytes: 16,
        usage_per_message: 0,
    });
    req.metadata_mut()
        .insert("x-request-id", id.parse().expect("request id"));
    let started = await_head(ctx, slot, generation, client.server_stream(req)).await;
    let mut stream = match started {
        Head::Answer(Ok(r)) => r.into_inner(),
        // tonic gives transport errors (a closed connection) and statuses the proxy
        // sent (trailers only) alike: decided later, from the proxy's access log.
        Head::Answer(Err(status)) => {
            let source = std::error::Error::source(&status).map(error_chain);
            return Ended::Unanswered(format!(
                "{:?} {:?} ({})",
                status.code(),
                status.message(),
                source.unwrap_or_default()
            ));
        }
        Head::ProxyGone => {
            return Ended::Unanswered(format!(
                "no answer head {HEAD_TIMEOUT:?} after the proxy exited"
            ));
        }
        Head::Timeout => {
            ctx.stats.fail(format!(
                "{lane} {id} on proxy {slot}: no answer head within {BODY_TIMEOUT:?} from a running proxy"
            ));
            return Ended::Broken;
        }
    };
    let mut seqs = Vec::new();
    loop {
        match tokio::time::timeout(BODY_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(m))) => seqs.push(m.seq),
            Ok(Ok(None)) => break,
            Ok(Err(status)) => {
                ctx.stats.fail(format!(
                    "{lane} {id} on proxy {slot}: stream ended with {:?} {:?} after {} messages",
                    status.code(),
                    status.message(),
                    seqs.len()
                ));
                return Ended::Broken;
            }
            Err(_) => {
                ctx.stats.fail(format!(
                    "{lane} {id} on proxy {slot}: stalled after {} messages",
                    seqs.len()
                ));
                return Ended::Broken;
            }
        }
    }
    if seqs != (0..count).collect::<Vec<_>>() {
        ctx.stats.fail(format!(
            "{lane} {id} on proxy {slot}: received {seqs:?}, want 0..{count}"
        ));
    } else {
        ctx.stats.ok(slot);
        ctx.stats.grpc_streams_ok.fetch_add(1, SeqCst);
    }
    Ended::Ok
}

/// Native gRPC server streams (h2c and TLS in turn), a few per connection.
async fn grpc_lane(ctx: Arc<Ctx>, first: usize) {
    let lane = "grpc";
    let mut slot = first;
    let mut n = 0u64;
    while !ctx.stats.stopped() {
        let generation = ctx.stats.generation[slot].load(SeqCst);
        let mut client = match grpc_client(&ctx, slot, n.is_multiple_of(2)).await {
            Ok(c) => c,
            Err(_) => {
                ctx.stats.refused.fetch_add(1, SeqCst);
                slot = (slot + 1) % PROXIES;
                tokio::time::sleep(PACE).await;
                continue;
            }
        };
        ctx.stats.on_slot[slot].fetch_add(1, SeqCst);
        for _ in 0..fastrand::usize(1..=5) {
            if ctx.stats.stopped() {
                break;
            }
            n += 1;
            let id = format!("drill.{lane}.{n:07}");
            match grpc_stream(&ctx, &mut client, lane, slot, generation, &id, 8, 40).await {
                Ended::Ok => {}
                Ended::Broken => break,
                Ended::Unanswered(error) => {
                    ctx.stats.unanswered(Unanswered {
                        lane: lane.into(),
                        id,
                        slot,
                        error,
                    });
                    break;
                }
            }
            tokio::time::sleep(PACE).await;
        }
        ctx.stats.on_slot[slot].fetch_sub(1, SeqCst);
        slot = (slot + 1) % PROXIES;
    }
}

// ---------------------------------------------------------------- resumable streams

const TRANSPORTS: [(&str, Transport, bool); 3] = [
    ("connect-proto h2", Transport::ConnectProto, false),
    ("grpc-web h2", Transport::GrpcWeb, false),
    ("connect-json http/1.1", Transport::ConnectJson, true),
];

/// `resume.mjs` reading `count` messages `interval_ms` apart, first from proxy `first`,
/// resuming on the next ones in turn.
fn spawn_resumable(
    ctx: &Ctx,
    first: usize,
    which: usize,
    count: u32,
    interval_ms: u32,
) -> RunningCall {
    let urls: Vec<String> = (0..PROXIES)
        .map(|i| {
            let slot = (first + i) % PROXIES;
            format!("https://{STREAM_HOST}:{}", ctx.addrs[slot].tls.port())
        })
        .collect();
    let (_, transport, http1) = TRANSPORTS[which % TRANSPORTS.len()];
    let call = Call::new(
        transport,
        "serverStream",
        json!({ "count": count, "intervalMs": interval_ms }),
    )
    .with("baseUrls", json!(urls))
    .with("maxResumes", json!(20));
    let call = if http1 { call.http1() } else { call };
    ctx.node
        .spawn_script("resume.mjs", &call)
        .expect("node runs")
}

/// How a resumable stream ended.
enum StreamEnd {
    /// Exactly 0..count, after this many resumes.
    Exact(u64),
    /// The first call never reached a proxy (refused): not a failure.
    NotStarted,
}

/// Reads `resume.mjs`'s end; a stream that started and is not exactly 0..count is a
/// failure (recorded, `None`).
async fn finish_resumable(
    ctx: &Ctx,
    run: RunningCall,
    what: &str,
    count: u32,
) -> Option<StreamEnd> {
    let lines = match run.finish(Duration::from_secs(120)).await {
        Ok(lines) => lines,
        Err(e) => {
            ctx.stats.fail(format!("{what}: resume.mjs: {e}"));
            return None;
        }
    };
    let Some(done) = lines.iter().find_map(|l| l.get("done")) else {
        ctx.stats.fail(format!("{what}: no done line: {lines:?}"));
        return None;
    };
    let seqs: Vec<u64> = done["seqs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let resumes = done["resumes"].as_u64().unwrap_or(0);
    if done["ok"] == json!(true) && seqs == (0..u64::from(count)).collect::<Vec<_>>() {
        return Some(StreamEnd::Exact(resumes));
    }
    if done["ok"] != json!(true) && done["token"].is_null() && seqs.is_empty() {
        return Some(StreamEnd::NotStarted);
    }
    ctx.stats.fail(format!(
        "{what}: ok={} after {resumes} resumes, {} messages (want exactly 0..{count}): {:?}, error {}",
        done["ok"],
        seqs.len(),
        seqs,
        done["error"]
    ));
    None
}

/// Resumable streams one after another, each starting on the next proxy.
async fn resumable_lane(ctx: Arc<Ctx>, first: usize) {
    let mut n = 0usize;
    while !ctx.stats.stopped() {
        let slot = (first + n) % PROXIES;
        let what = format!(
            "resumable stream {n} ({}) from proxy {slot}",
            TRANSPORTS[n % 3].0
        );
        let run = spawn_resumable(&ctx, slot, n, 30, 60);
        match finish_resumable(&ctx, run, &what, 30).await {
            Some(StreamEnd::Exact(resumes)) => {
                ctx.stats.streams_ok.fetch_add(1, SeqCst);
                ctx.stats.stream_resumes.fetch_add(resumes, SeqCst);
            }
            Some(StreamEnd::NotStarted) => {
                ctx.stats.refused.fetch_add(1, SeqCst);
            }
            None => {}
        }
        n += 1;
    }
}

// ---------------------------------------------------------------- the fleet

/// A port outside the kernel's ephemeral range (no client socket is ever given it as its
/// own port, so a restarted proxy can always bind it again), free now.
fn fixed_port() -> u16 {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (from, to) = (
        low.saturating_sub(12_000).max(10_000),
        low.saturating_sub(1),
    );
    for _ in 0..1000 {
        let port = fastrand::u16(from..to);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {from}..{to}");
}

/// One proxy of the fleet: its config (fixed listener ports) and state dir outlive
/// its processes; old processes are kept (their logs) until the end.
struct Slot {
    config: String,
    _state: tempfile::TempDir,
    current: Option<ProxyProcess>,
    retired: Vec<ProxyProcess>,
}

impl Slot {
    fn proxy(&self) -> &ProxyProcess {
        self.current.as_ref().expect("a running proxy")
    }

    /// Every log line of every process of this slot containing `needle`.
    fn log_lines(&self, needle: &str) -> Vec<String> {
        self.retired
            .iter()
            .chain(self.current.as_ref())
            .flat_map(|p| {
                p.logs()
                    .lines()
                    .chain(p.stderr().lines())
                    .filter(|l| l.contains(needle))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every log of every process of this slot, whole.
    fn everything(&self) -> String {
        self.retired
            .iter()
            .chain(self.current.as_ref())
            .map(|p| p.logs() + &p.stderr())
            .collect()
    }

    fn all_logs(&self) -> String {
        let mut out = String::new();
        for (generation, p) in self.retired.iter().chain(self.current.as_ref()).enumerate() {
            let _ = write!(
                out,
                "--- generation {generation} ---\n{}{}",
                tail(&p.logs(), 60),
                tail(&p.stderr(), 20)
            );
        }
        out
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..].iter().map(|l| format!("{l}\n")).collect()
}

fn proxy_config(
    cp: &ControlProcess,
    node: &str,
    addrs: Addrs,
    state: &Path,
    redis: &str,
    prefix: &str,
) -> String {
    Config::new()
        .raw(&format!(
            "[[listeners]]\nname = \"http\"\nlisten = \"{}\"",
            addrs.plain
        ))
        .raw(&format!(
            "[[listeners]]\nname = \"tls\"\nlisten = \"{}\"\n[listeners.tls]",
            addrs.tls
        ))
        .raw("[log]\naccess_log = true")
        .raw(&format!("[limits]\ndrain_timeout_ms = {DRAIN_MS}"))
        .raw(&format!(
            "[resume]\nredis_url = \"{redis}\"\nkey_prefix = \"{prefix}\"\nredis_timeout_ms = 1000"
        ))
        .raw(&cp.proxy_table(node, state))
        .build()
}

/// Starts a proxy on `config` off the async threads; a port still held a moment is
/// tried again within the bound.
fn start_proxy(config: &str) -> ProxyProcess {
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + BOUND;
        loop {
            match ProxyProcess::start(config, &[]) {
                Ok(p) => return p,
                Err(e) if e.to_string().contains("in use") && Instant::now() < deadline => {
                    eprintln!("drill: proxy could not bind yet ({e}); again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("proxy starts: {e}"),
            }
        }
    })
}

async fn readyz(proxy: &ProxyProcess) -> Option<u16> {
    proxy.admin_get("/readyz").await.ok().map(|(s, _)| s)
}

async fn wait_ready(proxy: &ProxyProcess, what: &str) {
    until(what, BOUND, || async {
        (readyz(proxy).await == Some(200)).then_some(())
    })
    .await;
}

/// Waits until the proxy serves event `event_id` or later and is connected.
async fn wait_serving(proxy: &ProxyProcess, event_id: i64, what: &str) {
    until(what, BOUND, || async {
        let view = config_view(proxy).await;
        let c = &view["control"];
        (c["serving_event_id"].as_i64()? >= event_id && c["connected"] == json!(true)).then_some(())
    })
    .await;
}

async fn created(api: &ApiClient, method: &str, path: &str, body: Value) -> i64 {
    api.write(method, path, Some(&body)).await
}

/// Through the API: app `web` (the HTTP upstream, `web.test`), app `streams` (the gRPC
/// test service over h2c) with a resumable route on `stream.test`, and a certificate
/// for both names. Returns the last event id.
async fn configure(api: &ApiClient, web: SocketAddr, grpc: SocketAddr, cert: &TestCert) -> i64 {
    created(api, "POST", "/api/v1/apps", json!({"id": "web"})).await;
    created(
        api,
        "POST",
        "/api/v1/apps/web/upstreams/default/instances",
        json!({"address": web.to_string()}),
    )
    .await;
    created(
        api,
        "PUT",
        &format!("/api/v1/hostnames/{WEB_HOST}"),
        json!({"app": "web"}),
    )
    .await;
    created(api, "POST", "/api/v1/apps", json!({"id": "streams"})).await;
    created(
        api,
        "PUT",
        "/api/v1/apps/streams/upstreams/default",
        json!({"protocol": "h2c"}),
    )
    .await;
    created(
        api,
        "POST",
        "/api/v1/apps/streams/upstreams/default/instances",
        json!({"address": grpc.to_string()}),
    )
    .await;
    created(
        api,
        "POST",
        "/api/v1/routes",
        json!({
            "id": "streams", "hostname": STREAM_HOST, "path_prefix": "/", "app": "streams",
            "rpc": {"descriptor_set": "builtin"},
            "resume": {"buffer_events": 1000, "ttl_secs": 300, "linger_secs": 60},
        }),
    )
    .await;
    created(
        api,
        "POST",
        "/api/v1/certificates",
        json!({"id": "drill", "cert_pem": cert.cert_pem, "key_pem": cert.key_pem}),
    )
    .await
}

/// Waits until the background lanes completed `n` more requests than `from`.
async fn progress(stats: &Stats, from: u64, n: u64, what: &str) {
    until(what, BOUND, || async {
        (stats.total_ok() >= from + n).then_some(())
    })
    .await;
}

/// Streams of every kind pinned on proxy `slot`, each past its first message or chunk
/// when this returns: the proxy is then stopped under them.
struct Pinned {
    tasks: Vec<JoinHandle<()>>,
    /// Set when a stream has ended: none may have before the SIGTERM.
    ended: Vec<(String, Arc<AtomicBool>)>,
}

/// Messages (chunks) of each pinned stream, [`PINNED_INTERVAL_MS`] apart: long enough
/// that each is still running when the proxy is stopped (the resumable one is started
/// first, its Node.js client taking longest to get going).
const PINNED_COUNT: u32 = 50;
const PINNED_INTERVAL_MS: u32 = 100;

async fn pin_streams(ctx: &Arc<Ctx>, slot: usize, resumed: Arc<AtomicU64>) -> Pinned {
    let mut tasks = Vec::new();
    let mut ended = Vec::new();
    // A resumable stream (the transport changes with the slot), started here; it must
    // resume on another proxy. Its first message is awaited last.
    let which = slot;
    let resumable = format!(
        "pinned resumable stream ({}) from draining proxy {slot}",
        TRANSPORTS[which % 3].0
    );
    let mut run = spawn_resumable(ctx, slot, which, PINNED_COUNT, PINNED_INTERVAL_MS);
    // Chunked answers over HTTP/1.1 (plain) and HTTP/2 (TLS).
    for kind in [Kind::H1Plain, Kind::H2Tls] {
        let mut sender = connect(ctx, kind, slot)
            .await
            .unwrap_or_else(|e| panic!("pinned {} to proxy {slot}: {e}", kind.name()));
        let id = format!("drill.pin-{}-{slot}.0000000", kind.name());
        let path = format!("/chunks?n={PINNED_COUNT}&ms={PINNED_INTERVAL_MS}");
        let mut req = client::request(
            &sender,
            "GET",
            kind.scheme(),
            WEB_HOST,
            &path,
            client::empty(),
        );
        req.headers_mut()
            .insert("x-request-id", id.parse().expect("id"));
        let resp = tokio::time::timeout(BOUND, sender.send(req))
            .await
            .unwrap_or_else(|_| panic!("pinned {} on proxy {slot}: no answer", kind.name()))
            .expect("pinned stream answer");
        assert_eq!(resp.status(), 200, "pinned {} on proxy {slot}", kind.name());
        let mut body = resp.into_body();
        let first = first_data(&mut body).await;
        let what = format!(
            "pinned {} stream {id} on draining proxy {slot}",
            kind.name()
        );
        let done = Arc::new(AtomicBool::new(false));
        ended.push((what.clone(), done.clone()));
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let rest = tokio::time::timeout(BODY_TIMEOUT, body.collect()).await;
            done.store(true, SeqCst);
            match rest {
                Ok(Ok(rest)) => {
                    let mut all = first.to_vec();
                    all.extend_from_slice(&rest.to_bytes());
                    let got = String::from_utf8_lossy(&all);
                    if got != expected_body(&path, &id) {
                        ctx.stats
                            .fail(format!("{what}: body cut or wrong: {got:?}"));
                    }
                }
                Ok(Err(e)) => ctx
                    .stats
                    .fail(format!("{what}: body failed: {}", error_chain(&e))),
                Err(_) => ctx
                    .stats
                    .fail(format!("{what}: not done within {BODY_TIMEOUT:?}")),
            }
        }));
    }
    // A native gRPC server stream over h2c.
    {
        let mut client = grpc_client(ctx, slot, false)
            .await
            .expect("pinned gRPC client");
        let count = PINNED_COUNT as i32;
        let mut req = tonic::Request::new(StreamRequest {
            count,
            interval_ms: PINNED_INTERVAL_MS as i32,
            payload_bytes: 16,
            usage_per_message: 0,
        });
        let id = format!("drill.pin-grpc-{slot}.0000000");
        req.metadata_mut()
            .insert("x-request-id", id.parse().expect("id"));
        let mut stream = tokio::time::timeout(BOUND, client.server_stream(req))
            .await
            .unwrap_or_else(|_| panic!("pinned gRPC stream on proxy {slot}: no answer"))
            .expect("pinned gRPC stream starts")
            .into_inner();
        let first = tokio::time::timeout(BOUND, stream.message())
            .await
            .unwrap_or_else(|_| panic!("pinned gRPC stream on proxy {slot}: no message"))
            .expect("first message")
            .expect("a message");
        let what = format!("pinned gRPC stream {id} on draining proxy {slot}");
        let done = Arc::new(AtomicBool::new(false));
        ended.push((what.clone(), done.clone()));
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let _client = client;
            let mut seqs = vec![first.seq];
            let end = loop {
                match tokio::time::timeout(BODY_TIMEOUT, stream.message()).await {
                    Ok(Ok(Some(m))) => seqs.push(m.seq),
                    Ok(Ok(None)) => break None,
                    Ok(Err(s)) => {
                        break Some(format!(
                            "ended {:?} {:?} after {seqs:?}",
                            s.code(),
                            s.message()
                        ));
                    }
                    Err(_) => break Some(format!("stalled after {seqs:?}")),
                }
            };
            done.store(true, SeqCst);
            match end {
                Some(why) => ctx.stats.fail(format!("{what}: {why}")),
                None if seqs != (0..count).collect::<Vec<_>>() => {
                    ctx.stats.fail(format!("{what}: received {seqs:?}"));
                }
                None => {}
            }
        }));
    }
    // The resumable stream's first message (its client has been starting meanwhile).
    run.wait_for("msg", BOUND)
        .await
        .unwrap_or_else(|e| panic!("{resumable}: {e}"));
    let done = Arc::new(AtomicBool::new(false));
    ended.push((resumable.clone(), done.clone()));
    let ctx = ctx.clone();
    tasks.push(tokio::spawn(async move {
        let end = finish_resumable(&ctx, run, &resumable, PINNED_COUNT).await;
        done.store(true, SeqCst);
        match end {
            Some(StreamEnd::Exact(resumes)) => {
                resumed.fetch_add(resumes, SeqCst);
                if resumes == 0 {
                    ctx.stats
                        .fail(format!("{resumable}: finished without resuming elsewhere"));
                }
            }
            Some(StreamEnd::NotStarted) => {
                ctx.stats.fail(format!("{resumable}: never started"));
            }
            None => {}
        }
    }));
    Pinned { tasks, ended }
}

/// The first non-empty data frame of `body`.
async fn first_data(body: &mut Incoming) -> Bytes {
    loop {
        match tokio::time::timeout(BOUND, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    return data;
                }
            }
            other => panic!("no first chunk: {other:?}"),
        }
    }
}

/// When each step happened, for the report (never asserted on).
struct Timeline {
    t0: Instant,
    lines: Vec<String>,
}

impl Timeline {
    fn mark(&mut self, what: &str) {
        let line = format!("{:>6.1}s {what}", self.t0.elapsed().as_secs_f64());
        eprintln!("drill: {line}");
        self.lines.push(line);
    }
}

/// Waits until background lanes are on proxy `k` too, whatever their rhythm.
async fn lanes_on(ctx: &Ctx, k: usize) {
    until(&format!("two lanes on proxy {k}"), BOUND, || async {
        (ctx.stats.on_slot[k].load(SeqCst) >= 2).then_some(())
    })
    .await;
}

/// Restarts the proxy of slot `k` as a rolling upgrade does: SIGTERM, its drain (the
/// `pinned` streams on it end meanwhile), a clean exit, a new process on the same
/// config and state dir, ready; then waits until clients' new connections reach it.
async fn restart_proxy(
    ctx: &Ctx,
    slot: &mut Slot,
    k: usize,
    pinned: Option<Pinned>,
    timeline: &mut Timeline,
) {
    let pinned = pinned.map_or_else(Vec::new, |p| {
        for (what, done) in &p.ended {
            if done.load(SeqCst) {
                ctx.stats
                    .fail(format!("{what}: ended before the SIGTERM (not exercised)"));
            }
        }
        p.tasks
    });
    let mut old = slot.current.take().expect("running");
    ctx.stats.draining[k].store(true, SeqCst);
    old.signal("TERM").expect("SIGTERM");
    timeline.mark(&format!("proxy {k}: SIGTERM"));
    let status = tokio::task::block_in_place(|| old.wait_exit(BOUND))
        .unwrap_or_else(|e| panic!("proxy {k} exits after its drain: {e}\n{}", old.logs()));
    ctx.stats.generation[k].fetch_add(1, SeqCst);
    ctx.stats.draining[k].store(false, SeqCst);
    assert!(status.success(), "proxy {k} exit: {status}\n{}", old.logs());
    // Everything in flight ended within the drain: nothing was cut at its deadline.
    if old.logs().contains("drain deadline reached") {
        ctx.stats.fail(format!(
            "proxy {k}'s drain reached its deadline ({DRAIN_MS} ms) with connections open:\n{}",
            drain_lines(&old)
        ));
    }
    timeline.mark(&format!("proxy {k}: exited after its drain ({status})"));
    eprint!("drill: proxy {k} drain log:\n{}", drain_lines(&old));
    slot.retired.push(old);
    for t in pinned {
        t.await.expect("pinned stream task");
    }
    let new = start_proxy(&slot.config);
    wait_ready(&new, &format!("restarted proxy {k} ready")).await;
    timeline.mark(&format!("proxy {k}: new process ready"));
    let served = ctx.stats.ok_by_slot[k].load(SeqCst);
    until(
        &format!("clients to reach restarted proxy {k}"),
        BOUND,
        || async { (ctx.stats.ok_by_slot[k].load(SeqCst) > served).then_some(()) },
    )
    .await;
    new.wait_metric("tollgate_http_requests_total", &[], BOUND, |v| v > 0.0)
        .await
        .expect("metrics");
    slot.current = Some(new);
}

/// The proxy's log lines of its drain, for the report.
fn drain_lines(p: &ProxyProcess) -> String {
    p.logs()
        .lines()
        .filter(|l| {
            l.contains("shutting down")
                || l.contains("drain")
                || l.contains("stopped")
                || l.contains("ERROR")
                || l.contains("WARN")
        })
        .take(20)
        .map(|l| format!("  {l}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restarts_of_proxies_control_and_postgres_drop_no_accepted_request() {
    let mut timeline = Timeline {
        t0: Instant::now(),
        lines: Vec::new(),
    };

    // PostgreSQL of our own, the control service on it, the upstreams.
    let mut pg = PrivateCluster::start().await.expect("private PostgreSQL");
    let store = pg.create_database("tollgate").await.expect("database");
    let key: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    let sealing = format!(
        "drill:{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key)
    );
    let mut cp = ControlProcess::start_on(&store, &[], &[("TOLLGATE_SEALING_KEYS", &sealing)])
        .await
        .expect("control service on PostgreSQL");
    let api = cp.client();
    let seen = Arc::new(Seen::default());
    let web = start_web_upstream(seen.clone()).await;
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc = grpc_listener.local_addr().expect("addr");
    tokio::spawn(serve_without_server_timer(
        grpc_listener,
        TestServiceImpl::new(),
    ));
    let cert = TestCert::new(&[WEB_HOST, STREAM_HOST]);
    let configured = configure(&api, web, grpc, &cert).await;
    timeline.mark("PostgreSQL, control service and tenants configured");

    // Three proxies following it, Redis shared for resumable streams.
    let redis = redis::shared();
    let prefix = redis::prefix("drill");
    let addrs: Vec<Addrs> = (0..PROXIES)
        .map(|_| Addrs {
            plain: SocketAddr::from(([127, 0, 0, 1], fixed_port())),
            tls: SocketAddr::from(([127, 0, 0, 1], fixed_port())),
        })
        .collect();
    let mut slots: Vec<Slot> = addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let state = tempfile::tempdir().expect("state dir");
            let node = format!("edge-{i}");
            let config = proxy_config(&cp, &node, a, state.path(), &redis.url(), &prefix);
            let current = Some(start_proxy(&config));
            Slot {
                config,
                _state: state,
                current,
                retired: Vec::new(),
            }
        })
        .collect();
    for (i, s) in slots.iter().enumerate() {
        wait_serving(
            s.proxy(),
            configured,
            &format!("proxy {i} to serve the tenants"),
        )
        .await;
        wait_ready(s.proxy(), &format!("proxy {i} ready")).await;
    }
    timeline.mark("three proxies serving");

    // The load.
    let ctx = Arc::new(Ctx {
        addrs: addrs.clone(),
        cert: cert.clone(),
        stats: Stats::default(),
        node: NodeClient::new("https://unused.test:1", &cert).expect("node client"),
    });
    let mut lanes: Vec<JoinHandle<()>> = Vec::new();
    for (i, (kind, streams)) in [
        (Kind::H1Plain, 1),
        (Kind::H1Tls, 1),
        (Kind::H1Plain, 1),
        (Kind::H2Tls, 3),
        (Kind::H2c, 3),
    ]
    .into_iter()
    .enumerate()
    {
        let lane = format!("{}{i}", kind.name());
        lanes.push(tokio::spawn(http_lane(
            ctx.clone(),
            kind,
            lane,
            i % PROXIES,
            streams,
        )));
    }
    lanes.push(tokio::spawn(grpc_lane(ctx.clone(), 1)));
    lanes.push(tokio::spawn(resumable_lane(ctx.clone(), 2)));
    lanes.push(tokio::spawn(resumable_lane(ctx.clone(), 0)));
    progress(&ctx.stats, 0, 60, "the load to warm up").await;
    timeline.mark("load running");

    // Rolling restart: each proxy in turn, under pinned streams and the load.
    let pinned_resumes = Arc::new(AtomicU64::new(0));
    for (k, slot) in slots.iter_mut().enumerate() {
        lanes_on(&ctx, k).await;
        let pinned = pin_streams(&ctx, k, pinned_resumes.clone()).await;
        ctx.stats.phase.store(1 + k, SeqCst);
        restart_proxy(&ctx, slot, k, Some(pinned), &mut timeline).await;
    }

    // The control service stops and comes back: the proxies keep serving.
    ctx.stats.phase.store(CONTROL_PHASE, SeqCst);
    cp.stop().await.expect("control service stops");
    timeline.mark("control service stopped");
    progress(
        &ctx.stats,
        ctx.stats.total_ok(),
        100,
        "requests served while the control service is down",
    )
    .await;
    for (i, s) in slots.iter().enumerate() {
        assert_eq!(
            readyz(s.proxy()).await,
            Some(200),
            "proxy {i} ready without control"
        );
    }
    // A proxy restarted meanwhile serves the config it saved in its state dir.
    lanes_on(&ctx, 0).await;
    restart_proxy(&ctx, &mut slots[0], 0, None, &mut timeline).await;
    cp.restart().await.expect("control service starts again");
    timeline.mark("control service back");
    for (i, s) in slots.iter().enumerate() {
        wait_serving(
            s.proxy(),
            configured,
            &format!("proxy {i} reconnected to control"),
        )
        .await;
    }
    timeline.mark("proxies reconnected to the control service");

    // PostgreSQL stops and comes back under the running control service.
    ctx.stats.phase.store(PG_PHASE, SeqCst);
    pg.stop().await.expect("PostgreSQL stops");
    timeline.mark("PostgreSQL stopped");
    // A write meanwhile may wait for the database (the pool retries within its bound):
    // off the drill's path; its answer is only reported.
    let down_write = {
        let api = api.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = api
                .try_api(
                    "POST",
                    "/api/v1/apps",
                    Some(&json!({"id": "while-pg-down"})),
                )
                .await;
            let answer = match answer {
                Ok((status, v)) => {
                    format!("{status}: {}", v.get("error").unwrap_or(&v["event_id"]))
                }
                Err(e) => e.to_string(),
            };
            format!("{answer} after {:.1}s", started.elapsed().as_secs_f64())
        })
    };
    progress(
        &ctx.stats,
        ctx.stats.total_ok(),
        100,
        "requests served while PostgreSQL is down",
    )
    .await;
    for (i, s) in slots.iter().enumerate() {
        assert_eq!(
            readyz(s.proxy()).await,
            Some(200),
            "proxy {i} ready without PostgreSQL"
        );
    }
    // (`pg_ctl stop -m fast` returned: the server is down and every session of the
    // control service was cut.)
    timeline.mark(&format!(
        "the write sent meanwhile is {}",
        if down_write.is_finished() {
            "answered"
        } else {
            "waiting for the database"
        }
    ));
    pg.start_again().await.expect("PostgreSQL starts again");
    timeline.mark("PostgreSQL back");

    // The control service reconnects by itself: a write goes through again.
    let route = json!({
        "id": "after-restarts", "hostname": WEB_HOST, "path_prefix": "/after",
        "rewrite_prefix": "/fast", "app": "web",
    });
    let written = until(
        "the control service to take writes again after PostgreSQL's restart",
        BOUND,
        || async {
            match api.try_api("POST", "/api/v1/routes", Some(&route)).await {
                Ok((201, v)) => v["event_id"].as_i64(),
                Ok((status, v)) => {
                    eprintln!("drill: write after PostgreSQL's restart: {status} {v}");
                    None
                }
                Err(e) => {
                    eprintln!("drill: write after PostgreSQL's restart: {e}");
                    None
                }
            }
        },
    )
    .await;
    timeline.mark("control service took a write again");
    // ...and it reaches every proxy: its cursor, and the route's behaviour.
    for (i, s) in slots.iter().enumerate() {
        wait_serving(
            s.proxy(),
            written,
            &format!("proxy {i} to converge on event {written}"),
        )
        .await;
        let id = format!("drill.converge.{i:07}");
        let mut sender = client::connect_plain(addrs[i].plain, false)
            .await
            .expect("connect");
        let mut req = client::request(&sender, "GET", "http", WEB_HOST, "/after", client::empty());
        req.headers_mut()
            .insert("x-request-id", id.parse().unwrap());
        let (status, _, body) = client::text(sender.send(req).await.expect("answer"))
            .await
            .expect("body");
        assert_eq!(status, 200, "the new route on proxy {i}: {body}");
        assert_eq!(body, plain_body(&id), "the new route on proxy {i}");
        // The access log names request ids: what tells accepted requests apart below.
        until(
            &format!("{id} in proxy {i}'s access log"),
            BOUND,
            || async { (!s.log_lines(&id).is_empty()).then_some(()) },
        )
        .await;
    }
    timeline.mark("every proxy converged on the write");
    ctx.stats.phase.store(AFTER_PHASE, SeqCst);
    progress(
        &ctx.stats,
        ctx.stats.total_ok(),
        20,
        "load after the restarts",
    )
    .await;

    // Stop the load; the lanes end their current exchange.
    ctx.stats.stop.store(true, SeqCst);
    for lane in lanes {
        tokio::time::timeout(Duration::from_secs(150), lane)
            .await
            .expect("lanes end")
            .expect("lane task");
    }
    timeline.mark("load stopped");
    eprintln!(
        "drill: a write sent while PostgreSQL was down answered {}",
        down_write.await.expect("write task")
    );
    let control_warnings: Vec<String> = cp
        .logs()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_string)
        .collect();
    eprintln!(
        "drill: control service warnings and errors ({}):\n  {}",
        control_warnings.len(),
        tail(&control_warnings.join("\n"), 15).replace('\n', "\n  ")
    );

    // Requests that got no answer: accepted (a failure) if a proxy logged it or the
    // upstream saw it, otherwise never read by a proxy.
    let unanswered = std::mem::take(&mut *ctx.stats.unanswered.lock().unwrap());
    let everything: String = slots.iter().map(Slot::everything).collect();
    let mut unanswered_errors: Vec<String> = Vec::new();
    for u in &unanswered {
        if seen.contains(&u.id) || everything.contains(&u.id) {
            let logged: Vec<String> = slots.iter().flat_map(|s| s.log_lines(&u.id)).collect();
            ctx.stats.fail(format!(
                "{} {} on proxy {}: accepted (upstream saw it: {}), then no answer: {}\n  proxy log: {logged:?}",
                u.lane,
                u.id,
                u.slot,
                seen.contains(&u.id),
                u.error
            ));
        } else {
            ctx.stats.not_accepted.fetch_add(1, SeqCst);
            if unanswered_errors.len() < 5 || u.error.starts_with("no answer head") {
                unanswered_errors.push(format!("{} on proxy {}: {}", u.lane, u.slot, u.error));
            }
        }
    }

    // The report.
    let s = &ctx.stats;
    eprintln!("drill: timeline\n  {}", timeline.lines.join("\n  "));
    for (phase, count) in PHASES.iter().zip(&s.ok_by_phase) {
        eprintln!(
            "drill: {phase:>22}: {} requests completed",
            count.load(SeqCst)
        );
    }
    eprintln!(
        "drill: accepted and complete {} ({} of them by a draining proxy); by proxy {:?}; refused connections {}; sent but never read by a proxy {} (e.g. {:?}; {} of them waited {HEAD_TIMEOUT:?} for nothing); native gRPC streams {}; resumable streams exact {} with {} resumes (pinned ones resumed {} times)",
        s.total_ok(),
        s.completed_draining.load(SeqCst),
        s.ok_by_slot
            .iter()
            .map(|c| c.load(SeqCst))
            .collect::<Vec<_>>(),
        s.refused.load(SeqCst),
        s.not_accepted.load(SeqCst),
        unanswered_errors,
        s.hung.load(SeqCst),
        s.grpc_streams_ok.load(SeqCst),
        s.streams_ok.load(SeqCst),
        s.stream_resumes.load(SeqCst),
        pinned_resumes.load(SeqCst),
    );
    let failures = s.failures.lock().unwrap().clone();
    if !failures.is_empty() {
        let logs: String = slots
            .iter()
            .enumerate()
            .map(|(i, s)| format!("=== proxy {i} ===\n{}", s.all_logs()))
            .collect();
        panic!(
            "{} accepted requests or streams failed:\n{}\n{logs}\n=== control ===\n{}",
            failures.len(),
            failures.join("\n"),
            tail(&cp.logs(), 80)
        );
    }
    assert!(
        s.total_ok() >= FLOOR,
        "only {} requests completed",
        s.total_ok()
    );
    for (phase, count) in PHASES.iter().zip(&s.ok_by_phase) {
        assert!(count.load(SeqCst) > 0, "nothing completed during {phase}");
    }
    assert!(
        s.streams_ok.load(SeqCst) >= 1,
        "no background resumable stream completed"
    );
    assert!(
        pinned_resumes.load(SeqCst) >= PROXIES as u64,
        "each pinned stream resumed"
    );
    for (i, s) in slots.iter().enumerate() {
        assert_eq!(
            s.proxy()
                .metric("tollgate_control_apply_errors_total", &[])
                .await
                .expect("metrics"),
            0.0,
            "proxy {i} refused a config"
        );
    }
    timeline.mark("done");
    drop(pg);
}
