//! Running the service: options, start-up, the two listeners and graceful stop.
//!
//! [`start`] opens the store (running migrations), replays the log into the
//! projection, binds the HTTP API (`--listen`) and the gRPC feed (`--grpc-listen`)
//! on separate ports, spawns the projection follower and the deletion grace task,
//! and writes the ready file. [`run`] does that and waits for SIGTERM or SIGINT:
//! then listeners stop accepting, watch streams end, in-flight HTTP requests
//! finish, the checkpoint is saved and the store is closed.

use crate::commands::Commands;
use crate::grpc::Feed;
use crate::http::{Api, router};
use crate::projection::Projection;
use crate::store::{AnyStore, StoreError, load_keyring};
use crate::token::Token;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tollgate_proto::control::v1::edge_feed_server::EdgeFeedServer;
use tonic::codec::CompressionEncoding;

/// Environment variable read for the admin token when `--admin-token` is absent.
pub const ADMIN_TOKEN_ENV: &str = "TOLLGATE_ADMIN_TOKEN";
/// Environment variable read for the proxy token when `--proxy-token` is absent.
pub const PROXY_TOKEN_ENV: &str = "TOLLGATE_PROXY_TOKEN";
/// Largest gRPC message sent (snapshots carry every certificate).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// `tollgate control` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlOptions {
    /// Event store: `sqlite:///abs/path.db`, `sqlite://rel/path.db`, a file path,
    /// or `postgres://user:pass@host/db`.
    #[arg(long, default_value = "sqlite://tollgate-control.db")]
    pub store: String,
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// gRPC `EdgeFeed` address.
    #[arg(long, default_value = "127.0.0.1:7071")]
    pub grpc_listen: SocketAddr,
    /// Admin bearer token (at least 16 characters). Prefer the
    /// `TOLLGATE_ADMIN_TOKEN` environment variable: arguments are visible to
    /// other users of the machine. Required.
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Token that proxies may use for the feed only (`/v1/...`, `EdgeFeed.Watch`);
    /// also read from `TOLLGATE_PROXY_TOKEN`. Without it proxies use the admin token.
    #[arg(long)]
    pub proxy_token: Option<String>,
    /// Write `{"http": addr, "grpc": addr}` here once both listeners are bound.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Grace period of an app deletion without `grace_seconds`.
    #[arg(long, default_value_t = 3600)]
    pub default_grace_seconds: u64,
    /// Milliseconds between looks at the log when no append was signalled.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Milliseconds between checks for app deletions whose grace period ended.
    #[arg(long, default_value_t = 1000)]
    pub grace_check_ms: u64,
    /// Sealing keys for private keys at rest when `TOLLGATE_SEALING_KEYS` is
    /// unset (same format, one per line; created with a random key if missing).
    /// Default: `sealing.key` beside the SQLite database; PostgreSQL needs the
    /// variable or this file.
    #[arg(long)]
    pub sealing_key_file: Option<PathBuf>,
    /// A proxy resuming further behind than this many events gets a fresh snapshot
    /// instead of the whole history in between.
    #[arg(long, default_value_t = 10_000)]
    pub feed_max_replay: i64,
    /// The ACME client (off without `--acme-directory`).
    #[command(flatten)]
    pub acme: crate::acme::AcmeOptions,
    /// Hostname claims verified by DNS.
    #[command(flatten)]
    pub ownership: crate::ownership::OwnershipOptions,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            store: "sqlite://tollgate-control.db".into(),
            listen: ([127, 0, 0, 1], 7070).into(),
            grpc_listen: ([127, 0, 0, 1], 7071).into(),
            admin_token: None,
            proxy_token: None,
            ready_file: None,
            default_grace_seconds: 3600,
            poll_ms: 1000,
            grace_check_ms: 1000,
            sealing_key_file: None,
            feed_max_replay: 10_000,
            acme: crate::acme::AcmeOptions::default(),
            ownership: crate::ownership::OwnershipOptions::default(),
        }
    }
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Serve(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ControlError {
    let what = what.into();
    move |source| ControlError::Io { what, source }
}

fn token(flag: Option<&str>, env: &str, name: &str) -> Result<Option<Token>, ControlError> {
    let value = match flag {
        Some(v) => Some(v.to_string()),
        None => std::env::var(env).ok().filter(|v| !v.is_empty()),
    };
    value
        .map(|v| Token::new(&v).map_err(|e| ControlError::Config(format!("the {name} token {e}"))))
        .transpose()
}

/// A started service.
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub commands: Arc<Commands>,
    store: Arc<AnyStore>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), ControlError>>,
}

impl Running {
    pub fn projection(&self) -> &Arc<Projection> {
        self.commands.projection()
    }

    /// Starts the graceful stop; [`Self::wait`] returns when it is done.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until every task has ended (after [`Self::shutdown`] or a failure,
    /// which stops the others too), then closes the store.
    pub async fn wait(mut self) -> Result<(), ControlError> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let r =
                joined.unwrap_or_else(|e| Err(ControlError::Serve(format!("task failed: {e}"))));
            if let Err(e) = r {
                tracing::error!(error = %e, "control service task failed; stopping");
                self.stop.send_replace(true);
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        if let Err(e) = self.commands.projection().save_checkpoint().await {
            tracing::warn!(error = %e, "cannot save the edge checkpoint");
        }
        self.store.close().await;
        result
    }
}

/// Starts the service (see the [module docs](self)).
pub async fn start(opts: ControlOptions) -> Result<Running, ControlError> {
    let admin = token(opts.admin_token.as_deref(), ADMIN_TOKEN_ENV, "admin")?.ok_or_else(|| {
        ControlError::Config(format!(
            "an admin token is required: set {ADMIN_TOKEN_ENV} or pass --admin-token"
        ))
    })?;
    let proxy = token(opts.proxy_token.as_deref(), PROXY_TOKEN_ENV, "proxy")?;
    // Keys first: a wrong key setup must not touch (or migrate) the database.
    let (keyring, _) = load_keyring(&opts.store, opts.sealing_key_file.as_deref())
        .map_err(|e| ControlError::Config(e.to_string()))?;
    let store = Arc::new(AnyStore::open(&opts.store).await?.with_keyring(keyring));
    tracing::info!(backend = store.backend(), "event store open");
    let projection = Projection::start(store.clone()).await?;
    let metrics = Arc::new(
        crate::metrics::ControlMetrics::new()
            .map_err(|e| ControlError::Config(format!("registering the metrics: {e}")))?,
    );
    let commands = Arc::new(
        Commands::new(store.clone(), projection.clone())
            .with_ownership(opts.ownership.policy())
            .with_metrics(metrics.clone()),
    );

    let http = TcpListener::bind(opts.listen)
        .await
        .map_err(io(format!("binding the HTTP API to {}", opts.listen)))?;
    let grpc = TcpListener::bind(opts.grpc_listen)
        .await
        .map_err(io(format!("binding the gRPC feed to {}", opts.grpc_listen)))?;
    let http_addr = http.local_addr().map_err(io("HTTP listener"))?;
    let grpc_addr = grpc.local_addr().map_err(io("gRPC listener"))?;

    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // A task that fails stops the others (and `run`).
    let mut spawn =
        |task: std::pin::Pin<Box<dyn Future<Output = Result<(), ControlError>> + Send>>| {
            let stop = stop.clone();
            tasks.spawn(async move {
                let r = task.await;
                if r.is_err() {
                    stop.send_replace(true);
                }
                r
            });
        };

    let poll = Duration::from_millis(opts.poll_ms.max(10));
    let follower = projection.clone().follow(poll, stop_rx.clone());
    spawn(Box::pin(async move {
        follower.await;
        Ok(())
    }));
    let grace = crate::grace::run(
        commands.clone(),
        Duration::from_millis(opts.grace_check_ms.max(10)),
        stop_rx.clone(),
    );
    spawn(Box::pin(async move {
        grace.await;
        Ok(())
    }));

    let acme_metrics = Arc::new(
        crate::acme::AcmeMetrics::register(&metrics.registry)
            .map_err(|e| ControlError::Config(format!("registering the ACME metrics: {e}")))?,
    );
    let acme = crate::acme::run(
        commands.clone(),
        opts.acme.clone(),
        acme_metrics.clone(),
        stop_rx.clone(),
    );
    spawn(Box::pin(async move {
        acme.await;
        Ok(())
    }));
    let ownership =
        crate::ownership::run(commands.clone(), opts.ownership.clone(), stop_rx.clone());
    spawn(Box::pin(async move {
        ownership.await;
        Ok(())
    }));

    let mut feed_tokens = vec![admin.clone()];
    feed_tokens.extend(proxy.clone());
    let api = Arc::new(Api {
        commands: commands.clone(),
        admin,
        proxy,
        default_grace_seconds: opts.default_grace_seconds,
        acme: opts.acme.clone(),
        metrics: metrics.clone(),
    });
    let mut http_stop = stop_rx.clone();
    spawn(Box::pin(async move {
        axum::serve(http, router(api))
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(io("serving the HTTP API"))
    }));

    let feed = Feed::new(
        store.clone(),
        projection.clone(),
        feed_tokens,
        stop_rx.clone(),
    )
    .with_max_replay(opts.feed_max_replay)
    .with_metrics(metrics.clone());
    let service = EdgeFeedServer::new(feed)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .accept_compressed(CompressionEncoding::Gzip);
    let mut grpc_stop = stop_rx.clone();
    spawn(Box::pin(async move {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(|e| ControlError::Serve(format!("serving the gRPC feed: {e}")))
    }));

    tracing::info!(http = %http_addr, grpc = %grpc_addr, event_id = projection.event_id(), "control service listening");
    if let Some(file) = &opts.ready_file {
        let ready =
            serde_json::json!({ "http": http_addr.to_string(), "grpc": grpc_addr.to_string() });
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, ready.to_string())
            .map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, file).map_err(io(format!("writing {}", file.display())))?;
    }
    Ok(Running {
        http_addr,
        grpc_addr,
        commands,
        store,
        stop,
        tasks,
    })
}

/// Runs the service until SIGTERM or SIGINT, then stops gracefully.
pub async fn run(opts: ControlOptions) -> Result<(), ControlError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
    let running = start(opts).await?;
    let stop = running.stop.clone();
    let mut stopped = stop.subscribe();
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
        // A task failed and asked everything to stop.
        _ = stopped.wait_for(|s| *s) => {}
    }
    running.shutdown();
    running.wait().await
}
