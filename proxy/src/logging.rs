//! Structured logs via `tracing`: human text or JSON lines, filtered by `RUST_LOG`.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; later calls are ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
