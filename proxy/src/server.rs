//! Wires the proxy together: load config, bind listeners and the admin API, follow
//! reloads, and drain on SIGTERM/SIGINT.

use crate::admin;
use crate::config::ListenerMode;
use crate::config::{self, ConfigError};
use crate::control_client::{self, ControlSettings};
use crate::l4::{self, L4Mode, limits::ConnLimits};
use crate::limits::LimitEngine;
use crate::listen::{self, HttpBuilders, ListenError};
use crate::logging;
use crate::metrics::Metrics;
use crate::reload;
use crate::state::Shared;
use crate::trace::{Tracing, TracingError};
use crate::usage::{FlushConfig, UsageMetrics, spawn_flusher};
use crate::workers::{self, Workers};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("admin listener {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics setup: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Tracing(#[from] TracingError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How to run the proxy.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    /// Written once every listener is bound: JSON with the actual addresses.
    pub ready_file: Option<PathBuf>,
    /// How often the config and certificate files are checked for changes.
    pub poll: Duration,
}

/// Runs until SIGTERM or SIGINT, then drains and returns.
pub async fn run(opts: RunOptions) -> Result<(), ServerError> {
    // Signal handlers and the file fingerprint come first: a SIGHUP or SIGTERM sent
    // right after the ready file appears must not kill the process, and a file change
    // made while starting must still be noticed.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let hup = reload::hangup_signal();
    let initial = reload::fingerprint(opts.config.clone()).await;
    let path = opts.config.clone();
    let loaded = tokio::task::spawn_blocking(move || config::load(&path))
        .await
        .map_err(|source| ConfigError::Task {
            what: "config load",
            source,
        })??;
    logging::init(loaded.config.log.format);
    let control = match &loaded.config.control {
        Some(c) => Some(ControlSettings::resolve(
            c,
            &opts.config,
            loaded.config.default_certificate.clone(),
        )?),
        None => None,
    };
    let listeners = loaded.config.listeners.clone();
    let admin_addr = loaded.config.admin.listen;
    let admin_auth =
        admin::AdminAuth::resolve(&loaded.config.admin, &opts.config, admin::env_token()?)?;
    let drain = Duration::from_millis(loaded.config.limits.drain_timeout_ms);
    // Fixed before any upstream pool exists: pools keep a slot per worker.
    let worker_count =
        workers::set_count(loaded.config.workers.unwrap_or_else(workers::default_count));
    let engine = LimitEngine::start(&loaded.config.rate_limiting)
        .await
        .map_err(ConfigError::RateLimiting)?;
    let tracing = Tracing::start(loaded.config.tracing.as_ref())?;
    let shared = Shared::new(loaded, Arc::new(Metrics::new()?), engine, tracing)?;
    let usage_metrics = UsageMetrics::register(&shared.metrics.registry)?;
    // Usage goes to the control service; without one it is only counted here.
    let usage_flusher = match control.as_ref().and_then(FlushConfig::from_control) {
        Some(cfg) => Some(
            spawn_flusher(shared.usage.clone(), cfg, usage_metrics)
                .map_err(ConfigError::UsageFlusher)?,
        ),
        None => None,
    };
    // The persisted control snapshot is served before any listener accepts.
    let follower = match &control {
        Some(settings) => Some(control_client::prepare(&shared, settings).await),
        None => None,
    };
    let builders = Arc::new(HttpBuilders::new(&shared.limits));
    let bound = listen::bind(&listeners, &shared, worker_count).await?;
    let admin = TcpListener::bind(admin_addr)
        .await
        .map_err(|source| ServerError::Admin {
            addr: admin_addr,
            source,
        })?;
    let admin_bound = admin.local_addr()?;
    tracing::info!(addr = %admin_bound, "admin listening");
    if let Some(file) = &opts.ready_file {
        let addrs: BTreeMap<&str, String> = bound
            .iter()
            .map(|b| (&*b.name, b.addr.to_string()))
            .collect();
        let ready = serde_json::json!({ "admin": admin_bound.to_string(), "listeners": addrs });
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, ready.to_string())?;
        std::fs::rename(&tmp, file)?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    // The admin API outlives the listeners so `/readyz` reports the drain.
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    tokio::spawn(admin::serve(
        admin,
        shared.clone(),
        admin_auth,
        admin_stop_rx,
    ));
    tokio::spawn(reload::watch_loop(
        shared.clone(),
        opts.config.clone(),
        opts.poll,
        hup,
        initial,
        stop_rx.clone(),
    ));
    tokio::spawn(watch_certificates(shared.clone(), stop_rx.clone()));
    if let (Some(follower), Some(settings)) = (follower, control) {
        tokio::spawn(control_client::run(follower, settings, stop_rx.clone()));
    }
    let mut serving = tokio::task::JoinSet::new();
    let conn_limits = Arc::new(ConnLimits::default());
    let mut per_worker: Vec<Vec<listen::Accepting>> =
        (0..worker_count).map(|_| Vec::new()).collect();
    for b in bound {
        let l4_mode = match b.mode {
            ListenerMode::Http => {
                for (mine, socket) in per_worker.iter_mut().zip(b.per_worker(&shared)) {
                    mine.push(socket);
                }
                continue;
            }
            ListenerMode::TlsPassthrough => L4Mode::TlsPassthrough,
            ListenerMode::Tcp => L4Mode::Tcp,
        };
        let name = b.name.clone();
        serving.spawn(l4::serve(
            name,
            b.into_tcp()?,
            l4_mode,
            shared.clone(),
            conn_limits.clone(),
            stop_rx.clone(),
            drain,
        ));
    }
    let mut workers = Workers::start(
        per_worker
            .into_iter()
            .map(|mine| {
                listen::serve_worker(
                    mine,
                    shared.clone(),
                    builders.clone(),
                    stop_rx.clone(),
                    drain,
                )
            })
            .collect(),
    )?;
    tracing::info!(workers = worker_count, "serving");

    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = which,
        drain_ms = drain.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    let deadline = tokio::time::Instant::now() + drain;
    shared.start_draining();
    // Resumable streams' clients are told to resume elsewhere; their calls run on.
    shared.resume.start_draining(deadline);
    let _ = stop_tx.send(true);
    while serving.join_next().await.is_some() {}
    workers.finished().await;
    shared.resume.finish(deadline).await;
    shared.limit_engine.persist().await;
    if let Some(f) = usage_flusher {
        f.shutdown().await;
    }
    // The drained requests' spans are sent before the process exits.
    shared.tracing.shutdown().await;
    let _ = admin_stop_tx.send(true);
    tracing::info!("stopped");
    // The workers' runtimes end last: what requests left running there stops here.
    drop(workers);
    Ok(())
}

/// Looks at the serving certificates now and then, so one that lapses between
/// config changes shows in metrics and the log.
async fn watch_certificates(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(crate::cert_health::CHECK_EVERY_SECS);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        shared.cert_health.observe(&shared.certs.current());
    }
}
