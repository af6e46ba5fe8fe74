//! The proxy following a control service: a fake `EdgeFeed` on the real tonic server,
//! a fake HTTP control API on hyper, and the real `tollgate` binary in between.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tollgate_proto::control::v1::edge_feed_server::{EdgeFeed, EdgeFeedServer};
use tollgate_proto::control::v1::watch_response::Kind;
use tollgate_proto::control::v1::{
    Delta, EdgeMarker as WireMarker, Snapshot, WatchRequest, WatchResponse,
};
use tollgate_routing::{EdgeConfig, EdgeEvent, EndpointSpec};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, transport::server::TcpIncoming};

const TOKEN: &str = "secret-token";
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- upstreams

/// An HTTP/1.1 upstream answering `upstream <name>` to everything.
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                        "upstream {name}"
                    )))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------- edge model

fn event(model: &mut EdgeConfig, e: EdgeEvent) -> EdgeEvent {
    model.apply(&e).expect("test event applies");
    e
}

/// App `app` with its default cluster at `addr` and `<app>.test` bound to it.
fn add_app(model: &mut EdgeConfig, app: &str, addr: &str) -> Vec<EdgeEvent> {
    vec![
        event(
            model,
            EdgeEvent::AppCreated {
                app_id: app.into(),
                auth: None,
            },
        ),
        event(model, instance_added(app, addr)),
        event(
            model,
            EdgeEvent::HostnameBound {
                hostname: format!("{app}.test"),
                app_id: app.into(),
            },
        ),
    ]
}

fn instance_added(app: &str, addr: &str) -> EdgeEvent {
    EdgeEvent::InstanceAdded {
        app_id: app.into(),
        upstream: "default".into(),
        endpoint: EndpointSpec {
            address: addr.into(),
            weight: 1,
        },
    }
}

fn instance_removed(app: &str, addr: &str) -> EdgeEvent {
    EdgeEvent::InstanceRemoved {
        app_id: app.into(),
        upstream: "default".into(),
        address: addr.into(),
    }
}

fn one_app(app: &str, addr: SocketAddr) -> EdgeConfig {
    let mut model = EdgeConfig::default();
    add_app(&mut model, app, &addr.to_string());
    model
}

// ---------------------------------------------------------------- fake gRPC feed

/// One `Watch` call the fake feed received, and the sender feeding its stream.
struct Session {
    request: WatchRequest,
    authorization: Option<String>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
}

impl Session {
    /// A snapshot as a service without markers sends it.
    async fn snapshot(&self, event_id: i64, config: &EdgeConfig) {
        self.snapshot_marked(event_id, config, None, "").await;
    }

    /// A snapshot naming its last edge event (`(id, fingerprint)`) and why it is sent.
    async fn snapshot_marked(
        &self,
        event_id: i64,
        config: &EdgeConfig,
        last_edge: Option<(i64, &str)>,
        reason: &str,
    ) {
        let msg = WatchResponse {
            kind: Some(Kind::Snapshot(Snapshot {
                event_id,
                config_json: serde_json::to_vec(config).unwrap(),
                last_edge: last_edge.map(|(id, fp)| WireMarker {
                    event_id: id,
                    fingerprint: fp.into(),
                }),
                reason: reason.into(),
                config_encoding: String::new(),
            })),
        };
        self.tx.send(Ok(msg)).await.expect("stream open");
    }

    /// A delta as a service without fingerprints sends it.
    async fn delta(&self, event_id: i64, e: &EdgeEvent) {
        self.delta_marked(event_id, e, "").await;
    }

    async fn delta_marked(&self, event_id: i64, e: &EdgeEvent, fingerprint: &str) {
        self.delta_raw(
            event_id,
            e.event_type(),
            serde_json::to_vec(e).unwrap(),
            fingerprint,
        )
        .await;
    }

    async fn delta_raw(&self, event_id: i64, event_type: &str, json: Vec<u8>, fingerprint: &str) {
        let msg = WatchResponse {
            kind: Some(Kind::Delta(Delta {
                event_id,
                event_type: event_type.into(),
                event_json: json,
                fingerprint: fingerprint.into(),
            })),
        };
        self.tx.send(Ok(msg)).await.expect("stream open");
    }
}

struct Feed {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl EdgeFeed for Feed {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: tonic::Request<WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (tx, rx) = mpsc::channel(1024);
        let _ = self.sessions.send(Session {
            request: request.into_inner(),
            authorization,
            tx,
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

/// A real tonic `EdgeFeed` server whose streams the test writes to.
struct FakeFeed {
    addr: SocketAddr,
    sessions: mpsc::UnboundedReceiver<Session>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeFeed {
    async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind feed");
        let addr = listener.local_addr().unwrap();
        let (tx, sessions) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(EdgeFeedServer::new(Feed { sessions: tx }))
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        FakeFeed {
            addr,
            sessions,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `Watch` call.
    async fn session(&mut self) -> Session {
        tokio::time::timeout(WAIT, self.sessions.recv())
            .await
            .expect("no Watch call in time")
            .expect("feed stopped")
    }

    fn stop(self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------- fake HTTP API

#[derive(Default)]
struct ApiState {
    snapshot_id: i64,
    config: EdgeConfig,
    events: Vec<(i64, EdgeEvent)>,
    /// Path and query of every request, with its authorization header.
    seen: Vec<(String, Option<String>)>,
}

/// `GET /v1/snapshot` and `GET /v1/events?after=&limit=` on hyper.
async fn fake_api(state: Arc<Mutex<ApiState>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(api_answer(&state, &req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn api_answer(state: &Mutex<ApiState>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut s = state.lock().unwrap();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let pq = req.uri().path_and_query().unwrap().to_string();
    s.seen.push((pq, auth.clone()));
    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let mut r = Response::new(Full::new(Bytes::from_static(b"unauthorized")));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    let body = match req.uri().path() {
        "/v1/snapshot" => json!({"event_id": s.snapshot_id, "config": s.config}),
        "/v1/events" => {
            let query = req.uri().query().unwrap_or("");
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            let (after, limit) = (param("after"), param("limit").max(1));
            let events: Vec<Value> = s
                .events
                .iter()
                .filter(|(id, _)| *id > after)
                .take(limit as usize)
                .map(|(id, e)| json!({"event_id": id, "event_type": e.event_type(), "event": e}))
                .collect();
            let last = s.events.last().map(|(id, _)| *id).unwrap_or(s.snapshot_id);
            json!({"events": events, "last_event_id": last})
        }
        _ => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
    };
    Response::new(Full::new(Bytes::from(body.to_string())))
}

// ---------------------------------------------------------------- the proxy

/// The `tollgate` binary run with a temp config; killed when dropped.
struct Proxy {
    child: Child,
    dir: PathBuf,
    http: SocketAddr,
    admin: SocketAddr,
}

fn config_text(control: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "http"
listen = "127.0.0.1:0"

[control]
{control}
"#
    )
}

/// `[control]` lines for a feed and/or an HTTP API, with fast retries.
fn control_table(grpc: Option<&str>, http: Option<&str>) -> String {
    let mut t = String::new();
    if let Some(g) = grpc {
        t.push_str(&format!("grpc_url = \"{g}\"\n"));
    }
    if let Some(h) = http {
        t.push_str(&format!("http_url = \"{h}\"\n"));
    }
    t.push_str(&format!(
        "token = \"{TOKEN}\"\nnode_id = \"test-node\"\nstate_dir = \"state\"\npoll_interval_ms = 100\nreconnect_max_ms = 400\n"
    ));
    t
}

impl Proxy {
    fn start(dir: &Path, control: &str) -> Proxy {
        let cfg = dir.join("tollgate.toml");
        std::fs::write(&cfg, config_text(control)).unwrap();
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("proxy.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["proxy", "--config"])
            .arg(&cfg)
            .arg("--ready-file")
            .arg(&ready)
            .args(["--poll-ms", "200"])
            .env("RUST_LOG", "info")
            .env_remove("TOLLGATE_CONTROL_TOKEN")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tollgate");
        let mut child = child;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: Value = serde_json::from_str(&text).unwrap();
                return Proxy {
                    child,
                    dir: dir.to_path_buf(),
                    http: v["listeners"]["http"].as_str().unwrap().parse().unwrap(),
                    admin: v["admin"].as_str().unwrap().parse().unwrap(),
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("proxy exited ({status}): {}", logs(dir));
            }
            assert!(Instant::now() < deadline, "proxy not ready: {}", logs(dir));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        logs(&self.dir)
    }

    async fn get(&self, host: &str) -> (u16, String) {
        http_get(self.http, host, "/").await
    }

    async fn control(&self) -> Value {
        let (status, body) = http_get(self.admin, "admin", "/control").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).expect("control JSON")
    }

    async fn metric(&self, name_and_labels: &str) -> f64 {
        let (_, body) = http_get(self.admin, "admin", "/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `host` answers 200 with `expected` in the body.
    async fn wait_routes(&self, host: &str, expected: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = self.get(host).await;
            if status == 200 && body.contains(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{host} answers {status} {body:?}, expected {expected:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the admin view's control cursor reaches `event_id`.
    async fn wait_cursor(&self, event_id: i64) {
        self.wait_control(&format!("cursor at {event_id}"), |c| {
            c["event_id"] == event_id
        })
        .await;
    }

    /// Waits until the cursor is at `event_id` and the config built from it serves (the
    /// cursor moves before the config built from it is swapped in).
    async fn wait_served(&self, event_id: i64) {
        self.wait_control(&format!("serving {event_id}"), |c| {
            c["event_id"] == event_id && c["serving_event_id"] == event_id
        })
        .await;
    }

    /// Waits until the admin view's control section satisfies `done`.
    async fn wait_control(&self, what: &str, done: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let c = self.control().await;
            if done(&c) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "control {c}, expected {what}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_metric(&self, name_and_labels: &str, at_least: f64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.metric(name_and_labels).await;
            if v >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name_and_labels} = {v}, expected >= {at_least}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn logs(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default()
}

/// A plain HTTP/1.1 GET with `Connection: close`; (0, error) when it fails.
async fn http_get(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return (0, e.to_string()),
        Err(_) => return (0, "timed out".into()),
    };
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The persisted state file's event id, if the file parses.
fn persisted_event_id(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join("state/edge-snapshot.json")).ok()?;
    serde_json::from_str::<Value>(&text).ok()?["event_id"].as_i64()
}

async fn wait_persisted(dir: &Path, event_id: i64) {
    let deadline = Instant::now() + WAIT;
    while persisted_event_id(dir) != Some(event_id) {
        assert!(Instant::now() < deadline, "state file not at {event_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn snapshot_applies_then_deltas_in_order() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let mut feed = FakeFeed::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &control_table(Some(&feed.url()), None));

    let s = feed.session().await;
    assert_eq!(s.request.after_event_id, 0);
    assert_eq!(s.request.node_id, "test-node");
    assert_eq!(s.authorization.as_deref(), Some("Bearer secret-token"));
    let mut model = one_app("acme", a);
    s.snapshot(10, &model).await;
    proxy.wait_routes("acme.test", "upstream a").await;
    assert_eq!(proxy.get("beta.test").await.0, 404);

    // A burst: each event needs the ones before it (the app before its hostname).
    let mut events = add_app(&mut model, "beta", &b.to_string());
    events.push(event(&mut model, instance_removed("acme", &a.to_string())));
    events.push(event(&mut model, instance_added("acme", &b.to_string())));
    for (i, e) in events.iter().enumerate() {
        s.delta(11 + i as i64, e).await;
    }
    proxy.wait_cursor(15).await;
    proxy.wait_routes("beta.test", "upstream b").await;
    proxy.wait_routes("acme.test", "upstream b").await;

    let c = proxy.control().await;
    assert_eq!(c["serving_event_id"], 15, "{c}");
    assert_eq!(c["connected"], true);
    // `/control` is `/config`'s `control` object, with the config version.
    let (_, body) = http_get(proxy.admin, "admin", "/config").await;
    let view: Value = serde_json::from_str(&body).expect("config JSON");
    let mut expected = view["control"].clone();
    expected["version"] = view["version"].clone();
    assert_eq!(c, expected);
    assert_eq!(c["transport"], "grpc");
    assert_eq!(c["node_id"], "test-node");
    assert_eq!(
        proxy
            .metric("tollgate_control_updates_total{kind=\"snapshot\"}")
            .await,
        1.0
    );
    assert_eq!(
        proxy
            .metric("tollgate_control_updates_total{kind=\"delta\"}")
            .await,
        5.0
    );
    assert_eq!(proxy.metric("tollgate_control_last_event_id").await, 15.0);
    assert_eq!(proxy.metric("tollgate_control_connected").await, 1.0);
    // The config version moved with the swaps (1 at start, then snapshot and deltas).
    assert!(proxy.metric("tollgate_config_version").await >= 3.0);
    wait_persisted(dir.path(), 15).await;

    // Editing the file does not touch routing: it only says so.
    let cfg = dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("# edited\n{text}")).unwrap();
    let deadline = Instant::now() + WAIT;
    while !proxy.logs().contains("routing is controlled remotely") {
        assert!(Instant::now() < deadline, "{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.wait_routes("beta.test", "upstream b").await;
    for result in ["ok", "error"] {
        let name = format!("tollgate_config_reloads_total{{result=\"{result}\"}}");
        assert_eq!(proxy.metric(&name).await, 0.0, "{name}");
    }
}

#[tokio::test]
async fn invalid_delta_keeps_last_good_config_and_structural_error_resyncs() {
    let a = upstream("a").await;
    let mut feed = FakeFeed::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &control_table(Some(&feed.url()), None));
    let s = feed.session().await;
    let model = one_app("acme", a);
    s.snapshot(5, &model).await;
    proxy.wait_routes("acme.test", "upstream a").await;
    wait_persisted(dir.path(), 5).await;

    // Structurally fine, but the address has no port: the result does not validate.
    s.delta(6, &instance_added("acme", "no-port-here")).await;
    proxy
        .wait_metric(
            "tollgate_control_apply_errors_total{kind=\"validation\"}",
            1.0,
        )
        .await;
    proxy.wait_cursor(6).await;
    let c = proxy.control().await;
    assert_eq!(c["serving_event_id"], 5, "{c}");
    proxy.wait_routes("acme.test", "upstream a").await;
    // Only good configs are persisted.
    assert_eq!(persisted_event_id(dir.path()), Some(5));

    // A later event fixes it: the model advanced through the refused one.
    s.delta(7, &instance_removed("acme", "no-port-here")).await;
    proxy.wait_cursor(7).await;
    let deadline = Instant::now() + WAIT;
    while proxy.control().await["serving_event_id"] != 7 {
        assert!(Instant::now() < deadline, "{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_persisted(dir.path(), 7).await;

    // An event that does not fit the model: the proxy drops the stream and asks
    // for a fresh snapshot.
    s.delta(
        8,
        &EdgeEvent::RouteDeleted {
            route_id: "missing".into(),
        },
    )
    .await;
    let s2 = feed.session().await;
    assert_eq!(s2.request.after_event_id, 0, "resync asks for a snapshot");
    proxy
        .wait_metric(
            "tollgate_control_apply_errors_total{kind=\"structural\"}",
            1.0,
        )
        .await;
    s2.snapshot(8, &model).await;
    proxy.wait_cursor(8).await;
    proxy.wait_routes("acme.test", "upstream a").await;

    // Undecodable JSON right after that fresh snapshot: another resync cannot help,
    // so the event is skipped and the stream kept.
    s2.delta_raw(9, "app_created", b"{not json".to_vec(), "")
        .await;
    proxy
        .wait_metric("tollgate_control_apply_errors_total{kind=\"decode\"}", 1.0)
        .await;
    proxy.wait_cursor(9).await;
    s2.delta(10, &instance_removed("acme", &a.to_string()))
        .await;
    proxy.wait_cursor(10).await;
    let deadline = Instant::now() + WAIT;
    while proxy.get("acme.test").await.0 != 503 {
        assert!(Instant::now() < deadline, "{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reconnect_resumes_from_the_cursor() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let mut feed = FakeFeed::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &control_table(Some(&feed.url()), None));
    let s = feed.session().await;
    let mut model = one_app("acme", a);
    s.snapshot(20, &model).await;
    let e21 = event(&mut model, instance_added("acme", &b.to_string()));
    s.delta(21, &e21).await;
    proxy.wait_cursor(21).await;

    // The service drops the stream.
    drop(s);
    let s = feed.session().await;
    assert_eq!(s.request.after_event_id, 21, "resumes after the cursor");
    // Deltas only, no snapshot; a resent event is ignored.
    s.delta(21, &e21).await;
    let e22 = event(&mut model, instance_removed("acme", &a.to_string()));
    s.delta(22, &e22).await;
    proxy.wait_cursor(22).await;
    for _ in 0..4 {
        proxy.wait_routes("acme.test", "upstream b").await;
    }
    assert_eq!(
        proxy
            .metric("tollgate_control_apply_errors_total{kind=\"structural\"}")
            .await,
        0.0
    );

    // Dropped again; this time the service answers with a snapshot anyway.
    drop(s);
    let s = feed.session().await;
    assert_eq!(s.request.after_event_id, 22);
    s.snapshot(30, &one_app("other", a)).await;
    proxy.wait_cursor(30).await;
    proxy.wait_routes("other.test", "upstream a").await;
    assert_eq!(proxy.get("acme.test").await.0, 404);
}

/// The marker protocol against a service that sends fingerprints: a reconnect names the
/// last edge event applied; a `log_diverged` snapshot replaces the model (even below the
/// cursor) and is counted; resuming after a marker below the cursor applies the new
/// events between the two and ignores what the marker covers; the marker is persisted.
#[tokio::test]
async fn reconnect_names_the_last_edge_event_and_follows_a_restored_log() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let mut feed = FakeFeed::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &control_table(Some(&feed.url()), None));
    let diverged = "tollgate_control_resyncs_total{reason=\"log_diverged\"}";

    let s = feed.session().await;
    assert_eq!(s.request.last_edge, None, "nothing applied yet");
    let mut model = one_app("acme", a);
    s.snapshot_marked(20, &model, Some((18, "ff18")), "initial")
        .await;
    let e21 = event(&mut model, instance_added("acme", &b.to_string()));
    s.delta_marked(21, &e21, "ff21").await;
    proxy.wait_cursor(21).await;
    assert_eq!(proxy.metric(diverged).await, 0.0);

    // Reconnect: the cursor and the last edge event, by id and fingerprint.
    drop(s);
    let s = feed.session().await;
    assert_eq!(s.request.after_event_id, 21);
    assert_eq!(
        s.request.last_edge,
        Some(WireMarker {
            event_id: 21,
            fingerprint: "ff21".into()
        })
    );
    // The service's log does not hold event 21 as the proxy knew it: a snapshot at an
    // id below the cursor, which replaces the model all the same.
    let restored = one_app("other", a);
    s.snapshot_marked(19, &restored, Some((17, "ee17")), "log_diverged")
        .await;
    proxy.wait_cursor(19).await;
    proxy.wait_routes("other.test", "upstream a").await;
    assert_eq!(proxy.get("acme.test").await.0, 404);
    proxy.wait_metric(diverged, 1.0).await;
    assert!(proxy.logs().contains("restored from a backup or replaced"));

    // Resumed after the marker (17), the service sends a new event 18, below the
    // cursor (19): it applies. A resend of the marker's own event is ignored.
    drop(s);
    let s = feed.session().await;
    assert_eq!(s.request.after_event_id, 19);
    assert_eq!(s.request.last_edge.as_ref().map(|m| m.event_id), Some(17));
    let mut model = restored;
    let e17 = instance_added("other", "127.0.0.1:9");
    s.delta_marked(17, &e17, "ee17").await;
    let e18 = event(&mut model, instance_removed("other", &a.to_string()));
    let e19 = event(&mut model, instance_added("other", &b.to_string()));
    s.delta_marked(18, &e18, "dd18").await;
    s.delta_marked(19, &e19, "dd19").await;
    proxy.wait_cursor(19).await;
    proxy.wait_routes("other.test", "upstream b").await;
    assert_eq!(
        proxy
            .metric("tollgate_control_apply_errors_total{kind=\"structural\"}")
            .await,
        0.0,
        "{}",
        proxy.logs()
    );
    assert_eq!(proxy.metric(diverged).await, 1.0);
    // 21, 18 and 19: not the resent 17.
    assert_eq!(
        proxy
            .metric("tollgate_control_updates_total{kind=\"delta\"}")
            .await,
        3.0
    );

    // The marker is persisted with the cursor, and sent again.
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(dir.path().join("state/edge-snapshot.json"))
            .unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        if v["last_edge"] == json!({"event_id": 19, "fingerprint": "dd19"}) {
            break;
        }
        assert!(Instant::now() < deadline, "state file: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(s);
    let s = feed.session().await;
    assert_eq!(
        (
            s.request.after_event_id,
            s.request.last_edge.map(|m| m.event_id)
        ),
        (19, Some(19))
    );
}

#[tokio::test]
async fn persisted_snapshot_serves_while_the_feed_is_down() {
    let a = upstream("a").await;
    let mut feed = FakeFeed::start().await;
    let feed_addr = feed.addr;
    let dir = tempfile::tempdir().unwrap();
    let control = control_table(Some(&feed.url()), None);
    let proxy = Proxy::start(dir.path(), &control);
    let s = feed.session().await;
    s.snapshot(40, &one_app("acme", a)).await;
    proxy.wait_routes("acme.test", "upstream a").await;
    wait_persisted(dir.path(), 40).await;
    drop(proxy);
    drop(s);
    feed.stop();

    // The feed is down: the restarted proxy serves the persisted config from the start.
    let proxy = Proxy::start(dir.path(), &control);
    let (status, body) = proxy.get("acme.test").await;
    assert_eq!((status, body.contains("upstream a")), (200, true), "{body}");
    let c = proxy.control().await;
    assert_eq!(c["event_id"], 40, "{c}");
    assert_eq!(c["connected"], false);
    assert!(proxy.logs().contains("persisted control snapshot"));

    // The feed comes back: the proxy resumes after the persisted cursor.
    let mut feed = FakeFeed::start_on(feed_addr).await;
    let s = feed.session().await;
    assert_eq!(s.request.after_event_id, 40);
    s.delta(
        41,
        &EdgeEvent::AppSuspended {
            app_id: "acme".into(),
        },
    )
    .await;
    proxy.wait_served(41).await;
    assert_eq!(proxy.get("acme.test").await.0, 503);
}

#[tokio::test]
async fn corrupt_state_file_is_ignored() {
    let a = upstream("a").await;
    let mut feed = FakeFeed::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state/edge-snapshot.json"),
        "{\"event_id\": 3, \"con",
    )
    .unwrap();
    let proxy = Proxy::start(dir.path(), &control_table(Some(&feed.url()), None));
    assert_eq!(proxy.get("acme.test").await.0, 404, "nothing routed yet");
    assert_eq!(
        proxy
            .metric("tollgate_control_apply_errors_total{kind=\"state_file\"}")
            .await,
        1.0
    );
    let s = feed.session().await;
    assert_eq!(s.request.after_event_id, 0);
    s.snapshot(50, &one_app("acme", a)).await;
    proxy.wait_routes("acme.test", "upstream a").await;
    wait_persisted(dir.path(), 50).await;
}

#[tokio::test]
async fn http_polling_while_grpc_is_down_then_back_to_grpc() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let grpc_addr = dead_addr().await;
    let mut model = one_app("acme", a);
    let api = Arc::new(Mutex::new(ApiState {
        snapshot_id: 60,
        config: model.clone(),
        ..Default::default()
    }));
    let api_addr = fake_api(api.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        dir.path(),
        &control_table(
            Some(&format!("http://{grpc_addr}")),
            Some(&format!("http://{api_addr}")),
        ),
    );
    proxy.wait_routes("acme.test", "upstream a").await;
    let c = proxy.control().await;
    assert_eq!(c["transport"], "http", "{c}");
    assert_eq!(c["event_id"], 60);

    // Events appear in the log and are polled, in order, as one batch.
    {
        let mut s = api.lock().unwrap();
        let mut events = add_app(&mut model, "beta", &b.to_string());
        events.push(event(&mut model, instance_removed("acme", &a.to_string())));
        events.push(event(&mut model, instance_added("acme", &b.to_string())));
        s.events = (61..).zip(events).collect();
    }
    proxy.wait_cursor(65).await;
    proxy.wait_routes("beta.test", "upstream b").await;
    proxy.wait_routes("acme.test", "upstream b").await;
    // The next poll asks after the new cursor.
    let deadline = Instant::now() + WAIT;
    while !api
        .lock()
        .unwrap()
        .seen
        .iter()
        .any(|(p, _)| p.starts_with("/v1/events?after=65&"))
    {
        assert!(Instant::now() < deadline, "{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let s = api.lock().unwrap();
        assert!(
            s.seen
                .iter()
                .all(|(_, auth)| auth.as_deref() == Some("Bearer secret-token"))
        );
        let snapshots = s.seen.iter().filter(|(p, _)| p == "/v1/snapshot").count();
        assert_eq!(snapshots, 1, "one snapshot, then events: {:?}", s.seen);
        assert!(
            s.seen
                .iter()
                .any(|(p, _)| p.starts_with("/v1/events?after=60&"))
        );
    }

    // gRPC comes back: the proxy switches to it, resuming from the cursor.
    let mut feed = FakeFeed::start_on(grpc_addr).await;
    let s = feed.session().await;
    assert_eq!(s.request.after_event_id, 65);
    let deadline = Instant::now() + WAIT;
    while proxy.control().await["transport"] != "grpc" {
        assert!(Instant::now() < deadline, "{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.delta(
        66,
        &EdgeEvent::HostnameUnbound {
            hostname: "beta.test".into(),
        },
    )
    .await;
    proxy.wait_served(66).await;
    assert_eq!(proxy.get("beta.test").await.0, 404);
}

#[test]
fn control_with_file_routing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tollgate.toml");
    // Top-level tables first, so `[[apps]]` is not read as part of `[control]`.
    let text = format!(
        "[[apps]]\nid = \"acme\"\nupstreams.default.endpoints = []\n{}",
        config_text(&control_table(Some("http://127.0.0.1:1"), None))
    );
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["proxy", "--config"])
        .arg(&cfg)
        .arg("--check")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("[control] is set") && stderr.contains("apps"),
        "{stderr}"
    );
}
