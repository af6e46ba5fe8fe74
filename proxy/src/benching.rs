//! Entry points for `proxy/examples/apply_cost.rs`: a follower wired to a real
//! [`Shared`] with no listeners, so the cost of applying the control service's
//! updates can be measured in-process. Not a stable API.

use crate::config::{ConfigError, Loaded, ProxyConfig};
use crate::control_client::ControlStatus;
use crate::limits::LimitEngine;
use crate::metrics::Metrics;
use crate::trace::Tracing;
use std::path::Path;
use std::sync::Arc;
use tollgate_certs::CertStore;

pub use crate::control_client::{Follower, Outcome, Update, cert_source};
pub use crate::state::Shared;

/// Sizes per-worker upstream pools for `n` serving workers, as a proxy does before
/// its first config (the first call in a process wins).
pub fn set_workers(n: std::num::NonZeroUsize) -> usize {
    crate::workers::set_count(n)
}

/// A follower over a fresh proxy state built from an empty config file.
pub async fn follower() -> Result<Follower, Box<dyn std::error::Error>> {
    let config = ProxyConfig::parse("", Path::new("bench"))?;
    let engine = LimitEngine::start(&config.rate_limiting)
        .await
        .map_err(ConfigError::RateLimiting)?;
    let loaded = Loaded {
        routing: config.routing(),
        config,
        certs: CertStore::empty(),
    };
    let shared = Shared::new(
        loaded,
        Arc::new(Metrics::new()?),
        engine,
        Tracing::start(None)?,
    )?;
    Ok(Follower::new(
        shared,
        Arc::new(ControlStatus::new("bench".into())),
        None,
        None,
    ))
}
