//! Small in-process tenant services for the demo: a JSON echo with a server-sent
//! events stream, a plain-text greeter, and the gRPC `TestService`.

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

type DemoBody = BoxBody<Bytes, Infallible>;

/// Starts a tenant service on an ephemeral loopback port; returns its address.
pub async fn start(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc =
                    service_fn(move |req| async move { Ok::<_, Infallible>(answer(name, req)) });
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Starts the tonic `tollgate.test.v1.TestService` (h2c) on an ephemeral loopback
/// port; returns its address.
pub async fn start_grpc() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) =
            tollgate_proto::serve(listener, tollgate_proto::TestServiceImpl::new()).await
        {
            tracing::warn!(error = %e, "demo gRPC tenant stopped");
        }
    });
    Ok(addr)
}

fn answer(name: &'static str, req: Request<Incoming>) -> Response<DemoBody> {
    match req.uri().path() {
        "/healthz" => text("ok\n"),
        "/events" => events(name),
        _ if name == "globex" => text("hello from globex\n"),
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            let body = serde_json::json!({
                "app": name,
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "headers": headers,
            });
            let mut r = Response::new(full(format!("{body:#}\n")));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
    }
}

fn text(s: &'static str) -> Response<DemoBody> {
    Response::new(full(s.to_string()))
}

fn full(s: String) -> DemoBody {
    Full::new(Bytes::from(s)).boxed()
}

/// Five server-sent events, one per second.
fn events(name: &'static str) -> Response<DemoBody> {
    let stream = futures_util::stream::unfold(0u32, move |i| async move {
        if i == 5 {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let line = format!("id: {i}\ndata: {{\"app\":\"{name}\",\"tick\":{i}}}\n\n");
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), i + 1))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    r
}
