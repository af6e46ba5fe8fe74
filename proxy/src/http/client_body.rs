//! The client's request body, read to its end even when the proxy answers without it.
//!
//! A refusal (401, 429, 413…) is often answered before an HTTP/1.1 client has sent its
//! whole body. If the connection then closed with unread data, the kernel would reset
//! it and the client could lose the answer (Node reports `write EPIPE`). So a body
//! dropped unread is drained in the background, bounded in bytes and time, before it
//! goes (RFC 9112 section 9.6, lingering close); hyper keeps the connection meanwhile.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Most bytes read from a body nobody wants before giving up on it.
const DRAIN_MAX_BYTES: u64 = 1 << 20;
/// Longest a body nobody wants is read for.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// The client's body; drained when dropped unfinished.
#[derive(Debug)]
pub struct ClientBody {
    inner: Option<Incoming>,
}

impl ClientBody {
    pub fn new(inner: Incoming) -> Self {
        ClientBody { inner: Some(inner) }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let drain = async {
                let mut read = 0u64;
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(d) = frame.data_ref() {
                        read += d.len() as u64;
                        if read > DRAIN_MAX_BYTES {
                            break;
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_MAX_TIME, drain).await;
        });
    }
}
