//! Resumable server-sent events: the edge numbers each event with an `id:` naming the
//! stream, a client that reconnects to another proxy with `Last-Event-ID` gets exactly
//! the events after it, idle stretches carry heartbeats, and a client that has it all
//! is told to stop reconnecting (204). The upstream sees one request however often
//! the client reconnects.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tollgate_tests::client::{self, Sender};
use tollgate_tests::config::Config;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::redis;
use tollgate_tests::wait::SOON;

const HOST: &str = "events.test";
const COUNT: u64 = 30;
/// The upstream waits for the test after this event.
const HOLD_AFTER: u64 = 12;

/// An SSE upstream: `COUNT` events `data: {"seq": n}` 10 ms apart, holding after
/// [`HOLD_AFTER`] until released; counts its requests.
struct Events {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

impl Events {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let (r, rel) = (requests.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                let (r, rel) = (r.clone(), rel.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<Incoming>| {
                        r.fetch_add(1, SeqCst);
                        let rel = rel.clone();
                        async move { Ok::<_, Infallible>(events(rel)) }
                    });
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        Events {
            addr,
            requests,
            release,
        }
    }
}

fn events(release: Arc<Notify>) -> Response<BoxBody<Bytes, Infallible>> {
    let stream = futures_util::stream::unfold(0u64, move |n| {
        let release = release.clone();
        async move {
            if n == COUNT {
                return None;
            }
            if n == HOLD_AFTER {
                release.notified().await;
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Upstream ids and comments are the edge's to replace.
            let event = format!(": upstream comment\nid: up-{n}\ndata: {{\"seq\": {n}}}\n\n");
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), n + 1))
        }
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    r
}

/// One SSE exchange: events read until `stop` says so or the stream ends.
struct Read {
    status: u16,
    /// (id, seq) per event.
    events: Vec<(String, u64)>,
    heartbeats: usize,
    ended: bool,
}

async fn read(
    proxy: SocketAddr,
    last_event_id: Option<&str>,
    mut stop: impl FnMut(&Read) -> bool,
) -> Read {
    let mut sender: Sender = client::connect_plain(proxy, false).await.expect("connect");
    let mut req = client::get(&sender, "http", HOST, "/events");
    req.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("text/event-stream"),
    );
    if let Some(id) = last_event_id {
        req.headers_mut()
            .insert("last-event-id", id.parse().expect("header value"));
    }
    let resp = sender.send(req).await.expect("response");
    let mut out = Read {
        status: resp.status().as_u16(),
        events: Vec::new(),
        heartbeats: 0,
        ended: false,
    };
    let mut body = resp.into_body();
    let mut buf = String::new();
    loop {
        if stop(&out) {
            return out;
        }
        let frame = tokio::time::timeout(SOON, body.frame())
            .await
            .expect("a frame in time");
        let Some(frame) = frame else {
            out.ended = true;
            return out;
        };
        let Ok(data) = frame.expect("frame").into_data() else {
            continue;
        };
        buf.push_str(std::str::from_utf8(&data).expect("utf-8"));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if block.starts_with(':') {
                out.heartbeats += 1;
                continue;
            }
            let mut id = None;
            let mut seq = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                }
                if let Some(v) = line.strip_prefix("data: ") {
                    let v: serde_json::Value = serde_json::from_str(v).expect("json data");
                    seq = v["seq"].as_u64();
                }
                assert!(
                    !line.starts_with(':'),
                    "upstream comments are dropped: {block}"
                );
            }
            out.events
                .push((id.expect("an id line"), seq.expect("a seq")));
        }
    }
}

#[tokio::test]
async fn sse_streams_resume_with_last_event_id_on_another_proxy() {
    let redis = redis::shared();
    let prefix = redis::prefix("resume-sse");
    let up = Events::start().await;
    let cfg = Config::new()
        .listener("plain")
        .raw(&format!(
            "[resume]\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"",
            redis.url()
        ))
        .raw(&format!(
            "[[apps]]\nid = \"events\"\nhostnames = [\"{HOST}\"]\n\
             resume = {{ buffer_events = 100, heartbeat_secs = 1 }}\n\
             [apps.upstreams.default]\nendpoints = [{{ address = \"{}\" }}]",
            up.addr
        ))
        .build();
    let a = ProxyProcess::start(&cfg, &[]).expect("proxy a");
    let b = ProxyProcess::start(&cfg, &[]).expect("proxy b");

    // Five events through A, then the connection drops.
    let first = read(a.addr("plain"), None, |r| r.events.len() == 5).await;
    assert_eq!(first.status, 200);
    let seqs: Vec<u64> = first.events.iter().map(|e| e.1).collect();
    assert_eq!(seqs, (0..5).collect::<Vec<_>>());
    let (token, _) = first.events[0]
        .0
        .split_once('.')
        .expect("id is <token>.<index>");
    for (i, (id, _)) in first.events.iter().enumerate() {
        assert_eq!(id, &format!("{token}.{}", i + 1), "ids count the events");
    }

    // B picks up after the last id seen, through the hold (heartbeats keep the idle
    // connection alive), to the end.
    let last = first.events[4].0.clone();
    let release = up.release.clone();
    let mut released = false;
    let second = read(b.addr("plain"), Some(&last), |r| {
        if r.heartbeats > 0 && !released {
            released = true;
            release.notify_one();
        }
        false
    })
    .await;
    assert_eq!(second.status, 200);
    assert!(second.ended);
    assert!(
        second.heartbeats >= 1,
        "a heartbeat while the upstream held"
    );
    let seqs: Vec<u64> = second.events.iter().map(|e| e.1).collect();
    assert_eq!(
        seqs,
        (5..COUNT).collect::<Vec<_>>(),
        "the rest, exactly once"
    );
    let end_id = second.events.last().expect("events").0.clone();
    assert_eq!(end_id, format!("{token}.{COUNT}"));

    // Everything seen: 204 tells EventSource to stop, on either proxy.
    for p in [&a, &b] {
        let done = read(p.addr("plain"), Some(&end_id), |_| false).await;
        assert_eq!(done.status, 204);
    }
    // A resume from the middle replays from the buffer without the upstream.
    let again = read(a.addr("plain"), Some(&format!("{token}.20")), |_| false).await;
    let seqs: Vec<u64> = again.events.iter().map(|e| e.1).collect();
    assert_eq!(seqs, (20..COUNT).collect::<Vec<_>>());
    assert_eq!(up.requests.load(SeqCst), 1, "one upstream request in all");
}
