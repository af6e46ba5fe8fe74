//! Real Connect and gRPC-Web clients for the end-to-end tests, from `tests/connect/`:
//! `@connectrpc/connect-node` run by `node tests/connect/client.mjs` ([`NodeClient`]),
//! and `@connectrpc/connect-web` in Debian's headless chromium, driven by
//! `node tests/connect/browser.mjs` ([`run_browser`]) on a page that [`PageServer`] serves
//! over TLS from its own origin.
//!
//! The clients build `TestService` at run time from [`tollgate_proto::FILE_DESCRIPTOR_SET`],
//! written to a temp file, so nothing is generated. The npm dependencies are installed by
//! `scripts/test` ([`NPM_INSTALL`]); chromium by `scripts/test` too. Without node, the
//! packages or chromium the calls fail with a message saying so: tests never skip.

use crate::BoxError;
use crate::tls::TestCert;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_rustls::TlsAcceptor;

/// The command that installs the clients' npm dependencies.
pub const NPM_INSTALL: &str = "npm ci --prefix tests/connect --no-audit --no-fund";

/// Bound on one client run (a 10,000-message JSON stream on a loaded machine included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(180);

/// Bound on one browser run (launch, every page, close).
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);

/// `tests/connect`: the client scripts and their `node_modules`.
pub fn connect_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("connect")
}

/// How the Node client speaks to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Connect protocol, JSON codec.
    ConnectJson,
    /// Connect protocol, binary codec.
    ConnectProto,
    /// Connect protocol, JSON, unary calls of idempotent methods as GET.
    ConnectGet,
    /// gRPC-Web, binary.
    GrpcWeb,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::ConnectJson => "connect-json",
            Transport::ConnectProto => "connect-proto",
            Transport::ConnectGet => "connect-get",
            Transport::GrpcWeb => "grpc-web",
        }
    }
}

/// One call for `client.mjs`: a JSON object (see the script's header for every field).
#[derive(Clone, Debug)]
pub struct Call(Map<String, Value>);

impl Call {
    /// Any argument the script reads (`resume.mjs`: `baseUrls`, `abortAt`, ...).
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.into(), value);
        self
    }

    /// `method` (e.g. `echo`, `serverStream`) with `request` as a message init object
    /// (camelCase field names), over HTTP/2.
    pub fn new(transport: Transport, method: &str, request: Value) -> Self {
        let mut m = Map::new();
        m.insert("transport".into(), transport.as_str().into());
        m.insert("method".into(), method.into());
        m.insert("request".into(), request);
        Call(m)
    }

    fn set(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.into(), value);
        self
    }

    /// HTTP/1.1 instead of HTTP/2.
    pub fn http1(self) -> Self {
        self.set("httpVersion", "1.1".into())
    }

    /// Gzip-compressed requests.
    pub fn gzip(self) -> Self {
        self.set("gzip", true.into())
    }

    /// A deadline the client enforces and sends (`connect-timeout-ms` / `grpc-timeout`).
    pub fn timeout_ms(self, ms: u64) -> Self {
        self.set("timeoutMs", ms.into())
    }

    /// An extra request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let headers = self
            .0
            .entry("headers")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(h) = headers {
            h.insert(name.into(), value.into());
        }
        self
    }

    /// The client aborts the server stream after `n` messages.
    pub fn abort_after(self, n: u64) -> Self {
        self.set("abortAfter", n.into())
    }

    /// One summary line (count, first and last `seq`, order) instead of every message.
    pub fn summarize(self) -> Self {
        self.set("summarize", true.into())
    }

    /// After the call the client waits for its stdin to close (see [`RunningCall`]).
    pub fn wait_stdin(self) -> Self {
        self.set("waitStdin", true.into())
    }

    /// A second call on the same transport after the first (and after the wait).
    pub fn after(self, next: Call) -> Self {
        self.set("after", Value::Object(next.0))
    }
}

/// An error as the client saw it.
#[derive(Clone, Debug)]
pub struct RpcError {
    /// Connect's code name: `deadline_exceeded`, `failed_precondition`, …
    pub code: String,
    pub message: String,
    pub details: Vec<Detail>,
    pub metadata: HashMap<String, String>,
}

/// One error detail: a protobuf message's full name and its encoding.
#[derive(Clone, Debug)]
pub struct Detail {
    pub type_name: String,
    pub value: Vec<u8>,
}

/// How a call ended.
#[derive(Clone, Debug)]
pub enum CallResult {
    Ok {
        headers: HashMap<String, String>,
        trailers: HashMap<String, String>,
    },
    Err(RpcError),
    /// The client aborted the stream after this many messages.
    Aborted(u64),
}

/// Everything one call printed.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Response messages as proto JSON (bytes fields as `{"bytes": len}`).
    pub messages: Vec<Value>,
    /// The summary of a summarized stream.
    pub summary: Option<Value>,
    pub result: CallResult,
    /// The response headers, when the call got that far.
    pub headers: HashMap<String, String>,
}

impl Outcome {
    /// The headers and trailers of a successful call; panics with the outcome otherwise.
    pub fn expect_ok(&self, what: &str) -> (&HashMap<String, String>, &HashMap<String, String>) {
        match &self.result {
            CallResult::Ok { headers, trailers } => (headers, trailers),
            other => panic!("{what}: expected success, got {other:?}"),
        }
    }

    /// The error of a failed call; panics with the outcome otherwise.
    pub fn expect_err(&self, what: &str) -> &RpcError {
        match &self.result {
            CallResult::Err(e) => e,
            other => panic!("{what}: expected an error, got {other:?}"),
        }
    }

    /// The only response message; panics unless there is exactly one.
    pub fn message(&self, what: &str) -> &Value {
        match self.messages.as_slice() {
            [m] => m,
            other => panic!("{what}: expected one message, got {other:?}"),
        }
    }
}

/// A Node client for one proxy origin, with the trusted certificate and the descriptor
/// set written to its own temp folder.
pub struct NodeClient {
    base_url: String,
    dir: tempfile::TempDir,
}

impl NodeClient {
    /// A client of `base_url` (`https://grpc.test:PORT`; every name resolves to
    /// 127.0.0.1) that trusts `cert`.
    pub fn new(base_url: &str, cert: &TestCert) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("ca.pem"), &cert.cert_pem)?;
        write_descriptor_set(&dir.path().join("descriptor.bin"))?;
        Ok(NodeClient {
            base_url: base_url.into(),
            dir,
        })
    }

    fn args(&self, call: &Call) -> Value {
        let mut args = call.0.clone();
        args.insert("baseUrl".into(), self.base_url.clone().into());
        args.insert("ca".into(), path_value(&self.dir.path().join("ca.pem")));
        args.insert(
            "descriptorSet".into(),
            path_value(&self.dir.path().join("descriptor.bin")),
        );
        Value::Object(args)
    }

    /// Starts `client.mjs` for `call`; read its lines with [`RunningCall`].
    pub fn spawn(&self, call: &Call) -> Result<RunningCall, BoxError> {
        self.spawn_script("client.mjs", call)
    }

    /// Starts another script of `tests/connect/` (`resume.mjs`) with the same arguments.
    pub fn spawn_script(&self, script: &str, call: &Call) -> Result<RunningCall, BoxError> {
        let mut child = node_command(script, &self.args(call))?
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run node ({e}): Node.js 20+ must be on PATH"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        Ok(RunningCall {
            stdin: child.stdin.take(),
            lines: BufReader::new(stdout).lines(),
            child,
            seen: Vec::new(),
        })
    }

    /// Runs `call` to the end (within [`CALL_TIMEOUT`]) and parses what it printed.
    pub async fn call(&self, call: &Call) -> Result<Outcome, BoxError> {
        let mut run = self.spawn(call)?;
        run.close_stdin();
        let lines = run.finish(CALL_TIMEOUT).await?;
        parse_outcome(&lines)
    }
}

/// A running `client.mjs`, for calls the test acts on midway (cancellation).
pub struct RunningCall {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<Value>,
}

impl RunningCall {
    /// Reads lines until one has the member `key` and returns it.
    pub async fn wait_for(&mut self, key: &str, timeout: Duration) -> Result<Value, BoxError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .map_err(|_| format!("no {key:?} line within {timeout:?}: {:?}", self.seen))?;
            let Some(line) = line? else {
                let err = self.stderr().await;
                return Err(format!("client ended before {key:?}: {:?}\n{err}", self.seen).into());
            };
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| format!("client printed a non-JSON line ({e}): {line}"))?;
            self.seen.push(v.clone());
            if v.get(key).is_some() {
                return Ok(v);
            }
        }
    }

    /// Writes a line to the client's stdin (`resume.mjs` reads on after a pause).
    pub async fn send_line(&mut self) -> Result<(), BoxError> {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().ok_or("stdin already closed")?;
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Closes the client's stdin: a client started with [`Call::wait_stdin`] goes on.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for the client to exit (closing its stdin) and returns every line it
    /// printed; errors if it exits non-zero or runs past `timeout`.
    pub async fn finish(mut self, timeout: Duration) -> Result<Vec<Value>, BoxError> {
        self.close_stdin();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.lines.next_line()).await;
            let Ok(line) = next else {
                let _ = self.child.kill().await;
                return Err(
                    format!("client still running after {timeout:?}: {:?}", self.seen).into(),
                );
            };
            let Some(line) = line? else { break };
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| format!("client printed a non-JSON line ({e}): {line}"))?;
            self.seen.push(v);
        }
        let status = tokio::time::timeout_at(deadline, self.child.wait())
            .await
            .map_err(|_| "client did not exit after closing its output")??;
        if !status.success() {
            let err = self.stderr().await;
            return Err(format!("client.mjs failed ({status}): {err}").into());
        }
        Ok(self.seen)
    }

    async fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), e.read_to_string(&mut err)).await;
        }
        err
    }
}

/// Splits a client's lines into the first call's [`Outcome`] and, when an `after` call
/// ran, its outcome.
pub fn split_after(lines: &[Value]) -> Result<(Outcome, Option<Outcome>), BoxError> {
    let (after, first): (Vec<Value>, Vec<Value>) = lines
        .iter()
        .cloned()
        .partition(|l| l.get("after").is_some());
    let after: Vec<Value> = after.into_iter().map(|l| l["after"].clone()).collect();
    let first = parse_outcome(&first)?;
    let after = if after.is_empty() {
        None
    } else {
        Some(parse_outcome(&after)?)
    };
    Ok((first, after))
}

/// Parses the NDJSON lines of one call.
pub fn parse_outcome(lines: &[Value]) -> Result<Outcome, BoxError> {
    let mut messages = Vec::new();
    let mut summary = None;
    for line in lines {
        if let Some(m) = line.get("msg") {
            messages.push(m.clone());
        } else if let Some(s) = line.get("summary") {
            summary = Some(s.clone());
        } else if line.get("waiting").is_some() {
            continue;
        } else {
            let headers = string_map(&line["headers"]);
            let result = if let Some(n) = line.get("aborted") {
                CallResult::Aborted(n.as_u64().ok_or("aborted is not a count")?)
            } else if let Some(e) = line.get("error") {
                CallResult::Err(parse_error(e)?)
            } else if line.get("ok") == Some(&Value::Bool(true)) {
                CallResult::Ok {
                    headers: headers.clone(),
                    trailers: string_map(&line["trailers"]),
                }
            } else {
                return Err(format!("unexpected client line: {line}").into());
            };
            return Ok(Outcome {
                messages,
                summary,
                result,
                headers,
            });
        }
    }
    Err(format!("the client printed no outcome: {lines:?}").into())
}

/// An error object as `client.mjs` and the page print it.
pub fn parse_error(e: &Value) -> Result<RpcError, BoxError> {
    use base64::Engine as _;
    let mut details = Vec::new();
    for d in e["details"].as_array().into_iter().flatten() {
        details.push(Detail {
            type_name: d["type"].as_str().unwrap_or_default().into(),
            value: base64::engine::general_purpose::STANDARD
                .decode(d["value"].as_str().unwrap_or_default())?,
        });
    }
    Ok(RpcError {
        code: e["code"].as_str().ok_or("error without a code")?.into(),
        message: e["message"].as_str().unwrap_or_default().into(),
        details,
        metadata: string_map(&e["metadata"]),
    })
}

fn string_map(v: &Value) -> HashMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Writes [`tollgate_proto::FILE_DESCRIPTOR_SET`] to `path`.
pub fn write_descriptor_set(path: &Path) -> Result<(), BoxError> {
    std::fs::write(path, tollgate_proto::FILE_DESCRIPTOR_SET)?;
    Ok(())
}

fn path_value(p: &Path) -> Value {
    p.to_string_lossy().into_owned().into()
}

/// `node tests/connect/<script> '<args>'`, output piped, killed when dropped; checks
/// first that the npm dependencies are installed.
fn node_command(script: &str, args: &Value) -> Result<Command, BoxError> {
    let dir = connect_dir();
    if !dir.join("node_modules/@connectrpc/connect").is_dir() {
        return Err(format!(
            "{}/node_modules is missing: run `{NPM_INSTALL}` (scripts/test does)",
            dir.display()
        )
        .into());
    }
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script))
        .arg(args.to_string())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(cmd)
}

/// Runs a node script to the end within `timeout`; its stdout, or an error with stderr.
async fn run_node(script: &str, args: &Value, timeout: Duration) -> Result<String, BoxError> {
    let child = node_command(script, args)?
        .spawn()
        .map_err(|e| format!("cannot run node ({e}): Node.js 20+ must be on PATH"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("{script} still running after {timeout:?}"))??;
    if !out.status.success() {
        return Err(format!(
            "{script} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The browser page's files: `index.html`, `app.js` (bundled now by esbuild from
/// `tests/connect/page/app.mjs`) and `descriptor.bin`.
pub async fn page_files() -> Result<Vec<(String, &'static str, Bytes)>, BoxError> {
    let dir = tempfile::tempdir()?;
    let bundle = dir.path().join("app.js");
    run_node(
        "bundle.mjs",
        &json!({ "outfile": path_value(&bundle) }),
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| format!("bundling the page: {e}"))?;
    let html = std::fs::read(connect_dir().join("page/index.html"))?;
    Ok(vec![
        (
            "/index.html".into(),
            "text/html; charset=utf-8",
            html.into(),
        ),
        (
            "/app.js".into(),
            "text/javascript; charset=utf-8",
            std::fs::read(&bundle)?.into(),
        ),
        (
            "/descriptor.bin".into(),
            "application/octet-stream",
            Bytes::from_static(tollgate_proto::FILE_DESCRIPTOR_SET),
        ),
    ])
}

/// A static file server over TLS (HTTP/1.1 and HTTP/2) on an ephemeral loopback port:
/// the browser page's own origin. Stops when dropped.
pub struct PageServer {
    pub addr: SocketAddr,
    /// `METHOD path` of every request served, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PageServer {
    /// Serves `files` (path, content type, body) with `cert`.
    pub async fn start(
        cert: &TestCert,
        files: Vec<(String, &'static str, Bytes)>,
    ) -> Result<Self, BoxError> {
        let acceptor = TlsAcceptor::from(server_config(cert)?);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let files: Arc<HashMap<String, (&'static str, Bytes)>> = Arc::new(
            files
                .into_iter()
                .map(|(path, ct, body)| (path, (ct, body)))
                .collect(),
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, files, log) = (acceptor.clone(), files.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let files = files.clone();
                        let log = log.clone();
                        async move {
                            if let Ok(mut l) = log.lock() {
                                l.push(format!("{} {}", req.method(), req.uri().path()));
                            }
                            Ok::<_, std::convert::Infallible>(respond(&files, req.uri().path()))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(PageServer {
            addr,
            requests,
            task,
        })
    }

    /// The requests served so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(
    files: &HashMap<String, (&'static str, Bytes)>,
    path: &str,
) -> http::Response<Full<Bytes>> {
    let path = if path == "/" { "/index.html" } else { path };
    let (status, ct, body) = match files.get(path) {
        Some((ct, body)) => (200, *ct, body.clone()),
        None => (404, "text/plain", Bytes::from_static(b"not found")),
    };
    http::Response::builder()
        .status(status)
        .header("content-type", ct)
        .header("cache-control", "no-store")
        .body(Full::new(body))
        .unwrap_or_default()
}

fn server_config(cert: &TestCert) -> Result<Arc<rustls::ServerConfig>, BoxError> {
    let chain =
        CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What one page published in `window.__results`, with its console and failed requests.
#[derive(Clone, Debug)]
pub struct PageRun {
    pub url: String,
    /// `window.__results`, or `Value::Null` when the page never published them.
    pub results: Value,
    /// The whole record, for failure messages.
    pub raw: Value,
}

/// Opens each of `pages` in Debian's headless chromium (fresh context each), accepting
/// exactly the certificates `certs` (by SPKI hash), every host name resolving to
/// 127.0.0.1; returns what each page published.
pub async fn run_browser(pages: &[String], certs: &[&TestCert]) -> Result<Vec<PageRun>, BoxError> {
    let dir = tempfile::tempdir()?;
    let mut cert_files = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        let p = dir.path().join(format!("cert-{i}.pem"));
        std::fs::write(&p, &c.cert_pem)?;
        cert_files.push(path_value(&p));
    }
    let args = json!({
        "pages": pages,
        "certs": cert_files,
        "timeoutMs": 120_000,
    });
    let out = run_node("browser.mjs", &args, BROWSER_TIMEOUT).await?;
    let v: Value = serde_json::from_str(out.trim())
        .map_err(|e| format!("browser.mjs printed non-JSON ({e}): {out}"))?;
    let runs = v["pages"]
        .as_array()
        .ok_or_else(|| format!("browser.mjs printed no pages: {v}"))?;
    Ok(runs
        .iter()
        .map(|p| PageRun {
            url: p["url"].as_str().unwrap_or_default().into(),
            results: p["results"].clone(),
            raw: p.clone(),
        })
        .collect())
}
