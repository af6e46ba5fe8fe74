//! The `tollgate` command: `proxy` runs the data plane from a config file, `demo`
//! runs it with demo tenants on this machine, `control` runs the control service
//! (see control/API.md).
//!
//! A thin crate over both sides: it parses the command line and hands over to
//! `tollgate-proxy` or `tollgate-control`, which know nothing of each other. What
//! runs a request or stores an event belongs in those crates, not here.

mod demo;

/// mimalloc instead of glibc's malloc: fewer instructions per allocation on the request
/// path and per-thread free lists (bench/instructions.sh, bench/EXTRA.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tollgate_proxy::LogFormat;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "Multi-tenant edge proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy from a config file (see proxy/CONFIG.md).
    Proxy {
        #[arg(long, short)]
        config: PathBuf,
        /// Validate the config and its certificates, then exit.
        #[arg(long)]
        check: bool,
        /// Write the bound listener addresses here as JSON once serving.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Milliseconds between checks of the config and certificate files.
        #[arg(long, default_value_t = 1000)]
        poll_ms: u64,
    },
    /// Run the proxy with demo tenants and print curl commands to try it.
    Demo(demo::DemoArgs),
    /// Run the control service: HTTP API, gRPC edge feed, event log (see control/API.md).
    Control {
        #[command(flatten)]
        options: Box<tollgate_control::ControlOptions>,
        /// Log JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Proxy {
            config: path,
            check: true,
            ..
        } => match tollgate_proxy::load_config(&path) {
            Ok(l) if l.config.control.is_some() => {
                println!("{}: ok (routing from the control service)", path.display());
                Ok(())
            }
            Ok(l) => {
                println!(
                    "{}: ok ({} apps, {} routes, {} certificates)",
                    path.display(),
                    l.routing.apps.len(),
                    l.routing.routes.len(),
                    l.certs.len()
                );
                let now = tollgate_proxy::now_unix();
                for s in l.certs.summary_list().filter(|s| s.out_of_window(now)) {
                    eprintln!(
                        "warning: certificate for {:?} is outside its validity window \
                         (notAfter {}); it is served until replaced",
                        s.names, s.not_after_unix
                    );
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        Command::Proxy {
            config,
            ready_file,
            poll_ms,
            ..
        } => runtime
            .block_on(tollgate_proxy::run(tollgate_proxy::RunOptions {
                config,
                ready_file,
                poll: Duration::from_millis(poll_ms.max(100)),
            }))
            .map_err(|e| e.to_string()),
        Command::Demo(args) => runtime.block_on(demo::run(args)).map_err(|e| e.to_string()),
        Command::Control { options, log_json } => {
            tollgate_proxy::init_logging(if log_json {
                LogFormat::Json
            } else {
                LogFormat::Text
            });
            runtime
                .block_on(tollgate_control::run(*options))
                .map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}
