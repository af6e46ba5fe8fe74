//! Server, client and bidi streaming, and upstream cancellation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tollgate_proto::test::v1::{EchoRequest, StreamRequest};
use tonic::Request;

fn stream_request(count: i32, interval_ms: i32) -> StreamRequest {
    StreamRequest {
        count,
        interval_ms,
        payload_bytes: 8,
        usage_per_message: 3,
    }
}

#[tokio::test]
async fn server_stream_delivers_all_messages_in_order() {
    let mut h = common::start().await;
    let mut stream = h
        .client
        .server_stream(stream_request(10_000, 0))
        .await
        .expect("server_stream")
        .into_inner();
    let mut expected = 0;
    while let Some(msg) = stream.next().await {
        let msg = msg.expect("message");
        assert_eq!(msg.seq, expected);
        assert_eq!(msg.payload, vec![0u8; 8]);
        assert_eq!(msg.usage_tokens, 3);
        expected += 1;
    }
    assert_eq!(expected, 10_000);
    assert_eq!(h.cancelled.load(Ordering::Relaxed), 0);
}

/// Reads `read` messages, drops the stream, waits for the server to notice.
async fn cancel_after(read: i32, interval_ms: i32) {
    let mut h = common::start().await;
    let mut stream = h
        .client
        .server_stream(stream_request(1_000_000, interval_ms))
        .await
        .expect("server_stream")
        .into_inner();
    for seq in 0..read {
        let msg = stream.next().await.expect("item").expect("message");
        assert_eq!(msg.seq, seq);
    }
    assert_eq!(h.cancelled.load(Ordering::Relaxed), 0);
    drop(stream);
    let cancelled = h.cancelled.clone();
    assert!(
        common::eventually(|| cancelled.load(Ordering::Relaxed) == 1).await,
        "server never saw the cancellation"
    );
}

#[tokio::test]
async fn dropping_busy_server_stream_is_seen_upstream() {
    cancel_after(2, 0).await;
}

#[tokio::test]
async fn dropping_idle_server_stream_is_seen_upstream() {
    // The producer is asleep in its 60s interval when the client leaves.
    cancel_after(1, 60_000).await;
}

#[tokio::test]
async fn server_stream_rejects_negative_count() {
    let mut h = common::start().await;
    let err = h
        .client
        .server_stream(stream_request(-1, 0))
        .await
        .expect_err("negative count");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn client_stream_concatenates() {
    let mut h = common::start().await;
    let msgs = ["ab", "cd", "é"].map(|m| EchoRequest {
        message: m.into(),
        payload_bytes: 0,
    });
    let mut req = Request::new(tokio_stream::iter(msgs));
    req.metadata_mut()
        .insert("x-request-id", "cs-1".parse().unwrap());
    let resp = h.client.client_stream(req).await.expect("client_stream");
    let resp = resp.into_inner();
    assert_eq!(resp.message, "abcdé");
    assert_eq!(
        resp.metadata.get("x-request-id").map(String::as_str),
        Some("cs-1")
    );
}

#[tokio::test]
async fn bidi_stream_echoes_each_message() {
    let mut h = common::start().await;
    let (tx, rx) = mpsc::channel(4);
    let mut req = Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("x-request-id", "bidi-1".parse().unwrap());
    let send = |message: &str| EchoRequest {
        message: message.into(),
        payload_bytes: 4,
    };
    tx.send(send("one")).await.expect("send");
    let mut inbound = h.client.bidi_stream(req).await.expect("bidi").into_inner();

    // Strict ping-pong proves responses flow before the request stream ends.
    let first = inbound.next().await.expect("item").expect("message");
    assert_eq!(first.message, "one");
    assert_eq!(first.payload, vec![0u8; 4]);
    assert_eq!(
        first.metadata.get("x-request-id").map(String::as_str),
        Some("bidi-1")
    );
    for word in ["two", "three"] {
        tx.send(send(word)).await.expect("send");
        let resp = inbound.next().await.expect("item").expect("message");
        assert_eq!(resp.message, word);
        assert!(resp.metadata.is_empty());
    }
    drop(tx);
    assert!(inbound.next().await.is_none());
}
