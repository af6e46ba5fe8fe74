//! The Tollgate data plane.
//!
//! This crate owns:
//! - the listeners: HTTP/1.1, h2c and HTTP/2, TLS with certificates picked by SNI,
//!   L4 SNI passthrough with PROXY v2, and their connection limits and timeouts;
//! - the ACME challenges (HTTP-01, TLS-ALPN-01) the control service publishes;
//! - the request path from route match to upstream stream: auth, limits and budgets,
//!   gRPC-Web/Connect translation, header hygiene, retries, the access log;
//! - upstream pools with balancing, health checks and outlier ejection;
//! - W3C trace context propagation and OpenTelemetry spans of the request path (OTLP);
//! - metrics, the admin API, config reload from files, and the control client that
//!   follows the control service and persists what it applied;
//! - usage records per app and day, spooled and sent to the control service.
//!
//! Its public API is what the `tollgate` binary runs: [`load_config`] (`--check`),
//! [`run`] with [`RunOptions`] (`tollgate proxy`), [`init_logging`]; and [`usage`],
//! the recorder and flusher. It reads config as immutable snapshots from
//! `tollgate-routing` and never blocks a request on a config change. It must not
//! depend on the control service's crate: both sides share types through
//! `tollgate-routing` (the edge config and its events, usage batches) and speak
//! over the wire (`tollgate-proto`, HTTP).

mod acme;
mod admin;
mod auth;
#[doc(hidden)]
pub mod benching;
mod cert_health;
mod chain;
mod clock;
mod coalesce;
mod config;
mod control_client;
mod credential_memo;
mod files;
mod http;
mod l4;
mod limits;
mod listen;
mod logging;
mod metric_scope;
mod metrics;
mod reload;
mod resume;
mod rpc;
mod server;
mod state;
mod trace;
mod upstream;
pub mod usage;
mod workers;

pub use clock::now_unix;
pub use config::{ConfigError, Loaded, LogFormat, ProxyConfig, load as load_config};
pub use logging::init as init_logging;
pub use server::{RunOptions, ServerError, run};

/// Parsers and decoders the fuzz targets in `proxy/fuzz/` drive directly. Not a
/// stable API: it follows the internals it re-exports.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::coalesce::{CAPACITY as COALESCE_CAPACITY, Coalesced};
    pub use crate::control_client::persist::PersistedState;
    pub use crate::control_client::{Update, cert_source};
    pub use crate::credential_memo::CredentialMemo;
    pub use crate::http::stream_stats::{EnvelopeCounter, SseCounter};
    pub use crate::l4::{client_hello, proxy_v2};
    pub use crate::resume::journal::Refusal;
    pub use crate::resume::shared_position;
    pub use crate::resume::store::{Entry, Meta, meta_from_fields, parse_entries};
    pub use crate::resume::{sse, token};
    pub use crate::trace::{caller_state, w3c};
    pub use opentelemetry::trace::TraceState;

    /// Splits `body` into chunks whose sizes come from `seeds` (0 means an empty
    /// chunk); whatever the seeds do not cover is the last chunk. For targets that
    /// feed a streaming parser the same bytes split every way.
    pub fn chunks<'a>(body: &'a [u8], seeds: &[u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = body;
        for &s in seeds {
            let n = usize::from(s).min(rest.len());
            let (head, tail) = rest.split_at(n);
            out.push(head);
            rest = tail;
        }
        out.push(rest);
        out
    }
}
