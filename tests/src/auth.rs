//! Shared pieces of the authentication tests: requests carrying chosen credential
//! headers (HTTP and gRPC-shaped), what the echo upstream saw, the refusal details a
//! client gets, and the `tollgate_auth_results_total` counter.

use crate::BoxError;
use crate::client::{self, Sender, TestBody};
use crate::helpers::{WAIT, json};
use crate::proxy::ProxyProcess;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use serde_json::Value;
use std::net::SocketAddr;

/// The auth results counter.
pub const AUTH_RESULTS: &str = "tollgate_auth_results_total";

/// The challenge for a request without credentials (RFC 6750 §3: no error code).
pub const CHALLENGE_MISSING: &str = "Bearer realm=\"tollgate\"";
/// The challenge for missing-but-invalid credentials.
pub const CHALLENGE_INVALID: &str = "Bearer realm=\"tollgate\", error=\"invalid_token\"";
/// The challenge for valid credentials lacking a required scope.
pub const CHALLENGE_SCOPE: &str = "Bearer realm=\"tollgate\", error=\"insufficient_scope\"";

/// gRPC `UNAUTHENTICATED`.
pub const GRPC_UNAUTHENTICATED: &str = "16";
/// gRPC `PERMISSION_DENIED`.
pub const GRPC_PERMISSION_DENIED: &str = "7";

/// One answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The request headers the echo upstream received (panics unless the upstream answered).
    pub fn seen(&self) -> serde_json::Map<String, Value> {
        match json(&self.body)["headers"].as_object() {
            Some(h) => h.clone(),
            None => panic!("not an upstream echo ({}): {}", self.status, self.body),
        }
    }

    /// One header the upstream received, if it did.
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.seen()
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// `error.code` of a proxy error body.
    pub fn code(&self) -> String {
        json(&self.body)["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `WWW-Authenticate` challenge.
    pub fn challenge(&self) -> Option<&str> {
        self.header("www-authenticate")
    }

    /// The body with its request id blanked, to compare refusals with each other.
    pub fn body_without_request_id(&self) -> Value {
        let mut v = json(&self.body);
        v["error"]["request_id"] = Value::Null;
        v
    }
}

/// Adds `headers` (appended, so a name may repeat) to `req`.
fn with_headers(mut req: Request<TestBody>, headers: &[(&str, &str)]) -> Request<TestBody> {
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        let value = HeaderValue::from_bytes(value.as_bytes()).expect("header value");
        req.headers_mut().append(name, value);
    }
    req
}

/// Sends `req` on `sender` and reads the whole answer, bounded by [`WAIT`].
pub async fn send(sender: &mut Sender, req: Request<TestBody>) -> Result<Reply, BoxError> {
    let exchange = async {
        let (status, headers, body) = client::text(sender.send(req).await?).await?;
        Ok::<_, BoxError>(Reply {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| format!("no answer within {WAIT:?}"))?
}

/// GETs `path` for `host` on an open connection, with extra request headers.
pub async fn get_on(
    sender: &mut Sender,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let req = with_headers(client::get(sender, "http", host, path), headers);
    send(sender, req)
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
}

/// GETs `path` for `host` over a fresh plain connection (h2c when `h2`).
pub async fn get(
    addr: SocketAddr,
    h2: bool,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut s = client::connect_plain(addr, h2).await.expect("connect");
    get_on(&mut s, host, path, headers).await
}

/// A gRPC-shaped unary call (h2c POST, `application/grpc`, one empty message) for
/// `host` and `path` (`/pkg.Service/Method` after any route prefix).
pub async fn grpc_call(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut s = client::connect_plain(addr, true).await.expect("connect");
    // The length-prefixed empty message: not compressed, length 0.
    let body = client::full(vec![0u8; 5]);
    let req = client::request(&s, "POST", "http", host, path, body);
    let req = with_headers(
        req,
        &[("content-type", "application/grpc"), ("te", "trailers")],
    );
    let req = with_headers(req, headers);
    send(&mut s, req)
        .await
        .unwrap_or_else(|e| panic!("gRPC {host}{path}: {e}"))
}

/// `tollgate_auth_results_total{app, result}`.
pub async fn auth_result(proxy: &ProxyProcess, app: &str, result: &str) -> f64 {
    let app = format!("app=\"{app}\"");
    let result = format!("result=\"{result}\"");
    proxy
        .metric(AUTH_RESULTS, &[&app, &result])
        .await
        .expect("metrics")
}

/// `Authorization: Bearer <credential>`.
pub fn bearer(credential: &str) -> String {
    format!("Bearer {credential}")
}
