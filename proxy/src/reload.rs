//! Config reload on SIGHUP and when the config file or a certificate file changes.
//! A file that fails to load is logged and counted; the running config stays.

use crate::config::{self, ConfigError};
use crate::state::Shared;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// Reloads `path` into `shared` and records the result.
pub async fn reload(shared: &Arc<Shared>, path: &Path, trigger: &str) -> Result<u64, ConfigError> {
    if shared.control.get().is_some() {
        tracing::info!(
            trigger,
            "config file changed: routing is controlled remotely by the control service; \
             worker, listener, admin, limit and log changes need a restart"
        );
        return Ok(shared.state.load().version);
    }
    let _one_at_a_time = shared.reload_lock.lock().await;
    let owned = path.to_path_buf();
    let target = shared.clone();
    let serving = shared.certs.current().fingerprints();
    // Loading reads files (config, certificates, CA bundles): keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        config::load_for_reload(&owned, &serving).and_then(|l| target.apply(l))
    })
    .await
    .unwrap_or_else(|source| {
        Err(ConfigError::Task {
            what: "reload",
            source,
        })
    });
    match &result {
        Ok(version) => {
            shared
                .metrics
                .config_reloads
                .with_label_values(&["ok"])
                .inc();
            tracing::info!(trigger, version, "config reloaded");
        }
        Err(e) => {
            shared
                .metrics
                .config_reloads
                .with_label_values(&["error"])
                .inc();
            tracing::error!(trigger, error = %e, "config reload refused; keeping the running config");
        }
    }
    result
}

/// Installs the SIGHUP handler; call before announcing readiness, since an
/// unhandled SIGHUP terminates the process.
pub fn hangup_signal() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; file polling only");
            None
        }
    }
}

/// Watches for SIGHUP and file changes until `stop` flips. `last` is the
/// [`fingerprint`] taken before the running config was loaded, so a change made
/// after that is never missed.
pub async fn watch_loop(
    shared: Arc<Shared>,
    path: PathBuf,
    poll: Duration,
    mut hup: Option<Signal>,
    mut last: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "sighup",
            _ = tick.tick() => "file",
            _ = stop.changed() => return,
        };
        let now = fingerprint(path.clone()).await;
        if trigger == "file" && now == last {
            continue;
        }
        last = now;
        let _ = reload(&shared, &path, trigger).await;
    }
}

/// A hash of the config text and the size and mtime of each certificate file it names.
pub async fn fingerprint(path: PathBuf) -> u64 {
    tokio::task::spawn_blocking(move || {
        let mut h = DefaultHasher::new();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return 0;
        };
        text.hash(&mut h);
        if let Ok(cfg) = config::ProxyConfig::parse(&text, &path) {
            let base = path.parent().unwrap_or(Path::new("."));
            for c in &cfg.certificates {
                for f in [&c.cert_file, &c.key_file] {
                    if let Ok(meta) = std::fs::metadata(base.join(f)) {
                        meta.len().hash(&mut h);
                        meta.modified().ok().hash(&mut h);
                    }
                }
            }
        }
        h.finish()
    })
    .await
    .unwrap_or(0)
}
