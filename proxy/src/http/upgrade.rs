//! HTTP/1.1 protocol upgrades, WebSocket only ([`super::headers::is_upgrade`]: an h2c
//! tunnel would bypass routing and auth): after both sides agree with a 101, the two
//! connections are spliced and bytes flow untouched until either side closes.

use crate::metrics::Metrics;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// Splices the client and upstream connections once both upgrades complete.
pub fn splice(client: OnUpgrade, upstream: OnUpgrade, metrics: Arc<Metrics>, app: String) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, app, "upgrade did not complete");
                return;
            }
        };
        metrics.upgrades_active.inc();
        let mut c = TokioIo::new(client);
        let mut u = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut c, &mut u).await {
            Ok((up, down)) => tracing::debug!(
                app,
                bytes_up = up,
                bytes_down = down,
                "upgraded tunnel closed"
            ),
            Err(e) => tracing::debug!(app, error = %e, "upgraded tunnel ended with an error"),
        }
        metrics.upgrades_active.dec();
    });
}
