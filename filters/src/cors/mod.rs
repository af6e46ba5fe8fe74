//! CORS at the edge: preflights answered by the proxy, and the headers that let a
//! browser on an allowed origin read gRPC-Web and Connect responses (statuses,
//! messages, details and Connect's own headers), error responses included.
//!
//! A route's [`CorsSpec`] is compiled once into a [`CorsPolicy`] (the allowed methods
//! and exposed headers as ready header values).

use http::{HeaderMap, HeaderValue, Method, header};
use tollgate_routing::CorsSpec;

/// Request headers browsers send to gRPC-Web and Connect services, always allowed.
const ALLOWED_HEADERS: &[&str] = &[
    "content-type",
    "authorization",
    "x-api-key",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-content-encoding",
    "connect-accept-encoding",
    "x-request-id",
    // Resumable streams (the proxy's resume module).
    "tollgate-resume-token",
    "tollgate-resume-after",
    "last-event-id",
];

/// Response headers exposed to scripts, besides the CORS-safelisted ones.
const EXPOSED_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin, \
    grpc-encoding, connect-content-encoding, connect-accept-encoding, content-encoding, \
    x-request-id, x-tollgate-app-id, retry-after, ratelimit, ratelimit-policy, \
    tollgate-resume-token";

/// Methods gRPC-Web and Connect use (GET for Connect's idempotent calls): the
/// answer when `allow_methods` cannot be compiled, which validation prevents.
static DEFAULT_METHODS: HeaderValue = HeaderValue::from_static("GET, POST");

/// A route's CORS settings, compiled.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    spec: CorsSpec,
    /// `Access-Control-Allow-Methods` of every successful preflight.
    allow_methods: HeaderValue,
    /// `Access-Control-Expose-Headers` of every answer to an allowed origin.
    expose: HeaderValue,
}

impl CorsPolicy {
    pub fn new(spec: CorsSpec) -> Self {
        let allow_methods = HeaderValue::from_str(&spec.allow_methods.join(", "))
            .unwrap_or_else(|_| DEFAULT_METHODS.clone());
        let expose = if spec.expose_headers.is_empty() {
            HeaderValue::from_static(EXPOSED_HEADERS)
        } else {
            let mut s = String::from(EXPOSED_HEADERS);
            for h in &spec.expose_headers {
                s.push_str(", ");
                s.push_str(h);
            }
            HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(EXPOSED_HEADERS))
        };
        CorsPolicy {
            spec,
            allow_methods,
            expose,
        }
    }

    pub fn spec(&self) -> &CorsSpec {
        &self.spec
    }

    /// The headers of a successful preflight answer (204), or why it is refused.
    pub fn preflight(&self, req: &HeaderMap) -> Result<HeaderMap, Refusal> {
        preflight(self, req)
    }

    /// Adds the CORS headers to an actual response when `origin` is allowed.
    pub fn apply(&self, origin: &HeaderValue, resp: &mut HeaderMap) {
        if !self.spec.allows(origin.as_bytes()) {
            return;
        }
        allow_origin(&self.spec, origin, resp);
        resp.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, self.expose.clone());
    }
}

/// Why a preflight was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("origin not allowed")]
    Origin,
    #[error("method not allowed")]
    Method,
    #[error("request header not allowed")]
    Header,
}

/// Whether a request is a CORS preflight (an OPTIONS with Origin and the method asked for).
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn preflight(policy: &CorsPolicy, req: &HeaderMap) -> Result<HeaderMap, Refusal> {
    let spec = &policy.spec;
    let origin = req.get(header::ORIGIN).ok_or(Refusal::Origin)?;
    if !spec.allows(origin.as_bytes()) {
        return Err(Refusal::Origin);
    }
    let method = req
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .map(HeaderValue::as_bytes);
    let allowed = method.is_some_and(|m| spec.allow_methods.iter().any(|a| a.as_bytes() == m));
    if !allowed {
        return Err(Refusal::Method);
    }
    let mut out = HeaderMap::new();
    if let Some(asked) = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        let asked = asked.to_str().map_err(|_| Refusal::Header)?;
        for name in asked.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let allowed = ALLOWED_HEADERS.iter().any(|a| a.eq_ignore_ascii_case(name))
                || spec
                    .allowed_headers
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(name));
            if !allowed {
                return Err(Refusal::Header);
            }
        }
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked_value(asked)?);
    }
    allow_origin(spec, origin, &mut out);
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        policy.allow_methods.clone(),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(spec.max_age_secs),
    );
    Ok(out)
}

fn asked_value(asked: &str) -> Result<HeaderValue, Refusal> {
    HeaderValue::from_str(asked).map_err(|_| Refusal::Header)
}

fn allow_origin(spec: &CorsSpec, origin: &HeaderValue, out: &mut HeaderMap) {
    let any = !spec.allow_credentials && spec.allowed_origins.iter().any(|o| o == "*");
    if any {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if spec.allow_credentials {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(origins: &[&str]) -> CorsPolicy {
        CorsPolicy::new(CorsSpec {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: false,
            max_age_secs: 600,
            allowed_headers: vec!["x-custom".into()],
            expose_headers: vec![],
            allow_methods: vec!["GET".into(), "POST".into()],
        })
    }

    fn req(origin: &str, method: &str, headers: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).unwrap(),
        );
        if let Some(v) = headers {
            h.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn allowed_preflight_echoes_origin_and_headers() {
        let s = spec(&["https://web.test:8443"]);
        let out = s
            .preflight(&req(
                "https://web.test:8443",
                "POST",
                Some("content-type,connect-protocol-version, X-Custom"),
            ))
            .unwrap();
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://web.test:8443"
        );
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type,connect-protocol-version, X-Custom"
        );
        assert_eq!(out[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(out[header::VARY], "Origin");
    }

    #[test]
    fn refusals() {
        let s = spec(&["https://web.test"]);
        assert_eq!(
            s.preflight(&req("https://evil.test", "POST", None)),
            Err(Refusal::Origin)
        );
        assert_eq!(
            s.preflight(&req("https://web.test", "DELETE", None)),
            Err(Refusal::Method)
        );
        assert_eq!(
            s.preflight(&req("https://web.test", "POST", Some("x-other"))),
            Err(Refusal::Header)
        );
    }

    #[test]
    fn responses_expose_grpc_headers_only_to_allowed_origins() {
        let s = spec(&["https://web.test"]);
        let mut out = HeaderMap::new();
        s.apply(&HeaderValue::from_static("https://evil.test"), &mut out);
        assert!(out.is_empty());
        s.apply(&HeaderValue::from_static("https://web.test"), &mut out);
        let exposed = out[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap();
        assert!(exposed.contains("grpc-status-details-bin"));
        assert!(exposed.contains("connect-content-encoding"));
    }

    #[test]
    fn configured_methods_are_allowed_and_answered() {
        let mut cfg = spec(&["https://web.test"]).spec().clone();
        cfg.allow_methods = vec!["GET".into(), "PUT".into(), "PATCH".into()];
        let s = CorsPolicy::new(cfg);
        let out = s.preflight(&req("https://web.test", "PUT", None)).unwrap();
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT, PATCH");
        assert!(s.preflight(&req("https://web.test", "PATCH", None)).is_ok());
        for refused in ["POST", "DELETE", "put"] {
            assert_eq!(
                s.preflight(&req("https://web.test", refused, None)),
                Err(Refusal::Method),
                "{refused}"
            );
        }
        let default = spec(&["https://web.test"]);
        let out = default
            .preflight(&req("https://web.test", "GET", None))
            .unwrap();
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
    }

    #[test]
    fn wildcard_without_credentials_answers_star() {
        let s = spec(&["*"]);
        let out = s.preflight(&req("https://any.test", "GET", None)).unwrap();
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }
}
