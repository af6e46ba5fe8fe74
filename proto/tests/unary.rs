//! Echo, Fail and Slow over a real h2c connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use prost::Message;
use tollgate_proto::{
    google::rpc,
    test::v1::{EchoRequest, ErrorDetail, FailRequest, SlowRequest},
    testsvc::{ERROR_DETAIL_DOMAIN, ERROR_DETAIL_REASON},
};
use tonic::{Code, Request, metadata::MetadataValue};

#[tokio::test]
async fn echo_returns_message_and_seen_metadata() {
    let mut h = common::start().await;
    let mut req = Request::new(EchoRequest {
        message: "hello".into(),
        payload_bytes: 1000,
    });
    let md = req.metadata_mut();
    md.insert("x-request-id", "req-123".parse().unwrap());
    md.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
    md.append("x-multi", "a".parse().unwrap());
    md.append("x-multi", "b".parse().unwrap());
    md.insert_bin("x-blob-bin", MetadataValue::from_bytes(b"\x00\x01"));

    let resp = h.client.echo(req).await.expect("echo").into_inner();
    assert_eq!(resp.message, "hello");
    assert_eq!(resp.payload, vec![0u8; 1000]);
    let seen = &resp.metadata;
    assert_eq!(
        seen.get("x-request-id").map(String::as_str),
        Some("req-123")
    );
    assert_eq!(
        seen.get("x-forwarded-for").map(String::as_str),
        Some("10.0.0.1")
    );
    assert_eq!(seen.get("x-multi").map(String::as_str), Some("a, b"));
    assert_eq!(seen.get("te").map(String::as_str), Some("trailers"));
    assert!(seen.contains_key("content-type"));
    assert!(!seen.contains_key("x-blob-bin"));
    assert!(!seen.keys().any(|k| k.starts_with(':')));
}

#[tokio::test]
async fn echo_rejects_negative_payload() {
    let mut h = common::start().await;
    let err = h
        .client
        .echo(EchoRequest {
            message: String::new(),
            payload_bytes: -1,
        })
        .await
        .expect_err("negative payload");
    assert_eq!(err.code(), Code::InvalidArgument);
}

const TRICKY_MESSAGE: &str = "naïve 100% fail: ünïcødé ✓ %41 %%\t end";

#[tokio::test]
async fn fail_returns_code_message_and_details() {
    let mut h = common::start().await;
    let err = h
        .client
        .fail(FailRequest {
            code: Code::FailedPrecondition as i32,
            message: TRICKY_MESSAGE.into(),
            with_details: true,
        })
        .await
        .expect_err("Fail must fail");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), TRICKY_MESSAGE);

    let status = rpc::Status::decode(err.details()).expect("google.rpc.Status");
    assert_eq!(status.code, Code::FailedPrecondition as i32);
    assert_eq!(status.message, TRICKY_MESSAGE);
    assert_eq!(status.details.len(), 1);
    assert_eq!(
        status.details[0].type_url,
        "type.googleapis.com/tollgate.test.v1.ErrorDetail"
    );
    let detail: ErrorDetail = status.details[0].to_msg().expect("ErrorDetail");
    assert_eq!(detail.reason, ERROR_DETAIL_REASON);
    assert_eq!(detail.domain, ERROR_DETAIL_DOMAIN);
}

#[tokio::test]
async fn fail_without_details_and_edge_codes() {
    let mut h = common::start().await;
    let fail = |code, with_details| FailRequest {
        code,
        message: "boom".into(),
        with_details,
    };

    let err = h.client.fail(fail(5, false)).await.expect_err("fails");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "boom");
    assert!(err.details().is_empty());

    let err = h.client.fail(fail(0, true)).await.expect_err("fails");
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = h.client.fail(fail(99, false)).await.expect_err("fails");
    assert_eq!(err.code(), Code::Unknown);
}

#[tokio::test]
async fn slow_past_client_deadline_is_deadline_exceeded() {
    let mut h = common::start().await;
    let mut req = Request::new(SlowRequest { delay_ms: 30_000 });
    req.set_timeout(Duration::from_millis(200));
    let err = h.client.slow(req).await.expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
}

#[tokio::test]
async fn slow_within_deadline_answers() {
    let mut h = common::start().await;
    let mut req = Request::new(SlowRequest { delay_ms: 20 });
    req.set_timeout(Duration::from_secs(30));
    let resp = h.client.slow(req).await.expect("slow").into_inner();
    assert_eq!(resp.message, "slept 20ms");

    let err = h
        .client
        .slow(SlowRequest { delay_ms: -5 })
        .await
        .expect_err("negative delay");
    assert_eq!(err.code(), Code::InvalidArgument);
}
