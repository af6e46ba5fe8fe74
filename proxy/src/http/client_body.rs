//! The client's request body, read to its end even when the proxy answers without it.
//!
//! A refusal (401, 429, 413…) is often answered before an HTTP/1.1 client has sent its
//! whole body. If the connection then closed with unread data, the kernel would reset
//! it and the client could lose the answer (Node reports `write EPIPE`). So a body
//! dropped unread is drained in the background, bounded in bytes and time, before it
//! goes (RFC 9112 section 9.6, lingering close); hyper keeps the connection meanwhile.
//!
//! [`ClientFault`] names what went wrong on the client's side of a body, so that the
//! failure is answered as the client's and never charged to the upstream.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Why a client's request body failed; a bounded set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// Framing the proxy cannot read: a bad chunk size, a bare LF, an overflow.
    Malformed,
    /// The client closed or reset the stream before its body was complete.
    Aborted,
    /// The body stopped arriving while the upstream waited for it.
    Timeout,
    /// Well framed, but its content cannot be translated (gRPC-Web text, envelopes).
    Invalid,
}

impl ClientFault {
    /// What hyper's error on the client's body means.
    pub fn of(e: &hyper::Error) -> Self {
        if e.is_timeout() {
            return ClientFault::Timeout;
        }
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
                        ClientFault::Malformed
                    }
                    std::io::ErrorKind::TimedOut => ClientFault::Timeout,
                    _ => ClientFault::Aborted,
                };
            }
            // A stream our side reset for bad framing (more data than content-length).
            if let Some(h2) = s.downcast_ref::<h2::Error>() {
                let ours = !h2.is_remote();
                return if ours && h2.reason() == Some(h2::Reason::PROTOCOL_ERROR) {
                    ClientFault::Malformed
                } else {
                    ClientFault::Aborted
                };
            }
            src = s.source();
        }
        ClientFault::Aborted
    }

    /// The metric label and error code.
    pub fn reason(self) -> &'static str {
        match self {
            ClientFault::Malformed => "body_malformed",
            ClientFault::Aborted => "body_aborted",
            ClientFault::Timeout => "body_timeout",
            ClientFault::Invalid => "body_invalid",
        }
    }

    /// A message for the client.
    pub fn describe(self) -> &'static str {
        match self {
            ClientFault::Malformed => "malformed request body",
            ClientFault::Aborted => "request body aborted",
            ClientFault::Timeout => "request body stalled",
            ClientFault::Invalid => "invalid request body",
        }
    }
}

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
