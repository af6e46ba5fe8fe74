//! The admin listener: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz`
//! (serving and not draining), `/config` (a read-only view of the active config) and
//! `/control` (the control feed's status alone).
//!
//! With an admin token (`[admin] token_file`, or `TOLLGATE_PROXY_ADMIN_TOKEN`),
//! `/metrics`, `/config` and `/control` need `Authorization: Bearer <token>`; `/healthz` and
//! `/readyz` stay open for probes, which cannot send credentials.

use crate::clock::now_ms;
use crate::config::{AdminConfig, ConfigError};
use crate::state::Shared;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ring::hmac;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Environment variable read for the admin token when `[admin] token_file` is not set.
pub const TOKEN_ENV: &str = "TOLLGATE_PROXY_ADMIN_TOKEN";
/// Shortest admin token accepted (as for the control service's tokens).
pub const MIN_TOKEN_LEN: usize = 16;
/// A token file larger than this is refused rather than read.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Who may read `/metrics`, `/config` and `/control`: anyone, or holders of the admin
/// token.
#[derive(Clone, Default)]
pub struct AdminAuth(Option<Arc<Required>>);

struct Required {
    source: TokenSource,
    /// A random per-process key: tokens are compared as HMACs under it, with ring's
    /// constant-time tag check, so timing reveals neither token's content.
    key: hmac::Key,
}

enum TokenSource {
    /// From the environment, fixed for the life of the process.
    Fixed(String),
    /// Read again on every protected request, so a rotated file (say, an updated
    /// Kubernetes Secret) applies without a restart.
    File(PathBuf),
}

impl fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_deref().map(|r| &r.source) {
            None => f.write_str("AdminAuth(open)"),
            Some(TokenSource::Fixed(_)) => {
                f.write_str("AdminAuth(<redacted, from the environment>)")
            }
            Some(TokenSource::File(p)) => write!(f, "AdminAuth(token_file {})", p.display()),
        }
    }
}

impl AdminAuth {
    /// The admin token settings of the config file at `config_path`, with `env` the
    /// value of [`TOKEN_ENV`]. A token file must exist and hold a usable token now.
    pub fn resolve(
        cfg: &AdminConfig,
        config_path: &Path,
        env: Option<String>,
    ) -> Result<Self, ConfigError> {
        let source = match (&cfg.token_file, env) {
            (None, None) => return Ok(AdminAuth(None)),
            (Some(_), Some(_)) => {
                return Err(ConfigError::AdminToken {
                    from: format!("token_file and {TOKEN_ENV}"),
                    problem: "set one, not both".into(),
                });
            }
            (Some(file), None) => {
                let base = config_path.parent().unwrap_or(Path::new("."));
                let path = base.join(file);
                let bytes = read_bounded(&path).map_err(|problem| ConfigError::AdminToken {
                    from: format!("token_file {}", path.display()),
                    problem,
                })?;
                token_of_file(&bytes).map_err(|problem| ConfigError::AdminToken {
                    from: format!("token_file {}", path.display()),
                    problem: problem.into(),
                })?;
                TokenSource::File(path)
            }
            (None, Some(token)) => {
                check_token(&token).map_err(|problem| ConfigError::AdminToken {
                    from: TOKEN_ENV.into(),
                    problem: problem.into(),
                })?;
                TokenSource::Fixed(token)
            }
        };
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| ConfigError::AdminToken {
                from: "admin token".into(),
                problem: "no randomness for the comparison key".into(),
            })?;
        Ok(AdminAuth(Some(Arc::new(Required { source, key }))))
    }

    /// Whether a token is required.
    pub fn is_required(&self) -> bool {
        self.0.is_some()
    }

    /// `None` when a request with these headers may read a protected path; else the
    /// answer: 401 without the right bearer token, 503 when the token file cannot be
    /// read (never open).
    async fn refuse(&self, headers: &HeaderMap) -> Option<Response<Full<Bytes>>> {
        let required = self.0.as_deref()?;
        let Some(presented) = bearer(headers) else {
            return Some(unauthorized());
        };
        let expected = match &required.source {
            TokenSource::Fixed(t) => t.clone(),
            TokenSource::File(path) => match read_token_file(path).await {
                Ok(t) => t,
                Err(problem) => {
                    tracing::warn!(path = %path.display(), %problem, "admin token file unusable; refusing /metrics, /config and /control");
                    return Some(text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "admin token unavailable\n",
                    ));
                }
            },
        };
        let tag = hmac::sign(&required.key, expected.as_bytes());
        match hmac::verify(&required.key, presented.as_bytes(), tag.as_ref()) {
            Ok(()) => None,
            Err(_) => Some(unauthorized()),
        }
    }
}

/// The value of [`TOKEN_ENV`]; set but not Unicode is an error, never "no token".
pub fn env_token() -> Result<Option<String>, ConfigError> {
    match std::env::var(TOKEN_ENV) {
        Ok(t) => Ok(Some(t)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::AdminToken {
            from: TOKEN_ENV.into(),
            problem: "the token must be printable ASCII".into(),
        }),
    }
}

/// The token of the only `Authorization: Bearer <token>` header (scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn check_token(token: &str) -> Result<(), &'static str> {
    if token.len() < MIN_TOKEN_LEN {
        return Err("the token must be at least 16 characters");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be printable ASCII without spaces");
    }
    Ok(())
}

/// The token a file holds: its text without surrounding whitespace (a trailing newline).
fn token_of_file(bytes: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the token must be printable ASCII")?;
    let token = text.trim();
    check_token(token)?;
    Ok(token.to_string())
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(format!("larger than {MAX_TOKEN_FILE_BYTES} bytes"));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

async fn read_token_file(path: &Path) -> Result<String, String> {
    let owned = path.to_path_buf();
    let bytes = tokio::task::spawn_blocking(move || read_bounded(&owned))
        .await
        .map_err(|e| e.to_string())??;
    token_of_file(&bytes).map_err(str::to_string)
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::UNAUTHORIZED, "admin token required\n");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"tollgate-admin\""),
    );
    r
}

/// Serves admin requests until `stop` flips; `auth` guards `/metrics`, `/config` and
/// `/control`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    auth: AdminAuth,
    mut stop: watch::Receiver<bool>,
) {
    if auth.is_required() {
        tracing::info!("admin: /metrics, /config and /control require the admin token");
    } else {
        tracing::info!(
            "admin: no admin token set; /metrics, /config and /control are open to whoever reaches the admin listener"
        );
    }
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let (shared, auth) = (shared.clone(), auth.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (shared, auth) = (shared.clone(), auth.clone());
                async move { Ok::<_, Infallible>(route(&shared, &auth, &req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn route(
    shared: &Shared,
    auth: &AdminAuth,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    if matches!(req.uri().path(), "/metrics" | "/config" | "/control")
        && let Some(refused) = auth.refuse(req.headers()).await
    {
        return refused;
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if shared.is_draining() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        // Following the control service: not ready before its first config serves.
        "/readyz" if shared.control.get().is_some_and(|c| !c.configured()) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first config from the control service\n",
        ),
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/config" => json_response(&config_view(shared)),
        // The feed's status alone: what `/config` says under `control`, without the
        // whole config, so polling it costs the same at 10 apps and at 10,000.
        "/control" => match shared.control.get() {
            Some(c) => {
                let mut view = c.view();
                view["version"] = shared.state.load().version.into();
                json_response(&view)
            }
            None => text(
                StatusCode::NOT_FOUND,
                "not following a control service (no [control] in the config)\n",
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics /healthz /readyz /config /control\n",
        ),
    }
}

fn json_response(v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// The active config with live endpoint state; no secrets (keys are never in it).
fn config_view(shared: &Shared) -> Value {
    // The feed's status first: the follower marks an event as served only after its
    // routes and certificates are swapped in, so what is read below is at least as new
    // as `control.serving_event_id` (read the other way round, an apply in between
    // showed the new event id next to the previous routes).
    let control = shared.control.get().map(|c| c.view());
    let state = shared.state.load();
    let now = now_ms();
    let upstreams: Vec<Value> = state
        .upstreams
        .iter()
        .flat_map(|(_, app)| app.clusters())
        .map(|c| {
            json!({
                "app": &*c.app,
                "name": &*c.name,
                "protocol": c.spec.protocol,
                "endpoints": c.endpoints.iter().map(|e| json!({
                    "address": &*e.address,
                    "available": e.available(now),
                    "in_flight": e.in_flight(),
                    "h2_connections": e.h2_connections(),
                    "h1_idle_connections": e.h1_idle(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let (certs, certs_refused) = shared.cert_health.view(&shared.certs.current());
    let spec = state.snapshot.spec();
    json!({
        "version": state.version,
        "api_hosts": spec.api_hosts,
        "apps": spec.apps,
        "routes": spec.routes,
        "upstreams": upstreams,
        "certificates": certs,
        "certificates_refused": certs_refused,
        "control": control,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-admin";

    fn cfg(token_file: Option<&str>) -> AdminConfig {
        AdminConfig {
            token_file: token_file.map(PathBuf::from),
            ..AdminConfig::default()
        }
    }

    fn headers(auth: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in auth {
            h.append(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    async fn status(auth: &AdminAuth, with: &[&str]) -> u16 {
        match auth.refuse(&headers(with)).await {
            None => 200,
            Some(r) => r.status().as_u16(),
        }
    }

    #[tokio::test]
    async fn no_token_configured_leaves_everything_open() {
        let auth = AdminAuth::resolve(&cfg(None), Path::new("/etc/t.toml"), None).unwrap();
        assert!(!auth.is_required());
        assert_eq!(status(&auth, &[]).await, 200);
    }

    #[tokio::test]
    async fn env_token_needs_the_exact_bearer() {
        let auth = AdminAuth::resolve(&cfg(None), Path::new("t.toml"), Some(TOKEN.into())).unwrap();
        assert!(auth.is_required());
        assert_eq!(status(&auth, &[]).await, 401);
        assert_eq!(status(&auth, &["Bearer wrong-but-long-enough"]).await, 401);
        assert_eq!(status(&auth, &[&format!("Basic {TOKEN}")]).await, 401);
        assert_eq!(status(&auth, &[&format!("Bearer {TOKEN}x")]).await, 401);
        assert_eq!(status(&auth, &[&format!("Bearer {TOKEN}")]).await, 200);
        assert_eq!(status(&auth, &[&format!("bearer  {TOKEN}")]).await, 200);
        let twice = format!("Bearer {TOKEN}");
        assert_eq!(status(&auth, &[&twice, &twice]).await, 401, "two headers");
        let refused = auth.refuse(&HeaderMap::new()).await.unwrap();
        assert_eq!(
            refused.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"tollgate-admin\""
        );
    }

    #[tokio::test]
    async fn token_file_is_read_on_each_request() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("tollgate.toml");
        let file = dir.path().join("admin.token");
        std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
        let auth = AdminAuth::resolve(&cfg(Some("admin.token")), &config_path, None).unwrap();
        assert_eq!(status(&auth, &[&format!("Bearer {TOKEN}")]).await, 200);
        // Rotated: the old token stops working at once, the new one works.
        std::fs::write(&file, "fedcba9876543210-rotated").unwrap();
        assert_eq!(status(&auth, &[&format!("Bearer {TOKEN}")]).await, 401);
        assert_eq!(
            status(&auth, &["Bearer fedcba9876543210-rotated"]).await,
            200
        );
        // Unusable now: refused (503), never open.
        std::fs::write(&file, "short").unwrap();
        assert_eq!(status(&auth, &["Bearer short"]).await, 503);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            status(&auth, &["Bearer fedcba9876543210-rotated"]).await,
            503
        );
    }

    #[test]
    fn unusable_settings_are_refused_at_start_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("tollgate.toml");
        let e = AdminAuth::resolve(&cfg(None), &config_path, Some("short".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "[admin] TOLLGATE_PROXY_ADMIN_TOKEN: the token must be at least 16 characters"
        );
        let e = AdminAuth::resolve(&cfg(Some("missing")), &config_path, None).unwrap_err();
        assert!(e.to_string().starts_with("[admin] token_file "), "{e}");
        std::fs::write(dir.path().join("spaced"), "a token with spaces inside").unwrap();
        let e = AdminAuth::resolve(&cfg(Some("spaced")), &config_path, None).unwrap_err();
        assert!(
            e.to_string().ends_with("printable ASCII without spaces"),
            "{e}"
        );
        std::fs::write(dir.path().join("ok"), TOKEN).unwrap();
        let e = AdminAuth::resolve(&cfg(Some("ok")), &config_path, Some(TOKEN.into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "[admin] token_file and TOLLGATE_PROXY_ADMIN_TOKEN: set one, not both"
        );
    }
}
