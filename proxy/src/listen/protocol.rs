//! HTTP server settings per negotiated protocol: limits, timeouts, HTTP/2 keep-alive.

use crate::config::Limits;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::time::Duration;

/// Prebuilt connection builders, chosen by ALPN on TLS and by sniffing on plain TCP.
pub struct HttpBuilders {
    pub auto: Builder<TokioExecutor>,
    pub h1: Builder<TokioExecutor>,
    pub h2: Builder<TokioExecutor>,
}

impl HttpBuilders {
    pub fn new(limits: &Limits) -> Self {
        let auto = configure(Builder::new(TokioExecutor::new()), limits);
        HttpBuilders {
            h1: auto.clone().http1_only(),
            h2: auto.clone().http2_only(),
            auto,
        }
    }
}

fn configure(mut b: Builder<TokioExecutor>, limits: &Limits) -> Builder<TokioExecutor> {
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        // hyper answers 431 itself when the head outgrows this buffer.
        .max_buf_size(limits.max_header_bytes.max(8192) + 1024)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_millis(limits.h2_keepalive_interval_ms))
        .keep_alive_timeout(Duration::from_secs(20))
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_pending_accept_reset_streams(Some(200));
    b
}
