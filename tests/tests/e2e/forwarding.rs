//! Forwarding through the real proxy: streaming without buffering, header rules,
//! tenant and explicit routing, header and body limits, WebSocket upgrades, and
//! HTTP/2 (h2c and TLS) clients in front of HTTP/1.1 upstreams.

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tollgate_tests::client::{self, Sender, TestBody};
use tollgate_tests::config::{Config, Files};
use tollgate_tests::helpers::{WAIT, error_code, eventually, json, read_exactly, read_to_end};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::tls::{TestCert, client_config};
use tollgate_tests::upstream::Upstream;
use tollgate_tests::{BoxError, tls};

/// An app section with one HTTP/1.1 endpoint and extra `[[apps]]` lines.
fn app(id: &str, addr: SocketAddr, extra: &str) -> String {
    format!(
        "[[apps]]\nid = \"{id}\"\n{extra}\n[apps.upstreams.default]\nendpoints = [{{ address = \"{addr}\" }}]"
    )
}

/// A plain listener `http` on the API host `api.test` with the given app sections.
fn api_proxy(apps: &[String]) -> ProxyProcess {
    let mut cfg = Config::new()
        .top("api_hosts = [\"api.test\"]")
        .listener("http");
    for a in apps {
        cfg = cfg.raw(a);
    }
    ProxyProcess::start(&cfg.build(), &[]).expect("proxy starts")
}

async fn send(s: &mut Sender, req: Request<TestBody>) -> http::Response<Incoming> {
    tokio::time::timeout(WAIT, s.send(req))
        .await
        .expect("response head in time")
        .expect("response")
}

/// GETs `path` on the API host through a fresh connection and reads the whole answer.
async fn get(addr: SocketAddr, h2: bool, host: &str, path: &str) -> (u16, http::HeaderMap, String) {
    let mut s = client::connect_plain(addr, h2).await.expect("connect");
    let req = client::get(&s, "http", host, path);
    client::text(send(&mut s, req).await).await.expect("body")
}

fn body_of(chunks: Vec<Bytes>) -> TestBody {
    let frames = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(c))),
    );
    BodyExt::boxed(StreamBody::new(frames))
}

// ---------------------------------------------------------------------------
// 1. Streaming without buffering

/// The first chunk reaches the client while the upstream is still holding the second.
async fn streams_unbuffered(
    addr: SocketAddr,
    up: &Upstream,
    h2: bool,
    path: &str,
    content_type: &str,
    parts: [&str; 2],
) {
    let mut s = client::connect_plain(addr, h2).await.expect("connect");
    let req = client::get(&s, "http", "api.test", path);
    let resp = send(&mut s, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.version(),
        if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        }
    );
    assert_eq!(
        resp.headers()["content-type"],
        content_type,
        "content type passes through"
    );
    let mut body = resp.into_body();
    // The upstream sends `parts[1]` only after release(): the first must come alone.
    read_exactly(&mut body, parts[0].as_bytes(), WAIT)
        .await
        .unwrap_or_else(|e| panic!("first chunk of {path} (h2={h2}) while upstream blocked: {e}"));
    up.release();
    read_exactly(&mut body, parts[1].as_bytes(), WAIT)
        .await
        .unwrap_or_else(|e| panic!("second chunk of {path} (h2={h2}): {e}"));
    let rest = read_to_end(&mut body, WAIT).await.expect("end of stream");
    assert!(rest.is_empty(), "nothing after the second chunk: {rest:?}");
}

#[tokio::test]
async fn streams_and_sse_are_not_buffered_over_h1_and_h2() {
    let up = Upstream::start("acme").await;
    let proxy = api_proxy(&[app("acme", up.addr, "")]);
    let addr = proxy.addr("http");
    for h2 in [false, true] {
        streams_unbuffered(
            addr,
            &up,
            h2,
            "/v1/acme/stream",
            "text/plain",
            ["first\n", "second\n"],
        )
        .await;
        streams_unbuffered(
            addr,
            &up,
            h2,
            "/v1/acme/sse",
            "text/event-stream",
            ["data: first\n\n", "data: second\n\n"],
        )
        .await;
    }
    assert_eq!(up.hits(), 4);
}

// ---------------------------------------------------------------------------
// 2. Header rules

fn is_hex32(v: &str) -> bool {
    v.len() == 32
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn hop_by_hop_forwarded_and_request_id_headers() {
    let up = Upstream::start("acme").await;
    let proxy = api_proxy(&[app("acme", up.addr, "")]);
    let addr = proxy.addr("http");

    let mut s = client::connect_plain(addr, false).await.expect("connect");
    let req = Request::builder()
        .uri("/v1/acme/headers")
        .header("host", "api.test")
        .header("connection", "x-foo, keep-alive")
        .header("x-foo", "connection-scoped")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.test")
        .header("x-kept", "end-to-end")
        .body(client::empty())
        .expect("request");
    let (status, headers, body) = client::text(send(&mut s, req).await).await.expect("body");
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    let seen = &v["headers"];
    for gone in ["x-foo", "keep-alive", "proxy-authorization"] {
        assert!(
            seen.get(gone).is_none(),
            "upstream saw hop-by-hop `{gone}`: {seen}"
        );
    }
    let conn = seen
        .get("connection")
        .and_then(|c| c.as_str())
        .unwrap_or("");
    assert!(
        !conn.contains("x-foo"),
        "client's Connection list reached the upstream: {conn}"
    );
    assert_eq!(seen["x-kept"], "end-to-end");
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "spoofed x-forwarded-for replaced"
    );
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "api.test");
    assert_eq!(seen["host"], "api.test");
    // The request id: generated, sent upstream, and returned.
    let rid = headers["x-request-id"].to_str().expect("ascii").to_string();
    assert!(is_hex32(&rid), "generated request id {rid:?}");
    assert_eq!(seen["x-request-id"], rid.as_str());
    assert_eq!(headers["x-tollgate-app-id"], "acme");
    // The upstream's `connection: keep-alive` stays on its hop; other headers pass.
    assert!(
        headers.get("connection").is_none(),
        "upstream Connection leaked: {headers:?}"
    );
    assert_eq!(headers["x-upstream-hop"], "secret");

    // A client-chosen request id is kept, both ways, and differs per request when generated.
    for h2 in [false, true] {
        let mut s = client::connect_plain(addr, h2).await.expect("connect");
        let mut req = client::get(&s, "http", "api.test", "/v1/acme/rid");
        req.headers_mut()
            .insert("x-request-id", "client-id-42".parse().expect("value"));
        let (status, headers, body) = client::text(send(&mut s, req).await).await.expect("body");
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-request-id"], "client-id-42");
        assert_eq!(json(&body)["headers"]["x-request-id"], "client-id-42");
        let (_, h1, _) = get(addr, h2, "api.test", "/v1/acme/a").await;
        let (_, h2h, _) = get(addr, h2, "api.test", "/v1/acme/b").await;
        assert_ne!(
            h1["x-request-id"], h2h["x-request-id"],
            "fresh ids per request"
        );
        // An id that is not 1-128 visible ASCII characters is replaced.
        let mut req = client::get(&s, "http", "api.test", "/v1/acme/rid");
        req.headers_mut()
            .insert("x-request-id", "has a space".parse().expect("value"));
        let (_, headers, body) = client::text(send(&mut s, req).await).await.expect("body");
        let rid = headers["x-request-id"].to_str().expect("ascii");
        assert!(is_hex32(rid), "replaced request id {rid:?}");
        assert_eq!(json(&body)["headers"]["x-request-id"], rid);
    }
}

/// Serves every connection with HTTP/1.1, answering each request with `respond()`.
async fn fixed_upstream(
    respond: fn() -> http::Response<Full<Bytes>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(respond())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn headers_named_in_the_upstream_connection_header_are_removed() {
    let (addr, task) = fixed_upstream(|| {
        let mut r = http::Response::new(Full::new(Bytes::from_static(b"ok")));
        let h = r.headers_mut();
        h.insert("connection", "x-hop-secret".parse().expect("value"));
        h.insert("x-hop-secret", "1".parse().expect("value"));
        h.insert("keep-alive", "timeout=5".parse().expect("value"));
        h.insert("proxy-authenticate", "Basic".parse().expect("value"));
        h.insert("x-end-to-end", "kept".parse().expect("value"));
        r
    })
    .await;
    let proxy = api_proxy(&[app("acme", addr, "")]);
    for h2 in [false, true] {
        let (status, headers, body) = get(proxy.addr("http"), h2, "api.test", "/v1/acme/x").await;
        assert_eq!((status, body.as_str()), (200, "ok"), "h2={h2}");
        for gone in [
            "connection",
            "x-hop-secret",
            "keep-alive",
            "proxy-authenticate",
        ] {
            assert!(
                headers.get(gone).is_none(),
                "h2={h2}: `{gone}` reached the client: {headers:?}"
            );
        }
        assert_eq!(headers["x-end-to-end"], "kept");
    }
    task.abort();
}

// ---------------------------------------------------------------------------
// 3. Tenant and explicit routing

#[tokio::test]
async fn tenant_api_host_explicit_and_wildcard_routes() {
    let acme = Upstream::start("acme").await;
    let frozen = Upstream::start("frozen").await;
    let beta = Upstream::start("beta").await;
    let cfg = Config::new()
        .top("api_hosts = [\"api.test\"]")
        .listener("http")
        .raw(&app("acme", acme.addr, ""))
        .raw(&app("frozen", frozen.addr, "status = \"suspended\""))
        .raw(&app("beta", beta.addr, ""))
        .raw("[[routes]]\nhostname = \"www.acme.test\"\npath_prefix = \"/api\"\nrewrite_prefix = \"/internal\"\napp = \"acme\"")
        .raw("[[routes]]\nhostname = \"*.beta.test\"\napp = \"beta\"")
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");

    // API host: /v1/<app> is stripped, the query kept.
    let (status, headers, body) =
        get(addr, false, "api.test", "/v1/acme/some/path?q=1&r=two").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-tollgate-app-id"], "acme");
    let v = json(&body);
    assert_eq!(
        (v["upstream"].as_str(), v["path"].as_str()),
        (Some("acme"), Some("/some/path"))
    );
    assert_eq!(v["query"], "q=1&r=two");
    let (_, _, body) = get(addr, false, "api.test", "/v1/acme").await;
    assert_eq!(json(&body)["path"], "/");

    // Unknown app: JSON 404 carrying the request id.
    let (status, headers, body) = get(addr, false, "api.test", "/v1/ghost/x").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "unknown_app");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        json(&body)["error"]["request_id"],
        headers["x-request-id"].to_str().expect("ascii")
    );

    // Suspended app: 503 at the edge, the upstream never sees it.
    for h2 in [false, true] {
        let (status, headers, body) = get(addr, h2, "api.test", "/v1/frozen/x").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(error_code(&body), "app_suspended");
        assert_eq!(headers["x-tollgate-app-id"], "frozen");
    }
    assert_eq!(frozen.hits(), 0);

    // Explicit route: segment-aware prefix, rewritten, query kept.
    let (status, headers, body) = get(addr, false, "www.acme.test", "/api/users?x=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-tollgate-app-id"], "acme");
    let v = json(&body);
    assert_eq!(v["path"], "/internal/users");
    assert_eq!(v["query"], "x=1");
    assert_eq!(
        json(&get(addr, true, "www.acme.test", "/api").await.2)["path"],
        "/internal"
    );
    for path in ["/apix", "/other"] {
        let (status, _, body) = get(addr, false, "www.acme.test", path).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (404, "no_route"),
            "{path}: {body}"
        );
    }

    // Wildcard: one label, any case, with a port; deeper names do not match.
    for host in ["foo.beta.test", "Bar.BETA.test:8080"] {
        let (status, headers, body) = get(addr, false, host, "/x/y").await;
        assert_eq!(status, 200, "{host}: {body}");
        assert_eq!(headers["x-tollgate-app-id"], "beta");
        assert_eq!(json(&body)["path"], "/x/y");
    }
    for (host, path) in [
        ("a.b.beta.test", "/"),
        ("beta.test", "/"),
        ("nowhere.test", "/"),
        ("api.test", "/v2/acme"),
    ] {
        let (status, _, body) = get(addr, false, host, path).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (404, "no_route"),
            "{host}{path}: {body}"
        );
    }
    assert_eq!(beta.hits(), 2);
}

// ---------------------------------------------------------------------------
// 4. Header and body limits

/// An HTTP/1.1 upstream counting every request-body byte it receives.
struct Counting {
    addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    /// Connections from the proxy that have closed.
    closed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Counting {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let bytes = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (b, c) = (bytes.clone(), closed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (b, c) = (b.clone(), c.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let b = b.clone();
                        async move {
                            let mut body = req.into_body();
                            let mut n = 0;
                            while let Some(Ok(frame)) = body.frame().await {
                                if let Ok(d) = frame.into_data() {
                                    n += d.len();
                                    b.fetch_add(d.len() as u64, SeqCst);
                                }
                            }
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                n.to_string(),
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    c.fetch_add(1, SeqCst);
                });
            }
        });
        Counting {
            addr,
            bytes,
            closed,
            task,
        }
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn oversized_headers_get_431_on_h1_and_h2() {
    let up = Upstream::start("acme").await;
    let cfg = Config::new()
        .top("api_hosts = [\"api.test\"]")
        .raw("[limits]\nmax_header_bytes = 2048")
        .listener("http")
        .raw(&app("acme", up.addr, ""))
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");
    let big = "a".repeat(3000);
    // Over four times the limit: h2 treats it as abuse (see below).
    let huge = "b".repeat(12_000);

    for h2 in [false, true] {
        for value in [&big, &huge] {
            let mut s = client::connect_plain(addr, h2).await.expect("connect");
            let mut req = client::get(&s, "http", "api.test", "/v1/acme/x");
            req.headers_mut()
                .insert("x-big", value.parse().expect("value"));
            let sent = tokio::time::timeout(WAIT, s.send(req))
                .await
                .expect("answer in time");
            if h2 && value.len() > 4 * 2048 {
                // h2 enforces SETTINGS_MAX_HEADER_LIST_SIZE (the limit) itself: a header list
                // over 4x that is answered with GOAWAY(ENHANCE_YOUR_CALM), closing the connection.
                let err = sent.expect_err("h2 refuses a header list way over its limit");
                assert!(format!("{err:?}").contains("ENHANCE_YOUR_CALM"), "{err:?}");
                continue;
            }
            let (status, _, body) = client::text(sent.expect("response")).await.expect("body");
            assert_eq!(status, 431, "h2={h2} {} bytes: {body}", value.len());
            if h2 {
                // Over the list size (h2 counts 32 bytes more per field than the proxy does):
                // h2 answers a bare 431 on that stream before the proxy sees the request.
                assert!(body.is_empty(), "{body}");
            } else {
                // HTTP/1.1: the proxy's own check, with its JSON error.
                assert_eq!(error_code(&body), "headers_too_large", "{body}");
            }
        }
        // Headers within the limit still pass on the same kind of connection.
        let (status, _, body) = get(addr, h2, "api.test", "/v1/acme/ok").await;
        assert_eq!(status, 200, "h2={h2}: {body}");
    }
    assert_eq!(
        up.hits(),
        2,
        "only the requests within the limit reached the upstream"
    );
}

#[tokio::test]
async fn request_bodies_over_the_limit_get_413_and_never_reach_the_upstream_whole() {
    let up = Upstream::start("acme").await;
    let counting = Counting::start().await;
    let cfg = Config::new()
        .top("api_hosts = [\"api.test\"]")
        .listener("http")
        .raw(&app("acme", up.addr, "max_body_bytes = 1000"))
        .raw(&app("counted", counting.addr, ""))
        .raw("[[routes]]\nhostname = \"counted.test\"\napp = \"counted\"\nmax_body_bytes = 1000")
        .build();
    let proxy = ProxyProcess::start(&cfg, &[]).expect("proxy starts");
    let addr = proxy.addr("http");

    for h2 in [false, true] {
        let base = up.hits();
        // Content-Length over the limit: refused before anything is forwarded.
        let mut s = client::connect_plain(addr, h2).await.expect("connect");
        let req = client::request(
            &s,
            "POST",
            "http",
            "api.test",
            "/v1/acme/upload",
            client::full(vec![b'x'; 5000]),
        );
        let (status, _, body) = client::text(send(&mut s, req).await).await.expect("body");
        assert_eq!(status, 413, "h2={h2}: {body}");
        assert_eq!(error_code(&body), "body_too_large");
        assert_eq!(
            up.hits(),
            base,
            "a request refused on Content-Length never reaches the upstream"
        );

        // Within the limit: delivered intact, with a length and streamed.
        let mut s = client::connect_plain(addr, h2).await.expect("connect");
        let req = client::request(
            &s,
            "POST",
            "http",
            "api.test",
            "/v1/acme/upload",
            client::full(vec![b'y'; 1000]),
        );
        let (status, _, body) = client::text(send(&mut s, req).await).await.expect("body");
        assert_eq!((status, body.as_str()), (200, "1000"), "h2={h2}");
        let chunks = vec![Bytes::from(vec![b'z'; 400]), Bytes::from(vec![b'z'; 400])];
        let req = client::request(
            &s,
            "POST",
            "http",
            "api.test",
            "/v1/acme/upload",
            body_of(chunks),
        );
        let (status, _, body) = client::text(send(&mut s, req).await).await.expect("body");
        assert_eq!((status, body.as_str()), (200, "800"), "h2={h2}");
        assert_eq!(up.hits(), base + 2, "h2={h2}");
    }

    // Streamed without a length, over the limit: cut at the limit, answered 413, and the
    // upstream never receives more than the limit.
    for (round, h2) in [false, true].into_iter().enumerate() {
        let before = counting.bytes.load(SeqCst);
        let mut s = client::connect_plain(addr, h2).await.expect("connect");
        let chunks = (0..8).map(|_| Bytes::from(vec![b'c'; 400])).collect();
        let req = client::request(
            &s,
            "POST",
            "http",
            "counted.test",
            "/upload",
            body_of(chunks),
        );
        let (status, _, body) = client::text(send(&mut s, req).await).await.expect("body");
        assert_eq!(status, 413, "h2={h2}: {body}");
        assert_eq!(error_code(&body), "body_too_large");
        // The cut request's upstream connection is closed (the proxy may have sent nothing
        // at all when the whole body arrived at once); once it is, the count is final.
        let closed = eventually(WAIT, || async { counting.closed.load(SeqCst) > round }).await;
        assert!(
            closed,
            "the upstream connection of the cut request was not closed"
        );
        let got = counting.bytes.load(SeqCst) - before;
        assert!(
            got <= 1000,
            "upstream received {got} bytes past the 1000-byte limit (h2={h2})"
        );
    }

    // Streamed slowly: the first 800 bytes reach the upstream before the rest exists, the
    // chunk crossing the limit is not forwarded, and the client gets 413.
    for (round, h2) in [false, true].into_iter().enumerate() {
        let before = counting.bytes.load(SeqCst);
        let mut s = client::connect_plain(addr, h2).await.expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
        });
        let req = client::request(
            &s,
            "POST",
            "http",
            "counted.test",
            "/upload",
            BodyExt::boxed(StreamBody::new(frames)),
        );
        let pending = tokio::spawn(async move { client::text(s.send(req).await?).await });
        for _ in 0..2 {
            tx.send(Bytes::from(vec![b's'; 400]))
                .await
                .expect("body channel");
        }
        let streamed = eventually(WAIT, || async {
            counting.bytes.load(SeqCst) - before == 800
        })
        .await;
        assert!(
            streamed,
            "the first 800 bytes were not streamed to the upstream (h2={h2})"
        );
        tx.send(Bytes::from(vec![b's'; 400]))
            .await
            .expect("body channel");
        let (status, _, body) = tokio::time::timeout(WAIT, pending)
            .await
            .expect("response in time")
            .expect("task")
            .expect("response");
        assert_eq!(status, 413, "h2={h2}: {body}");
        assert_eq!(error_code(&body), "body_too_large");
        drop(tx);
        let closed = eventually(WAIT, || async { counting.closed.load(SeqCst) > 2 + round }).await;
        assert!(
            closed,
            "the upstream connection of the cut request was not closed"
        );
        assert_eq!(
            counting.bytes.load(SeqCst) - before,
            800,
            "nothing past the limit reached the upstream"
        );
    }
}

// ---------------------------------------------------------------------------
// 5. WebSocket

#[tokio::test]
async fn websocket_upgrade_is_spliced_and_counted() {
    let up = Upstream::start("acme").await;
    let proxy = api_proxy(&[app("acme", up.addr, "")]);
    let before = proxy
        .metric("tollgate_http_upgrades_active", &[])
        .await
        .expect("metrics");
    assert_eq!(before, 0.0);

    let tcp = TcpStream::connect(proxy.addr("http"))
        .await
        .expect("connect");
    let req = "ws://api.test/v1/acme/ws"
        .into_client_request()
        .expect("request");
    assert_eq!(req.headers()["host"], "api.test");
    let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("handshake in time")
        .expect("websocket handshake through the proxy");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["x-tollgate-app-id"], "acme");

    use futures_util::{SinkExt, StreamExt};
    ws.send(Message::text("hello through tollgate"))
        .await
        .expect("send text");
    let echoed = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("message");
    assert_eq!(echoed, Message::text("hello through tollgate"));
    let bin = vec![0u8, 1, 2, 254, 255];
    ws.send(Message::binary(bin.clone()))
        .await
        .expect("send binary");
    let echoed = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("message");
    assert_eq!(echoed, Message::binary(bin));

    let open = proxy
        .wait_metric("tollgate_http_upgrades_active", &[], WAIT, |v| v >= 1.0)
        .await
        .expect("metrics");
    assert_eq!(open, 1.0, "one tunnel open while the socket is");

    let _ = ws.close(None).await;
    drop(ws);
    let after = proxy
        .wait_metric("tollgate_http_upgrades_active", &[], WAIT, |v| v == 0.0)
        .await
        .expect("metrics");
    assert_eq!(after, 0.0, "the tunnel is released once both sides close");
    assert_eq!(up.hits(), 1);
}

// ---------------------------------------------------------------------------
// 6. HTTP/2 clients in front of HTTP/1.1 upstreams

#[tokio::test]
async fn h2c_and_tls_clients_reach_an_http1_upstream() {
    let up = Upstream::start("acme").await;
    let cert = TestCert::new(&["api.test"]);
    let cfg = Config::new()
        .top("api_hosts = [\"api.test\"]")
        .listener("http")
        .tls_listener("https", "")
        .cert("api")
        .raw(&app("acme", up.addr, ""))
        .build();
    let files = Files::new().cert("api", &cert);
    let proxy = ProxyProcess::start(&cfg, &files.refs()).expect("proxy starts");

    // h2c with prior knowledge on the plain listener.
    let mut s = client::connect_plain(proxy.addr("http"), true)
        .await
        .expect("h2c connect");
    for i in 0..3 {
        let req = client::get(&s, "http", "api.test", &format!("/v1/acme/h2c/{i}"));
        let resp = send(&mut s, req).await;
        assert_eq!(resp.version(), Version::HTTP_2);
        let (status, _, body) = client::text(resp).await.expect("body");
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        assert_eq!(
            v["version"], "HTTP/1.1",
            "the upstream is spoken to in HTTP/1.1"
        );
        assert_eq!(v["path"], format!("/h2c/{i}"));
        assert_eq!(
            v["headers"]["host"], "api.test",
            "the :authority becomes Host upstream"
        );
        assert_eq!(v["headers"]["x-forwarded-proto"], "http");
    }

    // TLS: HTTP/2 by ALPN, and HTTP/1.1 when that is all the client offers.
    for (alpn, want_h2) in [(&[&b"h2"[..]][..], true), (&[&b"http/1.1"[..]][..], false)] {
        let stream = tls::connect(
            proxy.addr("https"),
            "api.test",
            client_config(&[&cert], alpn),
        )
        .await
        .expect("TLS handshake");
        assert_eq!(tls::is_h2(&stream), want_h2);
        let mut s = Sender::handshake(stream, want_h2)
            .await
            .expect("HTTP handshake");
        let req = client::get(&s, "https", "api.test", "/v1/acme/tls");
        let resp = send(&mut s, req).await;
        assert_eq!(
            resp.version(),
            if want_h2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            }
        );
        let (status, headers, body) = client::text(resp).await.expect("body");
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-tollgate-app-id"], "acme");
        let v = json(&body);
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["path"], "/tls");
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
        assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1");
    }
    assert_eq!(up.hits(), 5);
}
