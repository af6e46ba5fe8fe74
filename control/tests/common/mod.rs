//! Shared helpers for the control-service tests: a service on a temporary SQLite
//! file with ephemeral ports, a minimal HTTP/1.1 client, and test certificates.
#![allow(dead_code)]

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_control::{ControlOptions, Running};

pub const ADMIN: &str = "admin-token-0123456789";
pub const PROXY: &str = "proxy-token-0123456789";

/// A started service and the folder holding its database.
pub struct Svc {
    pub running: Running,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("control.db").display())
}

pub fn options(dir: &Path) -> ControlOptions {
    ControlOptions {
        store: db_url(dir),
        listen: "127.0.0.1:0".parse().unwrap(),
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        admin_token: Some(ADMIN.into()),
        proxy_token: Some(PROXY.into()),
        ready_file: None,
        default_grace_seconds: 3600,
        poll_ms: 200,
        grace_check_ms: 100,
        // Also the default beside SQLite; PostgreSQL tests need it named.
        sealing_key_file: Some(dir.join("sealing.key")),
        ..ControlOptions::default()
    }
}

/// A service on a fresh temporary database.
pub async fn start() -> Svc {
    start_with(|o| o).await
}

/// [`start`] with the options changed by `edit`.
pub async fn start_with(edit: impl FnOnce(ControlOptions) -> ControlOptions) -> Svc {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let running = tollgate_control::start(edit(options(&dir))).await.unwrap();
    Svc {
        running,
        dir,
        _tmp: Some(tmp),
    }
}

/// A service on the database in `dir` (kept by the caller).
pub async fn start_in(dir: &Path) -> Running {
    tollgate_control::start(options(dir)).await.unwrap()
}

impl Svc {
    pub fn http(&self) -> Client {
        Client {
            addr: self.running.http_addr,
            token: Some(ADMIN.into()),
        }
    }
    pub async fn stop(self) -> Option<tempfile::TempDir> {
        self.running.shutdown();
        self.running.wait().await.unwrap();
        self._tmp
    }
}

/// An HTTP answer: status and JSON body (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: String,
}

/// A one-request-per-connection HTTP/1.1 client.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Client {
    pub fn with_token(&self, token: Option<&str>) -> Client {
        Client {
            addr: self.addr,
            token: token.map(str::to_string),
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let raw = body.map(|b| b.to_string());
        self.send_raw(method, path, raw.as_deref(), extra).await
    }

    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
            self.addr
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("authorization: Bearer {t}\r\n"));
        }
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || matches!(method, "POST" | "PUT") {
            req.push_str("content-type: application/json\r\n");
        }
        req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
            .await
            .expect("HTTP answer timed out")
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, rest) = text.split_once("\r\n\r\n").expect("no header end");
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Answer {
            status,
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
            headers: head.to_string(),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send("POST", path, Some(&body), &[]).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.send("PUT", path, Some(&body), &[]).await
    }
    pub async fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, None, &[]).await
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Asserts the status, showing the body on failure; returns the body.
#[track_caller]
pub fn expect(a: Answer, status: u16) -> Value {
    assert_eq!(a.status, status, "unexpected answer: {:#}", a.body);
    a.body
}

/// A self-signed certificate (PEM chain, key PEM) for `names`.
pub fn cert(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let s = tollgate_certs::self_signed(&names).unwrap();
    (s.cert_pem, s.key_pem)
}

pub fn expired_cert() -> (String, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    (
        std::fs::read_to_string(dir.join("expired-cert.pem")).unwrap(),
        std::fs::read_to_string(dir.join("expired-key.pem")).unwrap(),
    )
}

/// Creates app `id` with one instance on its default upstream.
pub async fn app_with_instance(c: &Client, id: &str) {
    expect(
        c.post("/api/v1/apps", serde_json::json!({ "id": id }))
            .await,
        201,
    );
    expect(
        c.post(
            &format!("/api/v1/apps/{id}/upstreams/default/instances"),
            serde_json::json!({ "address": "127.0.0.1:9000" }),
        )
        .await,
        201,
    );
}

/// `EdgeFeed.Watch` from `after` over a real tonic connection, with `token` as bearer.
pub async fn watch(
    svc: &Svc,
    after: i64,
    token: Option<&str>,
) -> Result<tonic::Streaming<tollgate_proto::control::v1::WatchResponse>, tonic::Status> {
    let mut client = tollgate_proto::control::v1::edge_feed_client::EdgeFeedClient::connect(
        format!("http://{}", svc.running.grpc_addr),
    )
    .await
    .unwrap()
    .max_decoding_message_size(64 << 20);
    let mut req = tonic::Request::new(tollgate_proto::control::v1::WatchRequest {
        after_event_id: after,
        node_id: "test-proxy".into(),
        last_edge: None,
        gzip_snapshot: false,
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    client.watch(req).await.map(|r| r.into_inner())
}
