//! Errors the proxy answers itself, and their mapping to HTTP and gRPC responses.
//!
//! HTTP clients get a JSON body `{"error":{"code","message","request_id"}}`; gRPC clients
//! (`content-type: application/grpc...`) get a trailers-only response with `grpc-status`.

use super::body::ResponseBody;
use super::client_body::ClientFault;
use super::headers::X_REQUEST_ID;
use crate::rpc::reply::status_response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use std::time::Duration;
use tollgate_filters::cors;
use tollgate_filters::limit::{Decision, render_headers};
use tollgate_filters::rpc::{Code, RpcProtocol, RpcStatus};

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
    /// Part of the app's config cannot be served; the app alone is refused.
    #[error("app `{0}` is unavailable: its configuration cannot be served")]
    Degraded(String),
    #[error("request headers exceed {0} bytes")]
    HeadersTooLarge(usize),
    #[error("request body exceeds {0} bytes")]
    BodyTooLarge(u64),
    /// The client's side of the request body failed; never charged to the upstream.
    #[error("{1}")]
    ClientBody(ClientFault, String),
    #[error("no healthy endpoint for app `{0}`")]
    NoHealthyEndpoint(String),
    #[error("could not connect to the upstream")]
    UpstreamConnect,
    #[error("upstream sent no response headers within {0:?}")]
    UpstreamTimeout(Duration),
    /// The call's own deadline (`grpc-timeout`, `connect-timeout-ms`) ran out first:
    /// the client's choice, never counted against the endpoint.
    #[error("the call's deadline of {0:?} passed before the upstream answered")]
    DeadlineExceeded(Duration),
    #[error("upstream connection failed before a response")]
    UpstreamProtocol,
    #[error("protocol upgrades need an HTTP/1.1 upstream")]
    UpgradeUnsupported,
    #[error("invalid request: {0}")]
    BadRequest(&'static str),
    /// The path cannot be normalised (bad escape, encoded slash, above the root).
    #[error("invalid path: {0}")]
    BadPath(tollgate_routing::PathError),
    /// A head the parser let through that the RFCs call malformed.
    #[error("malformed request: {}", .0.message())]
    Malformed(super::headers::Malformed),
    /// TLS: the host is not served by the certificate this connection presented.
    #[error("this connection's certificate does not serve the requested host")]
    Misdirected,
    /// Credentials missing (`invalid: false`) or not valid.
    #[error("authentication required")]
    Unauthenticated { invalid: bool },
    /// Valid credentials without the scope, role or tenant the route requires.
    #[error("permission denied")]
    Forbidden { scope: bool },
    /// A gRPC-Web or Connect call refused before it reached the upstream.
    #[error("{1}")]
    Rpc(Code, String),
    #[error("unsupported content type for a gRPC service")]
    UnsupportedMediaType,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("CORS preflight refused: {0}")]
    CorsRefused(cors::Refusal),
    #[error("rate limit exceeded")]
    RateLimited(Box<Decision>),
    #[error("too many concurrent streams for this app")]
    TooManyStreams,
    #[error("BUDGET_EXCEEDED: the app's budget for this period is spent")]
    BudgetExceeded,
    #[error("the limit backend is unavailable")]
    LimitBackend,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self {
            MissingHost | BadRequest(_) | BadPath(_) => StatusCode::BAD_REQUEST,
            NoRoute | UnknownApp(_) => StatusCode::NOT_FOUND,
            Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Suspended(_) | Degraded(_) | NoHealthyEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
            HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ClientBody(ClientFault::Timeout, _) => StatusCode::REQUEST_TIMEOUT,
            ClientBody(..) => StatusCode::BAD_REQUEST,
            UpstreamConnect | UpstreamProtocol | UpgradeUnsupported => StatusCode::BAD_GATEWAY,
            UpstreamTimeout(_) | DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            Malformed(_) => StatusCode::BAD_REQUEST,
            Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Forbidden { .. } | CorsRefused(_) => StatusCode::FORBIDDEN,
            Rpc(code, _) => code.connect_http_status(),
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RateLimited(_) | TooManyStreams | BudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
            LimitBackend => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        use ProxyError::*;
        match self {
            MissingHost => "missing_host",
            BadRequest(_) => "bad_request",
            BadPath(e) => e.reason(),
            NoRoute => "no_route",
            UnknownApp(_) => "unknown_app",
            Suspended(_) => "app_suspended",
            Degraded(_) => "app_config_invalid",
            HeadersTooLarge(_) => "headers_too_large",
            BodyTooLarge(_) => "body_too_large",
            ClientBody(fault, _) => fault.reason(),
            NoHealthyEndpoint(_) => "no_healthy_upstream",
            UpstreamConnect => "upstream_connect_failed",
            UpstreamTimeout(_) => "upstream_timeout",
            DeadlineExceeded(_) => "deadline_exceeded",
            UpstreamProtocol => "upstream_protocol_error",
            UpgradeUnsupported => "upgrade_unsupported",
            Misdirected => "misdirected_request",
            Malformed(m) => m.reason(),
            Unauthenticated { .. } => "unauthenticated",
            Forbidden { .. } => "permission_denied",
            Rpc(code, _) => code.connect_name(),
            UnsupportedMediaType => "unsupported_media_type",
            MethodNotAllowed => "method_not_allowed",
            CorsRefused(_) => "cors_refused",
            RateLimited(_) => "rate_limited",
            TooManyStreams => "too_many_streams",
            BudgetExceeded => "budget_exceeded",
            LimitBackend => "limit_backend_unavailable",
        }
    }

    /// The gRPC status code for the same failure.
    pub fn grpc_code(&self) -> Code {
        use ProxyError::*;
        match self {
            MissingHost | BadRequest(_) | BadPath(_) => Code::InvalidArgument,
            NoRoute | UnknownApp(_) | UpgradeUnsupported | UnsupportedMediaType
            | MethodNotAllowed => Code::Unimplemented,
            HeadersTooLarge(_) | BodyTooLarge(_) | RateLimited(_) | TooManyStreams
            | BudgetExceeded => Code::ResourceExhausted,
            LimitBackend | Misdirected => Code::Unavailable,
            UpstreamTimeout(_) | DeadlineExceeded(_) => Code::DeadlineExceeded,
            Malformed(_) => Code::InvalidArgument,
            Suspended(_) | Degraded(_) | NoHealthyEndpoint(_) | UpstreamConnect
            | UpstreamProtocol => Code::Unavailable,
            Unauthenticated { .. } => Code::Unauthenticated,
            Forbidden { .. } | CorsRefused(_) => Code::PermissionDenied,
            Rpc(code, _) => *code,
            ClientBody(ClientFault::Malformed | ClientFault::Invalid, _) => Code::InvalidArgument,
            ClientBody(ClientFault::Aborted, _) => Code::Canceled,
            ClientBody(ClientFault::Timeout, _) => Code::DeadlineExceeded,
        }
    }

    /// The client-side failure behind this error, if it is one.
    pub fn client_fault(&self) -> Option<ClientFault> {
        match self {
            ProxyError::ClientBody(fault, _) => Some(*fault),
            _ => None,
        }
    }

    /// A client body failure with its usual message.
    pub fn client_body(fault: ClientFault) -> Self {
        ProxyError::ClientBody(fault, fault.describe().to_string())
    }

    /// The response a client gets for this error.
    /// `protocol` is the RPC protocol the client speaks, if any.
    pub fn to_response(
        &self,
        request_id: &HeaderValue,
        protocol: Option<RpcProtocol>,
    ) -> Response<ResponseBody> {
        // A 421 stays an HTTP status for every client: it tells the client's HTTP stack
        // to retry on a new connection.
        let protocol = protocol.filter(|_| !matches!(self, ProxyError::Misdirected));
        let mut resp = if let Some(protocol) = protocol {
            let status = RpcStatus::new(self.grpc_code(), self.to_string());
            status_response(protocol, &status, &HeaderMap::new())
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
        if let ProxyError::RateLimited(decision) = self {
            render_headers(decision, resp.headers_mut());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn json_errors_carry_code_and_request_id() {
        let id = HeaderValue::from_static("rid-1");
        let resp = ProxyError::Suspended("acme".into()).to_response(&id, None);
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
        let err = ProxyError::UpstreamTimeout(Duration::from_secs(1));
        let resp = err.to_response(&id, Some(RpcProtocol::Grpc));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "4");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
    }

    #[test]
    fn client_body_failures_are_the_clients() {
        let cases = [
            (ClientFault::Malformed, 400, Code::InvalidArgument),
            (ClientFault::Invalid, 400, Code::InvalidArgument),
            (ClientFault::Aborted, 400, Code::Canceled),
            (ClientFault::Timeout, 408, Code::DeadlineExceeded),
        ];
        for (fault, status, grpc) in cases {
            let err = ProxyError::client_body(fault);
            assert_eq!(err.status(), status, "{fault:?}");
            assert_eq!(err.grpc_code(), grpc, "{fault:?}");
            assert_eq!(err.code(), fault.reason());
            assert_eq!(err.client_fault(), Some(fault));
        }
        assert_eq!(ProxyError::UpstreamProtocol.client_fault(), None);
    }

    #[tokio::test]
    async fn connect_unary_errors_use_http_status_and_json() {
        let id = HeaderValue::from_static("r");
        let err = ProxyError::Rpc(Code::ResourceExhausted, "50% é".into());
        let unary = RpcProtocol::ConnectUnary {
            codec: tollgate_filters::rpc::Codec::Json,
            get: false,
        };
        let resp = err.to_response(&id, Some(unary));
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["x-request-id"], "r");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "resource_exhausted");
        assert_eq!(v["message"], "50% é");
    }
}
