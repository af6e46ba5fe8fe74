//! The admin listener: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz`
//! (serving and not draining) and `/config` (a read-only view of the active config).

use crate::clock::now_ms;
use crate::state::Shared;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves admin requests until `stop` flips.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
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
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
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
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/config" => {
            let body = config_view(shared).to_string();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics /healthz /readyz /config\n",
        ),
    }
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
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let (certs, certs_refused) = shared.cert_health.view(&shared.certs.current());
    json!({
        "version": state.snapshot.version,
        "api_hosts": state.snapshot.spec.api_hosts,
        "apps": state.snapshot.spec.apps,
        "routes": state.snapshot.spec.routes,
        "upstreams": upstreams,
        "certificates": certs,
        "certificates_refused": certs_refused,
        "control": control,
    })
}
