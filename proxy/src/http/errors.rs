//! Errors the proxy answers itself, and their mapping to HTTP and gRPC responses.
//!
//! HTTP clients get a JSON body `{"error":{"code","message","request_id"}}`; gRPC clients
//! (`content-type: application/grpc...`) get a trailers-only response with `grpc-status`.

use super::body::ResponseBody;
use super::headers::X_REQUEST_ID;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request has no host")]
    MissingHost,
    #[error("no route for this host and path")]
    NoRoute,
    #[error("unknown app `{0}`")]
    UnknownApp(String),
    #[error("app `{0}` is suspended")]
    Suspended(String),
    #[error("request headers exceed {0} bytes")]
    HeadersTooLarge(usize),
    #[error("request body exceeds {0} bytes")]
    BodyTooLarge(u64),
    #[error("no healthy endpoint for app `{0}`")]
    NoHealthyEndpoint(String),
    #[error("could not connect to the upstream")]
    UpstreamConnect,
    #[error("upstream sent no response headers within {0:?}")]
    UpstreamTimeout(Duration),
    #[error("upstream connection failed before a response")]
    UpstreamProtocol,
    #[error("protocol upgrades need an HTTP/1.1 upstream")]
    UpgradeUnsupported,
    #[error("invalid request: {0}")]
    BadRequest(&'static str),
    #[error("the proxy is shutting down")]
    Draining,
    /// Credentials missing (`invalid: false`) or not valid.
    #[error("authentication required")]
    Unauthenticated { invalid: bool },
    /// Valid credentials without the scope, role or tenant the route requires.
    #[error("permission denied")]
    Forbidden { scope: bool },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self {
            MissingHost | BadRequest(_) => StatusCode::BAD_REQUEST,
            NoRoute | UnknownApp(_) => StatusCode::NOT_FOUND,
            Suspended(_) | NoHealthyEndpoint(_) | Draining => StatusCode::SERVICE_UNAVAILABLE,
            HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UpstreamConnect | UpstreamProtocol | UpgradeUnsupported => StatusCode::BAD_GATEWAY,
            UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Forbidden { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        use ProxyError::*;
        match self {
            MissingHost => "missing_host",
            BadRequest(_) => "bad_request",
            NoRoute => "no_route",
            UnknownApp(_) => "unknown_app",
            Suspended(_) => "app_suspended",
            HeadersTooLarge(_) => "headers_too_large",
            BodyTooLarge(_) => "body_too_large",
            NoHealthyEndpoint(_) => "no_healthy_upstream",
            UpstreamConnect => "upstream_connect_failed",
            UpstreamTimeout(_) => "upstream_timeout",
            UpstreamProtocol => "upstream_protocol_error",
            UpgradeUnsupported => "upgrade_unsupported",
            Draining => "draining",
            Unauthenticated { .. } => "unauthenticated",
            Forbidden { .. } => "permission_denied",
        }
    }

    /// The gRPC status code for the same failure.
    pub fn grpc_status(&self) -> u8 {
        use ProxyError::*;
        const INVALID_ARGUMENT: u8 = 3;
        const DEADLINE_EXCEEDED: u8 = 4;
        const PERMISSION_DENIED: u8 = 7;
        const RESOURCE_EXHAUSTED: u8 = 8;
        const UNIMPLEMENTED: u8 = 12;
        const UNAVAILABLE: u8 = 14;
        const UNAUTHENTICATED: u8 = 16;
        match self {
            MissingHost | BadRequest(_) => INVALID_ARGUMENT,
            NoRoute | UnknownApp(_) | UpgradeUnsupported => UNIMPLEMENTED,
            HeadersTooLarge(_) | BodyTooLarge(_) => RESOURCE_EXHAUSTED,
            UpstreamTimeout(_) => DEADLINE_EXCEEDED,
            Suspended(_) | NoHealthyEndpoint(_) | UpstreamConnect | UpstreamProtocol | Draining => {
                UNAVAILABLE
            }
            Unauthenticated { .. } => UNAUTHENTICATED,
            Forbidden { .. } => PERMISSION_DENIED,
        }
    }

    /// The response a client gets for this error.
    pub fn to_response(&self, request_id: &HeaderValue, grpc: bool) -> Response<ResponseBody> {
        let mut resp = if grpc {
            let mut r = Response::new(ResponseBody::empty());
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert(
                "grpc-status",
                HeaderValue::from(u16::from(self.grpc_status())),
            );
            if let Ok(msg) = HeaderValue::from_str(&percent_encode(&self.to_string())) {
                h.insert("grpc-message", msg);
            }
            r
        } else {
            let body = serde_json::json!({
                "error": {
                    "code": self.code(),
                    "message": self.to_string(),
                    "request_id": String::from_utf8_lossy(request_id.as_bytes()),
                }
            });
            let mut r = Response::new(ResponseBody::full(Bytes::from(body.to_string())));
            *r.status_mut() = self.status();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        };
        resp.headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        if let Some(challenge) = self.challenge() {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }

    /// The RFC 6750 challenge; no error code when no credentials were sent.
    fn challenge(&self) -> Option<&'static str> {
        match self {
            ProxyError::Unauthenticated { invalid: false } => Some("Bearer realm=\"tollgate\""),
            ProxyError::Unauthenticated { invalid: true } => {
                Some("Bearer realm=\"tollgate\", error=\"invalid_token\"")
            }
            ProxyError::Forbidden { scope: true } => {
                Some("Bearer realm=\"tollgate\", error=\"insufficient_scope\"")
            }
            _ => None,
        }
    }
}

/// Percent-encodes per gRPC's `grpc-message` rules (printable ASCII except `%` kept).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a request speaks gRPC (and so wants errors as `grpc-status`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn json_errors_carry_code_and_request_id() {
        let id = HeaderValue::from_static("rid-1");
        let resp = ProxyError::Suspended("acme".into()).to_response(&id, false);
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["x-request-id"], "rid-1");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "app_suspended");
        assert_eq!(v["error"]["request_id"], "rid-1");
    }

    #[test]
    fn grpc_errors_are_trailers_only() {
        let id = HeaderValue::from_static("r");
        let resp = ProxyError::UpstreamTimeout(Duration::from_secs(1)).to_response(&id, true);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "4");
        assert_eq!(percent_encode("50% é"), "50%25 %C3%A9");
    }
}
