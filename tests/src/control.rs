//! Runs `tollgate control` as a child process on a SQLite store in a temp folder (or on
//! a store URL of the test's, such as a PostgreSQL database: [`ControlProcess::start_on`]),
//! and talks to its HTTP API with the admin token.
//!
//! The service can be stopped and started again on the same store and the same ports,
//! so proxies following it reconnect to the URLs they were given.

use crate::BoxError;
use crate::client::{self, full};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Admin token of every test control service (the service wants at least 16 characters).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// Feed-only token the proxies use.
pub const PROXY_TOKEN: &str = "test-proxy-token-9876543210";

/// Bound on one API exchange; generous for a loaded machine.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the service becoming ready (store open, log replayed, listeners bound).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls the control service's HTTP API with the admin token; cheap to clone, so a
/// background task can keep writing while the test restarts the service.
#[derive(Clone, Debug)]
pub struct ApiClient {
    pub addr: SocketAddr,
    token: String,
}

impl ApiClient {
    pub fn new(addr: SocketAddr, token: &str) -> Self {
        ApiClient {
            addr,
            token: token.to_string(),
        }
    }

    /// Sends `method path` with `body` as JSON; returns the status and the JSON answer
    /// (`Null` for an empty body, a string for one that is not JSON). Errors only when
    /// the exchange itself fails (service down, connection cut, timeout).
    pub async fn try_api(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), BoxError> {
        let exchange = async {
            let mut s = client::connect_plain(self.addr, false).await?;
            let payload = match body {
                Some(v) => full(serde_json::to_vec(v)?),
                None => client::empty(),
            };
            let mut req = client::request(&s, method, "http", "control", path, payload);
            let h = req.headers_mut();
            h.insert("authorization", format!("Bearer {}", self.token).parse()?);
            if body.is_some() {
                h.insert("content-type", "application/json".parse()?);
            }
            let (status, _, text) = client::text(s.send(req).await?).await?;
            let json = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            Ok::<_, BoxError>((status, json))
        };
        tokio::time::timeout(API_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{method} {path}: no answer within {API_TIMEOUT:?}"))?
    }

    /// As [`Self::try_api`], panicking when the exchange fails.
    pub async fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.try_api(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A write that must succeed (2xx); returns the answer's `event_id`.
    pub async fn write(&self, method: &str, path: &str, body: Option<&Value>) -> i64 {
        let (status, v) = self.api(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {v}"
        );
        v["event_id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{method} {path}: no event_id in {v}"))
    }

    /// The projection's cursor (`GET /api/v1/version` `event_id`).
    pub async fn event_id(&self) -> i64 {
        let (status, v) = self.api("GET", "/api/v1/version", None).await;
        assert_eq!(status, 200, "{v}");
        v["event_id"].as_i64().expect("event_id")
    }
}

/// A running (or stopped) control service; killed when dropped.
pub struct ControlProcess {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// The HTTP API address (kept across restarts).
    pub http: SocketAddr,
    /// The gRPC feed address (kept across restarts).
    pub grpc: SocketAddr,
    client: ApiClient,
    /// Flags added to every start (e.g. `--acme-directory`).
    args: Vec<String>,
    /// `--store` when not the SQLite file in `dir`.
    store: Option<String>,
    /// Environment variables set on every start (e.g. `TOLLGATE_SEALING_KEYS`).
    env: Vec<(String, String)>,
}

impl ControlProcess {
    /// Starts a service on a new SQLite store, on ephemeral ports.
    pub async fn start() -> Result<Self, BoxError> {
        Self::start_with(&[]).await
    }

    /// [`Self::start`] with extra flags, kept for restarts.
    pub async fn start_with(args: &[String]) -> Result<Self, BoxError> {
        Self::launch(None, args, &[]).await
    }

    /// A service on the store at `store` (`postgres://...`) with extra flags and
    /// environment variables, all kept for restarts. PostgreSQL needs
    /// `TOLLGATE_SEALING_KEYS` (control/API.md, "Private keys at rest").
    pub async fn start_on(
        store: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Self, BoxError> {
        Self::launch(Some(store.to_string()), args, env).await
    }

    async fn launch(
        store: Option<String>,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let any: SocketAddr = "127.0.0.1:0".parse()?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let store_url = store.clone().unwrap_or_else(|| store_url(dir.path()));
        let (child, http, grpc) = spawn(dir.path(), &store_url, any, any, args, &env).await?;
        Ok(ControlProcess {
            child: Some(child),
            dir,
            http,
            grpc,
            client: ApiClient::new(http, ADMIN_TOKEN),
            args: args.to_vec(),
            store,
            env,
        })
    }

    /// The store's URL.
    pub fn store_url(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| store_url(self.dir.path()))
    }

    /// An API client with the admin token (valid across restarts: same port).
    pub fn client(&self) -> ApiClient {
        self.client.clone()
    }

    /// See [`ApiClient::api`].
    pub async fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.client.api(method, path, body).await
    }

    /// See [`ApiClient::write`].
    pub async fn write(&self, method: &str, path: &str, body: Option<&Value>) -> i64 {
        self.client.write(method, path, body).await
    }

    /// See [`ApiClient::event_id`].
    pub async fn event_id(&self) -> i64 {
        self.client.event_id().await
    }

    /// `grpc_url`, `http_url`, the proxy token, `node_id` and `state_dir` for a
    /// proxy's `[control]` table, with fast polling and reconnects. Append it last: it
    /// is a table.
    pub fn proxy_table(&self, node_id: &str, state_dir: &Path) -> String {
        format!(
            "[control]\ngrpc_url = \"http://{}\"\nhttp_url = \"http://{}\"\ntoken = \"{PROXY_TOKEN}\"\n\
             node_id = \"{node_id}\"\nstate_dir = \"{}\"\npoll_interval_ms = 100\nreconnect_max_ms = 500\nusage_flush_interval_ms = 200\n",
            self.grpc,
            self.http,
            state_dir.display()
        )
    }

    /// Appends `payload` (an event JSON with its `type`) to aggregate
    /// `kind/id` directly in the service's SQLite log (not for [`Self::start_on`]), as a newer service or a
    /// hand-edited log would; returns its event id.
    pub async fn append_raw(&self, kind: &str, id: &str, payload: &Value) -> i64 {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&self.store_url())
            .await
            .expect("open the event log");
        let seq: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(aggregate_seq), 0) + 1 FROM events \
             WHERE aggregate_type = ? AND aggregate_id = ?",
        )
        .bind(kind)
        .bind(id)
        .fetch_one(&mut db)
        .await
        .expect("aggregate version");
        let event_type = payload["type"].as_str().expect("event type").to_string();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        sqlx::query(
            "INSERT INTO events (occurred_at, aggregate_type, aggregate_id, aggregate_seq, \
             event_type, actor_id, payload) VALUES (?, ?, ?, ?, ?, 'test', ?)",
        )
        .bind(now_ms)
        .bind(kind)
        .bind(id)
        .bind(seq)
        .bind(event_type)
        .bind(payload.to_string())
        .execute(&mut db)
        .await
        .expect("append the event");
        sqlx::query_scalar("SELECT MAX(event_id) FROM events")
            .fetch_one(&mut db)
            .await
            .expect("last event id")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGTERM, then waits (bounded) for the graceful stop; returns the exit status.
    pub async fn stop(&mut self) -> Result<ExitStatus, BoxError> {
        let mut child = self
            .child
            .take()
            .ok_or("the control service is not running")?;
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        if !status.success() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("kill -TERM failed".into());
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(s) = child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the control service did not stop within {READY_TIMEOUT:?} of SIGTERM\n{}",
                    self.logs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: a crash, no graceful stop (the checkpoint is not saved).
    pub fn kill(&mut self) -> Result<(), BoxError> {
        let mut child = self
            .child
            .take()
            .ok_or("the control service is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the service again on the same store and the same two ports. A port taken
    /// meanwhile by something else is retried for a while, then reported.
    pub async fn restart(&mut self) -> Result<(), BoxError> {
        if self.child.is_some() {
            return Err("the control service is still running: stop() it first".into());
        }
        let (child, http, grpc) = spawn(
            self.dir.path(),
            &self.store_url(),
            self.http,
            self.grpc,
            &self.args,
            &self.env,
        )
        .await?;
        self.child = Some(child);
        debug_assert_eq!((http, grpc), (self.http, self.grpc));
        Ok(())
    }

    /// Everything the service logged so far, over all its runs.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "{}{}",
            read("control.log").unwrap_or_default(),
            read("control.err").unwrap_or_default()
        )
    }
}

fn store_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("control.db").display())
}

fn append(path: PathBuf) -> Result<File, BoxError> {
    Ok(OpenOptions::new().create(true).append(true).open(path)?)
}

/// Starts the binary on `store` with `http`/`grpc` (port 0 for any), its files in
/// `dir`, and waits for its ready file. When fixed ports are asked for and one is busy,
/// tries again until the deadline, then fails naming the port.
async fn spawn(
    dir: &Path,
    store: &str,
    http: SocketAddr,
    grpc: SocketAddr,
    args: &[String],
    env: &[(String, String)],
) -> Result<(Child, SocketAddr, SocketAddr), BoxError> {
    let ready = dir.join("ready.json");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let _ = std::fs::remove_file(&ready);
        let err_path = dir.join("control.err");
        let err_start = std::fs::metadata(&err_path).map(|m| m.len()).unwrap_or(0);
        let mut child = Command::new(crate::proxy::binary())
            .arg("control")
            .arg("--store")
            .arg(store)
            .arg("--listen")
            .arg(http.to_string())
            .arg("--grpc-listen")
            .arg(grpc.to_string())
            .arg("--admin-token")
            .arg(ADMIN_TOKEN)
            .arg("--proxy-token")
            .arg(PROXY_TOKEN)
            .arg("--ready-file")
            .arg(&ready)
            .args(["--poll-ms", "200"])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("TOLLGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(append(dir.join("control.log"))?))
            .stderr(Stdio::from(append(err_path.clone())?))
            .spawn()?;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: Value = serde_json::from_str(&text)?;
                let bound_http: SocketAddr = v["http"].as_str().ok_or("ready: http")?.parse()?;
                let bound_grpc: SocketAddr = v["grpc"].as_str().ok_or("ready: grpc")?.parse()?;
                return Ok((child, bound_http, bound_grpc));
            }
            if let Some(status) = child.try_wait()? {
                let all = std::fs::read_to_string(&err_path).unwrap_or_default();
                let this_run = all.get(err_start as usize..).unwrap_or(&all).to_string();
                let busy = this_run.contains("in use") && this_run.contains("binding");
                if busy && http.port() != 0 && Instant::now() < deadline {
                    // The port may be held a moment longer (e.g. by a client of the
                    // last run); try again.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
                return Err(if busy {
                    format!(
                        "control service cannot bind its previous ports (HTTP {http}, gRPC {grpc}): \
                         taken by another process ({status}): {this_run}"
                    )
                } else {
                    format!("control service exited early ({status}): {this_run}")
                }
                .into());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "control service did not become ready within {READY_TIMEOUT:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- control service log ---\n{}", self.logs());
        }
    }
}
