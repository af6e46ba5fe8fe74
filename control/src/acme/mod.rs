//! The control service as an ACME (RFC 8555) client: it obtains and renews the
//! certificates of managed hostnames (`PUT /api/v1/hostnames/{h}/tls`) and records
//! every step in the event log, so every proxy answers the challenge and then
//! serves the certificate from its feed, whichever proxy the CA reaches.
//!
//! - [`options`]: the CA, renewal point, backoff and the CA's rate limits.
//! - [`schedule`]: when a hostname needs an order and whether the limits allow it.
//! - [`order`]: one order, bounded by a deadline.
//! - [`account`]: the account key, registered once and kept in the log.
//! - [`metrics`]: `tollgate_control_acme_*` and `tollgate_control_managed_*`.
//!
//! A failed order keeps the hostname's previous certificate, is retried with
//! exponential backoff, and holds no one else's order: orders run concurrently up
//! to `--acme-max-concurrent`, one per hostname.

pub mod account;
pub mod metrics;
pub mod options;
pub mod order;
pub mod schedule;

pub use metrics::AcmeMetrics;
pub use options::{AcmeOptions, CaLimits};

use crate::commands::{Commands, Expect};
use instant_acme::Account;
use metrics::Failure;
use schedule::{Due, Window};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tollgate_routing::{EdgeEvent, ManagedTls, TlsState};

/// Least time between two passes woken by log changes.
const MIN_PASS_GAP: Duration = Duration::from_millis(100);

pub(crate) fn now_unix() -> i64 {
    crate::commands::now_unix()
}

/// Runs until `stop`; does nothing when no directory is configured.
pub async fn run(
    commands: Arc<Commands>,
    opts: AcmeOptions,
    metrics: Arc<AcmeMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(directory) = opts.directory.clone() else {
        return;
    };
    let opts = Arc::new(opts);
    let account = loop {
        match account::load_or_create(commands.store(), &opts).await {
            Ok(a) => break Arc::new(a),
            Err(e) => {
                // The CA being down must not stop the service; orders wait.
                tracing::warn!(error = %e, %directory, "ACME account unavailable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(opts.retry_delay(1).min(Duration::from_secs(30))) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    };
    let manager = Manager {
        commands,
        opts,
        account,
        metrics,
        in_flight: Arc::new(Mutex::new(HashSet::new())),
    };
    let mut applied = manager.commands.projection().subscribe();
    let mut tasks = JoinSet::new();
    loop {
        let next = manager.pass(&mut tasks).await;
        let wait = next.clamp(
            Duration::from_millis(50),
            Duration::from_millis(manager.opts.tick_ms.max(50)),
        );
        let mut changed = false;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = applied.changed() => {
                if r.is_err() { break }
                changed = true;
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if changed {
            // Changes are picked up promptly, but a busy log must not turn into a
            // pass per event.
            tokio::time::sleep(MIN_PASS_GAP).await;
        }
    }
    tasks.abort_all();
}

struct Manager {
    commands: Arc<Commands>,
    opts: Arc<AcmeOptions>,
    account: Arc<Account>,
    metrics: Arc<AcmeMetrics>,
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl Manager {
    fn busy(&self) -> HashSet<String> {
        self.in_flight.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Orders in flight now, those spawned during this pass included.
    fn running(&self) -> usize {
        self.in_flight.lock().map_or(0, |s| s.len())
    }

    /// One look at every managed hostname; returns how long until the next is due.
    async fn pass(&self, tasks: &mut JoinSet<()>) -> Duration {
        let view = self.commands.projection().view();
        let config = &view.config;
        let now = now_unix();
        let mut window = Window::of(config, now);
        let busy = self.busy();
        let stale = self.opts.order_timeout().as_secs() as i64 + 60;
        let mut next = i64::MAX;
        let mut queued = 0;
        let mut renewal_due = Vec::new();
        for (host, m) in &config.managed_tls {
            if busy.contains(host) || !config.hostnames.contains_key(host) {
                continue;
            }
            match schedule::due(m, &window, &self.opts, now, stale) {
                Due::Later(t) => next = next.min(t),
                Due::Blocked { reason, until } => {
                    queued += 1;
                    next = next.min(until);
                    if m.state == TlsState::Issued {
                        renewal_due.push((host.clone(), Expect::of(m), reason));
                    }
                }
                Due::Order { renewal } => {
                    if self.running() >= self.opts.max_concurrent.max(1) {
                        queued += 1;
                        continue;
                    }
                    window.note_order(now);
                    self.spawn(tasks, m.clone(), renewal);
                }
            }
        }
        self.metrics.observe(config, now, queued);
        for (host, expect, reason) in renewal_due {
            tracing::info!(hostname = %host, reason, "renewal due but held by the CA's limits");
            let event = EdgeEvent::TlsRenewalDue {
                hostname: host.clone(),
                at_unix: now,
            };
            if let Err(e) = self.commands.record_tls(&host, expect, event).await {
                tracing::warn!(hostname = %host, error = %e, "cannot record the renewal as due");
            }
        }
        if next == i64::MAX {
            Duration::from_millis(self.opts.tick_ms)
        } else {
            Duration::from_secs((next - now).max(0) as u64)
        }
    }

    fn spawn(&self, tasks: &mut JoinSet<()>, m: ManagedTls, renewal: bool) {
        let host = m.hostname.clone();
        if let Ok(mut s) = self.in_flight.lock() {
            s.insert(host.clone());
        }
        let commands = self.commands.clone();
        let opts = self.opts.clone();
        let account = self.account.clone();
        let metrics = self.metrics.clone();
        let in_flight = self.in_flight.clone();
        tasks.spawn(async move {
            one_order(&commands, &account, &opts, &metrics, m, renewal).await;
            if let Ok(mut s) = in_flight.lock() {
                s.remove(&host);
            }
        });
    }
}

/// Starts, runs and records one order.
async fn one_order(
    commands: &Commands,
    account: &Account,
    opts: &AcmeOptions,
    metrics: &AcmeMetrics,
    m: ManagedTls,
    renewal: bool,
) {
    let host = m.hostname.clone();
    let started = now_unix();
    let event = EdgeEvent::TlsOrderStarted {
        hostname: host.clone(),
        renewal,
        at_unix: started,
    };
    match commands.record_tls(&host, Expect::of(&m), event).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(hostname = %host, error = %e, "cannot record the order's start");
            return;
        }
    }
    tracing::info!(hostname = %host, renewal, challenge = m.challenge.as_str(), "ACME order started");
    let expect = Expect {
        state: TlsState::Ordering,
        since_unix: started,
    };
    let result = order::obtain(commands, account, opts, &host, m.challenge, expect).await;
    let view = commands.projection().view();
    let Some(now_m) = view.config.managed_tls.get(&host) else {
        return;
    };
    let expect = Expect::of(now_m);
    let at_unix = now_unix();
    let event = match result {
        Ok(issued) => {
            metrics.issued();
            tracing::info!(hostname = %host, not_after = issued.not_after_unix, "certificate issued");
            EdgeEvent::TlsIssued {
                hostname: host.clone(),
                cert: issued.cert,
                not_before_unix: issued.not_before_unix,
                not_after_unix: issued.not_after_unix,
                at_unix,
            }
        }
        Err(f) if f.reason == Failure::Superseded => return,
        Err(f) => {
            metrics.failed(f.reason);
            let retry = opts.retry_delay(now_m.failures.saturating_add(1));
            tracing::warn!(hostname = %host, reason = f.reason.as_str(), error = %f.message, retry_in_secs = retry.as_secs(), "ACME order failed");
            EdgeEvent::TlsOrderFailed {
                hostname: host.clone(),
                error: f.message,
                validation: f.reason == Failure::Validation,
                retry_at_unix: at_unix + retry.as_secs() as i64,
                at_unix,
            }
        }
    };
    if let Err(e) = commands.record_tls(&host, expect, event).await {
        tracing::warn!(hostname = %host, error = %e, "cannot record the order's result");
    }
}
