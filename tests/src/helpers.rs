//! Small shared pieces of the end-to-end tests: bounded polling, reading streamed
//! bodies chunk by chunk, and JSON error bodies.

use crate::BoxError;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::future::Future;
use std::time::{Duration, Instant};

/// Default bound for waits that should finish quickly but may be slow on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(15);

/// Polls `check` every 50 ms until it returns true or `timeout` passes; returns the last result.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads body frames until the data read so far has `want` bytes, within `timeout`.
///
/// Errors on a timeout, on the end of the body, or on data that is not a prefix of `want`:
/// with a blocked upstream, arriving at all proves the proxy passes chunks on unbuffered.
pub async fn read_exactly(
    body: &mut Incoming,
    want: &[u8],
    timeout: Duration,
) -> Result<(), BoxError> {
    let mut got = BytesMut::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while got.len() < want.len() {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| {
                format!(
                    "timed out waiting for {:?}; got {:?}",
                    String::from_utf8_lossy(want),
                    got
                )
            })?;
        let Some(frame) = frame else {
            return Err(format!(
                "body ended after {got:?}, wanted {:?}",
                String::from_utf8_lossy(want)
            )
            .into());
        };
        if let Ok(data) = frame?.into_data() {
            got.extend_from_slice(&data);
        }
        if !want.starts_with(&got) {
            return Err(format!("got {got:?}, wanted {:?}", String::from_utf8_lossy(want)).into());
        }
    }
    Ok(())
}

/// Reads the rest of a body (data only) within `timeout`.
pub async fn read_to_end(body: &mut Incoming, timeout: Duration) -> Result<Bytes, BoxError> {
    let mut got = BytesMut::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| format!("timed out reading the body; got {got:?}"))?;
        match frame {
            None => return Ok(got.freeze()),
            Some(f) => {
                if let Ok(data) = f?.into_data() {
                    got.extend_from_slice(&data);
                }
            }
        }
    }
}

/// Parses a JSON body, panicking with the text when it is not JSON.
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `error.code` of a proxy error body.
pub fn error_code(body: &str) -> String {
    json(body)["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
