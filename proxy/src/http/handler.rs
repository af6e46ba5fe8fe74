//! The request path: route the request, run the route's filter chain ([`crate::chain`]),
//! pick a cluster, build the upstream request, try it ([`super::attempt`]), and stream
//! the answer back with its accounting attached.

use super::attempt::Attempt;
use super::body::{Exchange, RequestBody, ResponseBody};
use super::client_body::ClientBody;
use super::completion::{AccessRecord, Completion, StreamGuard};
use super::errors::ProxyError;
use super::headers::{self, X_APP_ID, X_REQUEST_ID};
use super::upgrade;
use crate::acme;
use crate::auth;
use crate::chain::{ClusterChoice, RequestCx, ResponseCx, RoutePlan};
use crate::credential_memo::CredentialMemo;
use crate::http::stream_stats::{RpcEnd, StreamProtocol, StreamStats};
use crate::metrics::Metrics;
use crate::resume::producer::Source;
use crate::resume::token::{Owner, Wire};
use crate::rpc;
use crate::rpc::response::Translated;
use crate::state::{ProxyState, Shared};
use crate::trace;
use crate::upstream::AppUpstreams;
use crate::upstream::cluster::Cluster;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Instant;
use tollgate_filters::filter::StreamFilter;
use tollgate_filters::rpc::RpcProtocol;
use tollgate_routing::host;
use tollgate_routing::matcher::Miss;

/// What the listener knows about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub local_port: u16,
    pub tls: bool,
    /// The client IP as a header value, built once per connection.
    pub client_ip: HeaderValue,
    /// TLS with SNI: the certificate presented, which bounds the hosts served (421).
    pub presented: Option<super::misdirected::PresentedCert>,
    /// The TLS handshake's timing, kept only when spans are exported.
    pub handshake: Option<Arc<trace::Handshake>>,
    /// The last credential presented here and its digest.
    pub credentials: CredentialMemo,
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
            handshake: None,
            credentials: CredentialMemo::default(),
        }
    }
}

static NO_ROUTE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));

/// Per-request facts gathered on the way: what the answer's headers need, and the
/// accounting ([`Completion`]) the response body records when it ends.
struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    conn: &'a ConnInfo,
    request_id: HeaderValue,
    client_version: Version,
    app_header: Option<HeaderValue>,
    /// The protocol errors are rendered in: gRPC or gRPC-Web from the start, Connect
    /// once the route is known to be a gRPC service.
    protocol: Option<RpcProtocol>,
    /// The route's plan, whose response filters see every answer.
    plan: Option<&'a RoutePlan>,
    /// The request's `Origin`, for the response filters.
    origin: Option<HeaderValue>,
    /// Filled in as the request goes: route, app, quota permit, budget units,
    /// the endpoint in flight, the request body's exchange.
    done: Completion,
}

/// Serves one request; never fails, every error becomes a response.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let http2 = req.version() == Version::HTTP_2;
    let stream = StreamGuard::new(if http2 {
        &shared.streams_h2
    } else {
        &shared.streams_h1
    });
    let request_id = headers::request_id(req.headers());
    let trace = shared.tracing.begin(&mut req, &conn, &request_id);
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
    let done = Completion {
        metrics: shared.metrics.clone(),
        started,
        route: NO_ROUTE.clone(),
        app: None,
        series: None,
        protocol: if http2 { "http2" } else { "http1" },
        status: 0,
        _stream: Some(stream),
        in_flight: None,
        access,
        permit: None,
        units: None,
        usage: shared.usage.clone(),
        exchange: None,
        trace,
        stream: None,
    };
    let mut ctx = Ctx {
        shared: &shared,
        conn: &conn,
        request_id,
        client_version: req.version(),
        app_header: None,
        protocol: grpc,
        plan: None,
        origin: None,
        done,
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
    if let Some(plan) = ctx.plan {
        let rcx = ResponseCx {
            conn: &conn,
            origin: ctx.origin.as_ref(),
        };
        plan.response(&rcx, resp.headers_mut());
    }
    let h = resp.headers_mut();
    if let Some(app) = ctx.app_header.take() {
        h.insert(X_APP_ID.clone(), app);
    }
    h.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    let mut completion = ctx.done;
    completion.status = resp.status().as_u16();
    resp.body_mut().set_completion(completion);
    resp
}

fn host_value<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

/// The request path, phase by phase: ACME challenges, route, request-head filters,
/// cluster, upstream request, tries, response.
async fn forward<'a>(
    state: &'a ProxyState,
    ctx: &mut Ctx<'a>,
    req: Request<ClientBody>,
    protocol: Option<RpcProtocol>,
) -> Result<Response<ResponseBody>, ProxyError> {
    // ACME HTTP-01 comes before routing, redirects, auth and limits.
    if let Some(answer) = acme::http01::answer(&state.acme, &ctx.shared.acme_metrics, &req) {
        return Ok(answer);
    }
    let mut span = ctx.done.trace.child("route");
    let routed = route(state, ctx, &req, protocol);
    if span.is_recording() {
        trace_route(&mut span, &mut ctx.done, &routed, req.method());
    }
    drop(span);
    let routed = routed?;
    let plan = routed.plan;
    let (mut head, body) = req.into_parts();

    let mut cx = RequestCx {
        shared: ctx.shared,
        state,
        conn: ctx.conn,
        plan,
        body_hint: body.size_hint().lower(),
        upstream_path: routed.path_and_query.path(),
        protocol,
        identity: None,
        rpc: None,
        permit: None,
        meter: None,
        units: None,
        trace: &ctx.done.trace,
    };
    if let Some(answer) = plan.request(&mut head, &mut cx).await? {
        return Ok(answer);
    }
    ctx.done.permit = cx.permit.take();
    ctx.done.units = cx.units.take();
    let meter = cx.meter.take();
    // Native gRPC passes through untranslated, but its deadline still bounds the wait.
    let deadline = cx.rpc.as_ref().and_then(|c| c.deadline);
    let rpc_protocol = cx.rpc.as_ref().map(|c| c.protocol);
    let rpc_call = cx.rpc.take().filter(|c| c.translates() || meter.is_some());

    let cluster = match &plan.cluster {
        ClusterChoice::App => Some(routed.upstreams.choose(&head.headers)),
        ClusterChoice::Named(cluster) => cluster.as_ref(),
    }
    .ok_or_else(|| ProxyError::NoHealthyEndpoint(plan.app.id.clone()))?
    .clone();

    let upgrade = head.version == Version::HTTP_11 && headers::is_upgrade(&head.headers);
    if upgrade && cluster.spec.protocol.is_http2() {
        return Err(ProxyError::UpgradeUnsupported);
    }
    let client_upgrade = upgrade
        .then(|| head.extensions.remove::<OnUpgrade>())
        .flatten();
    upstream_headers(ctx, &mut head.headers, upgrade, &routed, &cluster);
    plan.upstream_request(&cx, &mut head.headers);
    // Who may resume this stream, if it turns out to be a resumable one.
    let owner = plan
        .resume
        .as_ref()
        .filter(|_| !upgrade)
        .map(|_| Owner::of(&plan.app.id, cx.identity.as_ref(), cx.upstream_path));
    drop(cx);
    if let Some(p) = rpc_protocol {
        let path = routed.path_and_query.path();
        ctx.done.trace.attrs(|| trace::rpc_attributes(p, path));
    }

    let body_empty = body.is_end_stream();
    let exchange = (!body_empty).then(|| Arc::new(Exchange::new()));
    ctx.done.exchange = exchange.clone();
    let mut path_and_query = routed.path_and_query;
    let body = match &rpc_call {
        Some(call) => {
            let mut span = match call.translates() {
                true => ctx.done.trace.child("translate"),
                false => trace::TraceSpan::none(),
            };
            span.attrs(|| trace::rpc_attributes(call.protocol, path_and_query.path()));
            head.uri = Uri::from(path_and_query);
            let body = rpc::request::translate(
                call,
                &mut head,
                body,
                plan.max_body_bytes,
                exchange.clone(),
                cluster.idle_timeout,
            )
            .await;
            if let Err(e) = &body {
                span.set("tollgate.translate.result", e.code());
            }
            drop(span);
            let body = body?;
            path_and_query = head
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            body
        }
        None => RequestBody::new(body, plan.max_body_bytes, exchange.clone()),
    };

    let attempt = Attempt {
        cluster: &cluster,
        app_id: &plan.app.id,
        method: head.method,
        headers: head.headers,
        path_and_query,
        retryable: body.replay().is_some(),
        deadline,
        trace: &ctx.done.trace,
    };
    let (resp, in_flight) = attempt
        .send(&ctx.shared.metrics, body, exchange.as_deref())
        .await?;
    ctx.done.in_flight = Some(in_flight);

    let resumable = plan.resume.as_deref().zip(owner);
    let kind = rpc_protocol.or(protocol).and_then(StreamProtocol::of_rpc);
    let metrics = &ctx.shared.metrics;
    let idle = cluster.idle_timeout;
    Ok(match (&rpc_call, resumable) {
        (Some(call), _) if matches!(call.protocol, RpcProtocol::ConnectUnary { .. }) => {
            rpc::unary::respond(call, resp, idle).await
        }
        (Some(call), resumable) => {
            let wire = Wire::Rpc(call.protocol);
            let resumable = resumable.filter(|_| wire.resumable());
            match rpc::response::translate(call, resp, meter, resumable.is_some()) {
                Translated::Stream(mut head, stream) => {
                    ctx.done.stream = kind.map(|k| StreamStats::new(metrics, k));
                    match resumable {
                        Some((spec, owner)) => {
                            let source = Source::Rpc(stream);
                            let resume = &ctx.shared.resume;
                            resume.start_stream(spec, owner, wire, head, source, idle)
                        }
                        None => {
                            *head.body_mut() = ResponseBody::rpc(*stream, idle, exchange);
                            head
                        }
                    }
                }
                Translated::Answered(answer, end) => {
                    ctx.done.stream = kind.map(|k| StreamStats::new(metrics, k).ended(end));
                    answer
                }
            }
        }
        (None, Some((spec, owner))) if is_event_stream(&resp) => {
            ctx.done.stream = Some(StreamStats::new(metrics, StreamProtocol::Sse));
            let mut out = into_client_response(ctx, resp, None, None, &cluster, meter);
            let body = std::mem::replace(out.body_mut(), ResponseBody::empty());
            let resume = &ctx.shared.resume;
            resume.start_stream(spec, owner, Wire::Sse, out, Source::sse(body), idle)
        }
        (None, _) => {
            ctx.done.stream = passthrough_stats(metrics, kind, protocol, &resp);
            into_client_response(ctx, resp, client_upgrade, exchange, &cluster, meter)
        }
    })
}

/// The tally of a stream passed through as the upstream sent it (native gRPC, RPC
/// on routes that do not translate, server-sent events), counted from its frames.
fn passthrough_stats<B>(
    metrics: &Metrics,
    kind: Option<StreamProtocol>,
    protocol: Option<RpcProtocol>,
    resp: &Response<B>,
) -> Option<StreamStats> {
    if is_event_stream(resp) {
        return Some(StreamStats::new(metrics, StreamProtocol::Sse).counting());
    }
    // Base64 text cannot be counted without decoding it.
    if matches!(protocol, Some(RpcProtocol::GrpcWeb { text: true })) {
        return None;
    }
    let stats = StreamStats::new(metrics, kind?).counting();
    Some(if resp.status() != StatusCode::OK {
        stats.ended(RpcEnd::Error)
    } else {
        // Trailers-only: the status is in the head.
        stats.ended(RpcEnd::of_grpc_status(resp.headers().get("grpc-status")))
    })
}

/// The route span's verdict, and the request span's name and route once known.
fn trace_route(
    span: &mut trace::TraceSpan,
    done: &mut Completion,
    routed: &Result<Routed<'_>, ProxyError>,
    method: &http::Method,
) {
    match routed {
        Ok(r) => {
            let attrs = trace::route_attributes(&done.route, &r.plan.app.id);
            span.attrs(|| attrs.clone());
            done.trace.route(method, &done.route, attrs);
        }
        Err(e) => span.set("tollgate.route.result", e.code()),
    }
}

/// A successful `text/event-stream` answer: an SSE stream that can be made resumable.
fn is_event_stream<B>(resp: &Response<B>) -> bool {
    resp.status() == StatusCode::OK
        && resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
            })
}

/// A request matched to its route, with what the later phases need from the match.
struct Routed<'a> {
    plan: &'a RoutePlan,
    upstreams: &'a Arc<AppUpstreams>,
    /// The client's host, as it sent it.
    host: HeaderValue,
    /// Whether that host is the request's one `Host` header (no authority in the URI).
    host_is_header: bool,
    /// The upstream path (normalised, rewritten) and the client's query.
    path_and_query: PathAndQuery,
}

/// Checks the head the client sent, normalises host and path, and finds the route:
/// the one lookup a request makes.
fn route<'a>(
    state: &'a ProxyState,
    ctx: &mut Ctx<'a>,
    req: &Request<ClientBody>,
    protocol: Option<RpcProtocol>,
) -> Result<Routed<'a>, ProxyError> {
    let limits = &ctx.shared.limits;
    if headers::header_bytes(req.headers()) > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge(limits.max_header_bytes));
    }
    if let Some(why) = headers::malformed(req.version(), req.headers()) {
        return Err(ProxyError::Malformed(why));
    }
    let host_hv = host_value(req).ok_or(ProxyError::MissingHost)?;
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
    ctx.done.route = m.route_id.clone();
    ctx.done.app = Some(m.app.clone());
    let plan = state
        .routes
        .get(m.index)
        .and_then(Option::as_deref)
        .ok_or(ProxyError::NoRoute)?;
    ctx.done.series = Some(plan.series.clone());
    let upstreams = plan
        .upstreams
        .as_ref()
        .ok_or_else(|| ProxyError::NoHealthyEndpoint(m.app.id.clone()))?;
    ctx.app_header = Some(upstreams.app_header.clone());
    ctx.plan = Some(plan);
    ctx.origin = req.headers().get(header::ORIGIN).cloned();
    if plan.rpc {
        ctx.protocol = protocol;
    }
    let rewritten = m
        .rewrite(path)
        .or_else(|| matches!(normalized, Cow::Owned(_)).then(|| path.to_owned()));
    Ok(Routed {
        plan,
        upstreams,
        host: host_hv,
        host_is_header: req.uri().authority().is_none(),
        path_and_query: upstream_path(req.uri(), rewritten)?,
    })
}

/// The proxy's own rewriting of the head sent upstream: hop-by-hop headers out,
/// forwarding headers in, identity headers only from what the proxy verified.
fn upstream_headers(
    ctx: &Ctx<'_>,
    headers: &mut http::HeaderMap,
    upgrade: bool,
    routed: &Routed<'_>,
    cluster: &Cluster,
) {
    let limits = &ctx.shared.limits;
    headers::strip_hop_by_hop(headers, upgrade);
    headers::set_forwarded(
        headers,
        &ctx.conn.client_ip,
        ctx.conn.tls,
        Some(&routed.host),
        limits.trust_forwarded_headers,
    );
    headers.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    auth::strip_identity_headers(headers, &limits.identity_headers);
    headers.insert(X_APP_ID.clone(), routed.upstreams.app_header.clone());
    if cluster.spec.protocol.is_http2() {
        // HTTP/2 upstreams get the endpoint as :authority; the client's host is in x-forwarded-host.
        headers.remove(header::HOST);
    } else if !routed.host_is_header {
        headers.insert(header::HOST, routed.host.clone());
    }
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
