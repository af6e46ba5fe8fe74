//! The request path: route the request, check it, pick an upstream endpoint, forward,
//! retry where safe, and stream the answer back with its accounting attached.

use super::body::{BodyError, Exchange, RequestBody, ResponseBody};
use super::client_body::{ClientBody, ClientFault};
use super::completion::{AccessRecord, Completion, StreamGuard};
use super::errors::ProxyError;
use super::headers::{self, X_APP_ID, X_REQUEST_ID};
use super::upgrade;
use crate::auth::{self, AuthFailure};
use crate::clock::now_ms;
use crate::limits::AppLimits;
use crate::limits::admit::admit;
use crate::limits::meter::{BudgetFilter, Units};
use crate::rpc;
use crate::state::{ProxyState, Shared};
use crate::upstream::cluster::Cluster;
use crate::upstream::endpoint::InFlight;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::Instant;
use tollgate_filters::budget::Meter;
use tollgate_filters::cors;
use tollgate_filters::filter::StreamFilter;
use tollgate_filters::limit::{RequestKeys, StreamPermit};
use tollgate_filters::rpc::MethodSchema;
use tollgate_filters::rpc::RpcProtocol;
use tollgate_filters::rpc::schema::FieldPath;
use tollgate_routing::BudgetUnit;
use tollgate_routing::matcher::Miss;
use tollgate_routing::{AppSpec, AppStatus, AuthPolicy, CorsSpec, host};

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub local_port: u16,
    pub tls: bool,
    /// The client IP as a header value, built once per connection.
    pub client_ip: HeaderValue,
    /// TLS with SNI: the certificate presented, which bounds the hosts served (421).
    pub presented: Option<super::misdirected::PresentedCert>,
}

impl ConnInfo {
    pub fn new(client: SocketAddr, local_port: u16, tls: bool) -> Self {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        ConnInfo {
            client,
            local_port,
            tls,
            client_ip,
            presented: None,
        }
    }
}

static NO_ROUTE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));

/// Per-request facts gathered on the way, used for headers and accounting.
struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    conn: &'a ConnInfo,
    request_id: HeaderValue,
    client_version: Version,
    route: Option<Arc<str>>,
    app: Option<Arc<AppSpec>>,
    app_header: Option<HeaderValue>,
    in_flight: Option<InFlight>,
    /// The protocol errors are rendered in: gRPC or gRPC-Web from the start, Connect
    /// once the route is known to be a gRPC service.
    protocol: Option<RpcProtocol>,
    /// The route's CORS policy and the request's Origin, applied to every answer.
    cors: Option<&'a CorsSpec>,
    origin: Option<HeaderValue>,
    /// A slot of the app's concurrent-stream quota, held until the response ends.
    permit: Option<StreamPermit>,
    /// Budget units the response stream paid for.
    units: Option<Arc<AtomicU64>>,
    /// The exchange of a request with a body (its byte count goes to usage).
    exchange: Option<Arc<Exchange>>,
}

/// Serves one request; never fails, every error becomes a response.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let http2 = req.version() == Version::HTTP_2;
    let stream = StreamGuard::new(if http2 {
        &shared.streams_h2
    } else {
        &shared.streams_h1
    });
    let request_id = headers::request_id(req.headers());
    let protocol = RpcProtocol::detect(req.method(), req.headers(), req.uri().query());
    let grpc = protocol.filter(|p| matches!(p, RpcProtocol::Grpc | RpcProtocol::GrpcWeb { .. }));
    let access = shared.access_log.then(|| {
        Box::new(AccessRecord {
            request_id: request_id.clone(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            client: conn.client,
            host: host_value(&req),
        })
    });
    let state = shared.state.load_full();
    let mut ctx = Ctx {
        shared: &shared,
        conn: &conn,
        request_id,
        client_version: req.version(),
        route: None,
        app: None,
        app_header: None,
        in_flight: None,
        protocol: grpc,
        cors: None,
        origin: None,
        permit: None,
        units: None,
        exchange: None,
    };
    // Wrapped first: a body left unread by any refusal below is drained, not reset.
    let req = req.map(ClientBody::new);
    let mut resp = match forward(&state, &mut ctx, req, protocol).await {
        Ok(resp) => resp,
        Err(err) => {
            shared
                .metrics
                .local_responses
                .with_label_values(&[err.code()])
                .inc();
            if let Some(fault) = err.client_fault() {
                let reason = fault.reason();
                shared
                    .metrics
                    .client_errors
                    .with_label_values(&[reason])
                    .inc();
            }
            err.to_response(&ctx.request_id, ctx.protocol)
        }
    };
    let h = resp.headers_mut();
    if let (Some(cors), Some(origin)) = (ctx.cors, &ctx.origin) {
        cors::apply(cors, origin, h);
    }
    if let Some(app) = ctx.app_header.take() {
        h.insert(X_APP_ID.clone(), app);
    }
    h.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    let completion = Completion {
        metrics: shared.metrics.clone(),
        started,
        route: ctx.route.take().unwrap_or_else(|| NO_ROUTE.clone()),
        app: ctx.app.take(),
        protocol: if http2 { "http2" } else { "http1" },
        status: resp.status().as_u16(),
        stream: Some(stream),
        in_flight: ctx.in_flight.take(),
        access,
        permit: ctx.permit.take(),
        units: ctx.units.take(),
        usage: shared.usage.clone(),
        exchange: ctx.exchange.take(),
    };
    resp.body_mut().set_completion(completion);
    resp
}

fn host_value<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

async fn forward<'a>(
    state: &'a ProxyState,
    ctx: &mut Ctx<'a>,
    mut req: Request<ClientBody>,
    protocol: Option<RpcProtocol>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let limits = &ctx.shared.limits;
    if headers::header_bytes(req.headers()) > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge(limits.max_header_bytes));
    }
    if let Some(why) = headers::malformed(req.version(), req.headers()) {
        return Err(ProxyError::Malformed(why));
    }
    let host_hv = host_value(&req).ok_or(ProxyError::MissingHost)?;
    let host_str = host_hv
        .to_str()
        .map_err(|_| ProxyError::BadRequest("host is not ASCII"))?;
    let host = host::normalize(host_str);
    if host.is_empty() {
        return Err(ProxyError::MissingHost);
    }
    super::misdirected::check(ctx.conn, &ctx.shared.certs, &host)?;
    // Matched and forwarded in normal form, so `/x/../admin` is `/admin` everywhere.
    let normalized = tollgate_routing::path::normalize(req.uri().path(), ctx.shared.paths)
        .map_err(ProxyError::BadPath)?;
    let path: &str = &normalized;
    let m = state
        .snapshot
        .table
        .lookup(&host, ctx.conn.local_port, path)
        .map_err(|miss| match miss {
            Miss::UnknownApp(id) => ProxyError::UnknownApp(id.to_string()),
            Miss::NoRoute => ProxyError::NoRoute,
        })?;
    ctx.route = Some(m.route_id.clone());
    ctx.app = Some(m.app.clone());
    let app_id = m.app.id.as_str();
    let ups = state
        .upstreams
        .app(app_id)
        .ok_or_else(|| ProxyError::NoHealthyEndpoint(app_id.to_string()))?;
    ctx.app_header = Some(ups.app_header.clone());
    if let Some(cors) = m.cors {
        ctx.cors = Some(cors);
        ctx.origin = req.headers().get(header::ORIGIN).cloned();
        if cors::is_preflight(req.method(), req.headers()) {
            return preflight(cors, req.headers());
        }
    }
    if m.rpc.is_some() {
        ctx.protocol = protocol;
    }
    if m.app.status == AppStatus::Suspended {
        return Err(ProxyError::Suspended(app_id.to_string()));
    }
    if m.app.degraded.is_some() {
        return Err(ProxyError::Degraded(app_id.to_string()));
    }
    if let Some(limit) = m.max_body_bytes
        && req.body().size_hint().lower() > limit
    {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    let identity = match m.auth {
        Some(policy) => Some(authenticate(ctx, state, policy, app_id, req.headers()).await?),
        None => None,
    };
    let rewritten = m
        .rewrite(path)
        .or_else(|| matches!(normalized, Cow::Owned(_)).then(|| path.to_owned()));
    let path_and_query = upstream_path(req.uri(), rewritten)?;
    let rpc_call = match m.rpc {
        Some(spec) => Some(rpc::begin(
            spec,
            state,
            protocol,
            req.method(),
            req.headers(),
            path_and_query.path(),
        )?),
        None => None,
    };
    let mut meter = None;
    let app_limits = state
        .route_limits
        .get(&**m.route_id)
        .or_else(|| state.limits.get(app_id));
    if let Some(limits) = app_limits {
        let keys = RequestKeys {
            app: app_id,
            api_key: identity.as_ref().and_then(|i| i.key_id.as_deref()),
            subject: identity.as_ref().map(|i| i.subject.as_str()),
            client_ip: Some(ctx.conn.client.ip()),
            headers: Some(req.headers()),
        };
        let admission = admit(limits, &ctx.shared.limit_engine, &ctx.shared.metrics, &keys).await?;
        ctx.permit = admission.permit;
        meter = match (admission.meter, &rpc_call) {
            (Some(meter), Some(call)) => {
                // A field budget reads the response type, even for binary calls.
                let method = match (&call.method, &limits.unit, m.rpc) {
                    (None, BudgetUnit::Field(_), Some(spec)) => {
                        rpc::schema_of(spec, state).and_then(|s| s.method(path_and_query.path()))
                    }
                    _ => call.method.clone(),
                };
                Some(budget_filter(ctx, limits, meter, method.as_ref()))
            }
            // Plain HTTP has no messages: only bytes are metered as they stream.
            (Some(m), None) if limits.unit == BudgetUnit::Bytes => {
                Some(budget_filter(ctx, limits, m, None))
            }
            _ => None,
        };
    }
    let rpc_call = rpc_call.filter(|c| c.translates() || meter.is_some());
    let cluster = match m.upstream {
        Some(name) => ups.cluster(name),
        None => Some(ups.choose(req.headers())),
    }
    .ok_or_else(|| ProxyError::NoHealthyEndpoint(app_id.to_string()))?
    .clone();
    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers());
    if upgrade && cluster.spec.protocol.is_http2() {
        return Err(ProxyError::UpgradeUnsupported);
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let max_body = m.max_body_bytes;

    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarded(
        &mut parts.headers,
        &ctx.conn.client_ip,
        ctx.conn.tls,
        Some(&host_hv),
        limits.trust_forwarded_headers,
    );
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    auth::strip_identity_headers(&mut parts.headers, &limits.identity_headers);
    parts
        .headers
        .insert(X_APP_ID.clone(), ups.app_header.clone());
    if let Some(id) = &identity {
        auth::set_identity_headers(&mut parts.headers, id, &ups.app_header);
    }
    if cluster.spec.protocol.is_http2() {
        // HTTP/2 upstreams get the endpoint as :authority; the client's host is in x-forwarded-host.
        parts.headers.remove(header::HOST);
    } else {
        parts.headers.insert(header::HOST, host_hv);
    }

    let body_empty = body.is_end_stream();
    let exchange = (!body_empty).then(|| Arc::new(Exchange::new()));
    ctx.exchange = exchange.clone();
    let mut path_and_query = path_and_query;
    let body = match &rpc_call {
        Some(call) => {
            parts.uri = Uri::from(path_and_query);
            let body = rpc::request::translate(
                call,
                &mut parts,
                body,
                max_body,
                exchange.clone(),
                cluster.idle_timeout,
            )
            .await?;
            path_and_query = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            body
        }
        None => RequestBody::new(body, max_body, exchange.clone()),
    };
    let retryable = body.replay().is_some();
    let attempt = Attempt {
        cluster: &cluster,
        app_id,
        method: parts.method,
        headers: parts.headers,
        path_and_query,
        retryable,
        deadline: rpc_call.as_ref().and_then(|c| c.deadline),
    };
    let (resp, in_flight) = attempt.send(ctx, body, exchange.as_deref()).await?;
    ctx.in_flight = Some(in_flight);
    Ok(match &rpc_call {
        Some(call) if matches!(call.protocol, RpcProtocol::ConnectUnary { .. }) => {
            rpc::unary::respond(call, resp, cluster.idle_timeout).await
        }
        Some(call) => rpc::response::respond(call, resp, cluster.idle_timeout, exchange, meter),
        None => into_client_response(ctx, resp, client_upgrade, exchange, &cluster, meter),
    })
}

/// The stream filter paying for each response message from the app's budget.
fn budget_filter(
    ctx: &mut Ctx<'_>,
    limits: &AppLimits,
    meter: Meter,
    method: Option<&MethodSchema>,
) -> Box<dyn StreamFilter> {
    let units = match &limits.unit {
        BudgetUnit::Bytes => Units::Bytes,
        BudgetUnit::Field(path) => {
            match method.and_then(|m| FieldPath::resolve(m.output(), path)) {
                Some(field) => Units::Field(field),
                None => {
                    tracing::warn!(app = %limits.app, field = %path, "budget field not in the route's schema; metering messages");
                    Units::Messages
                }
            }
        }
        BudgetUnit::Messages | BudgetUnit::Requests => Units::Messages,
    };
    let filter = BudgetFilter::new(
        meter,
        units,
        limits.app.clone(),
        ctx.shared.metrics.clone(),
        limits.budget_fails_open(),
    );
    ctx.units = Some(filter.spent.clone());
    Box::new(filter)
}

/// The edge's answer to a CORS preflight: 204 with the grants, or 403.
fn preflight(
    cors: &CorsSpec,
    headers: &http::HeaderMap,
) -> Result<Response<ResponseBody>, ProxyError> {
    let grants = cors::preflight(cors, headers).map_err(ProxyError::CorsRefused)?;
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    *resp.headers_mut() = grants;
    Ok(resp)
}

/// Runs the route's auth policy and counts the result.
async fn authenticate(
    ctx: &Ctx<'_>,
    state: &ProxyState,
    policy: &AuthPolicy,
    app_id: &str,
    headers: &http::HeaderMap,
) -> Result<auth::Identity, ProxyError> {
    let result = auth::authenticate(&state.auth, policy, app_id, headers).await;
    let label = match &result {
        Ok(id) if id.method == "api_key" => "ok_api_key",
        Ok(_) => "ok_token",
        Err(f) => f.reason(),
    };
    ctx.shared
        .metrics
        .auth_results
        .with_label_values(&[app_id, label])
        .inc();
    result.map_err(|f| {
        tracing::debug!(
            app = app_id,
            reason = f.reason(),
            "request refused by auth policy"
        );
        if f.is_forbidden() {
            ProxyError::Forbidden {
                scope: f == AuthFailure::InsufficientScope,
            }
        } else {
            ProxyError::Unauthenticated {
                invalid: f != AuthFailure::Missing,
            }
        }
    })
}

/// The upstream path: the route's rewrite, or the original, with the query kept.
fn upstream_path(uri: &Uri, rewritten: Option<String>) -> Result<PathAndQuery, ProxyError> {
    let Some(mut path) = rewritten else {
        return Ok(uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")));
    };
    if let Some(q) = uri.query() {
        path.push('?');
        path.push_str(q);
    }
    PathAndQuery::try_from(path).map_err(|_| ProxyError::BadRequest("invalid path"))
}

/// One request's tries against a cluster.
struct Attempt<'a> {
    cluster: &'a Arc<Cluster>,
    app_id: &'a str,
    method: Method,
    headers: http::HeaderMap,
    path_and_query: PathAndQuery,
    /// Only bodies known in full can be sent again: streamed bodies are never buffered.
    retryable: bool,
    /// The call's own deadline: no point waiting longer for response headers.
    deadline: Option<std::time::Duration>,
}

impl Attempt<'_> {
    async fn send(
        mut self,
        ctx: &Ctx<'_>,
        body: RequestBody,
        exchange: Option<&Exchange>,
    ) -> Result<(Response<Incoming>, InFlight), ProxyError> {
        let cluster = self.cluster;
        let metrics = &ctx.shared.metrics;
        let max_retries = if self.retryable {
            cluster.spec.retry.max_retries
        } else {
            0
        };
        let idempotent = matches!(
            self.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let version = if cluster.spec.protocol.is_http2() {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        cluster.retry.deposit();
        let mut body = Some(body);
        let mut exclude = None;
        let mut tries = 0;
        loop {
            let now = now_ms();
            let idx = cluster
                .balancer
                .pick(&cluster.endpoints, &self.headers, self.app_id, exclude, now)
                // With nothing else left, a retry may go back to the same endpoint.
                .or_else(|| exclude.filter(|&i| cluster.endpoints[i].available(now)))
                .ok_or_else(|| ProxyError::NoHealthyEndpoint(self.app_id.to_string()))?;
            let ep = &cluster.endpoints[idx];
            let uri = Uri::builder()
                .scheme(cluster.scheme.clone())
                .authority(ep.authority.clone())
                .path_and_query(self.path_and_query.clone())
                .build()
                .map_err(|_| ProxyError::BadRequest("invalid path"))?;
            let headers = if tries < max_retries {
                self.headers.clone()
            } else {
                std::mem::take(&mut self.headers)
            };
            let this_body = if tries < max_retries {
                body.as_ref().and_then(RequestBody::replay)
            } else {
                body.take()
            };
            let mut up = Request::new(this_body.unwrap_or_else(RequestBody::empty));
            *up.method_mut() = self.method.clone();
            *up.uri_mut() = uri;
            *up.version_mut() = version;
            *up.headers_mut() = headers;

            let in_flight = ep.begin();
            let wait = self.deadline.map_or(cluster.response_header_timeout, |d| {
                d.min(cluster.response_header_timeout)
            });
            let sent = tokio::time::timeout(wait, cluster.client.request(up)).await;
            let err = match sent {
                Ok(Ok(resp)) => {
                    // A gateway error caused by the client's broken body is not the endpoint's.
                    let client_broke = exchange.is_some_and(|x| x.client_fault().is_some());
                    if !matches!(resp.status().as_u16(), 502..=504) {
                        ep.record_success();
                    } else if !client_broke {
                        self.failed(ctx, idx);
                    }
                    return Ok((resp, in_flight));
                }
                Ok(Err(e)) => {
                    if let Some(err) = client_failure(&e, exchange) {
                        tracing::debug!(app = self.app_id, error = %error_chain(&e), "request failed on the client's side");
                        return Err(err);
                    }
                    tracing::warn!(app = self.app_id, endpoint = %ep.address, error = %error_chain(&e), "upstream request failed");
                    if e.is_connect() {
                        ProxyError::UpstreamConnect
                    } else {
                        ProxyError::UpstreamProtocol
                    }
                }
                // The upstream is waiting for the rest of a body the client does not send.
                Err(_) if exchange.is_some_and(Exchange::waiting_on_client) => {
                    return Err(ProxyError::client_body(ClientFault::Timeout));
                }
                Err(_) => {
                    tracing::warn!(app = self.app_id, endpoint = %ep.address, "upstream response headers timed out");
                    ProxyError::UpstreamTimeout(wait)
                }
            };
            drop(in_flight);
            metrics
                .upstream_errors
                .with_label_values(&[self.app_id, err.code()])
                .inc();
            self.failed(ctx, idx);
            let safe = match err {
                ProxyError::UpstreamConnect => true,
                ProxyError::UpstreamProtocol => idempotent,
                _ => false,
            };
            if !safe || tries >= max_retries {
                return Err(err);
            }
            if !cluster.retry.withdraw() {
                metrics
                    .upstream_retries
                    .with_label_values(&[self.app_id, "budget_exhausted"])
                    .inc();
                return Err(err);
            }
            metrics
                .upstream_retries
                .with_label_values(&[self.app_id, "sent"])
                .inc();
            tries += 1;
            exclude = Some(idx);
        }
    }

    fn failed(&self, ctx: &Ctx<'_>, idx: usize) {
        let ep = &self.cluster.endpoints[idx];
        if ep.record_failure(&self.cluster.spec.outlier) {
            tracing::warn!(app = self.app_id, endpoint = %ep.address, "endpoint ejected after consecutive failures");
            ctx.shared
                .metrics
                .upstream_ejections
                .with_label_values(&[self.app_id, &self.cluster.name])
                .inc();
        }
    }
}

/// The client's side of a failed upstream request: its body ran over the limit,
/// broke, or could not be translated. None of these is charged to the upstream.
fn client_failure(
    e: &hyper_util::client::legacy::Error,
    exchange: Option<&Exchange>,
) -> Option<ProxyError> {
    match body_error_of(e) {
        Some(BodyError::TooLarge(n)) => return Some(ProxyError::BodyTooLarge(*n)),
        Some(BodyError::Invalid(why)) => {
            let message = format!("invalid request body: {why}");
            return Some(ProxyError::ClientBody(ClientFault::Invalid, message));
        }
        Some(BodyError::Client(fault, _)) => return Some(ProxyError::client_body(*fault)),
        _ => {}
    }
    // An HTTP/2 upstream sees only a reset stream: the exchange tells what happened.
    let x = exchange?;
    if x.request_too_large() {
        return Some(ProxyError::BodyTooLarge(0));
    }
    x.client_fault()
        .map(|(fault, message)| ProxyError::ClientBody(*fault, message.clone()))
}

/// Our own request body error, when that is what failed the upstream request.
fn body_error_of(e: &hyper_util::client::legacy::Error) -> Option<&BodyError> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return Some(b);
        }
        src = s.source();
    }
    None
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

fn into_client_response(
    ctx: &Ctx<'_>,
    mut resp: Response<Incoming>,
    client_upgrade: Option<OnUpgrade>,
    exchange: Option<Arc<Exchange>>,
    cluster: &Cluster,
    meter: Option<Box<dyn StreamFilter>>,
) -> Response<ResponseBody> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let Some(client) = client_upgrade {
        let upstream = hyper::upgrade::on(&mut resp);
        upgrade::splice(
            client,
            upstream,
            ctx.shared.metrics.clone(),
            cluster.app.to_string(),
        );
    }
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, switching);
    parts.version = ctx.client_version;
    let body = match meter {
        Some(filter) => ResponseBody::metered(body, filter, cluster.idle_timeout, exchange),
        None => ResponseBody::upstream(body, cluster.idle_timeout, exchange),
    };
    Response::from_parts(parts, body)
}
