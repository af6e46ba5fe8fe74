//! `rpc-load`: server-streaming throughput of `tollgate.test.v1.TestService/ServerStream`
//! over gRPC, gRPC-Web and Connect, spoken directly over HTTP/2 (h2c or TLS) with no
//! generated client, for `bench/connect.sh`.
//!
//! Each of `--concurrency` workers opens a stream asking for `--stream-messages`
//! messages of `--payload-bytes`, reads it to the end counting the envelopes, and opens
//! the next one; the window ends after `--duration` seconds or `--messages` messages
//! (after `--warmup`), the open streams are read to their end (`--drain`), and one
//! JSON line is printed. `--serve ADDR` instead runs the tonic
//! `TestService` on `ADDR`, as the upstream.

mod conn;
mod cpu;
mod load;
mod wire;

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use wire::Protocol;

/// Command line of `rpc-load`.
#[derive(Debug, Parser)]
#[command(about = "Server-streaming load over gRPC, gRPC-Web and Connect (HTTP/2)")]
pub struct Args {
    /// Serve the tonic TestService (h2c) on this address instead of generating load.
    #[arg(long, value_name = "ADDR")]
    serve: Option<SocketAddr>,
    /// Write the TestService's FileDescriptorSet (for Connect clients) here and exit.
    #[arg(long, value_name = "PATH")]
    write_descriptor_set: Option<PathBuf>,
    /// Base URL: `http://` for h2c (prior knowledge), `https://` for TLS with ALPN h2.
    /// Its authority is sent as `:authority` (and TLS server name).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    url: String,
    /// Connect to this address instead of resolving the URL's host.
    #[arg(long, value_name = "ADDR")]
    connect: Option<SocketAddr>,
    /// PEM file of the CA that signed the server's certificate (TLS).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    /// Concurrent streams.
    #[arg(long, short = 'c', default_value_t = 8)]
    concurrency: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Measure for this many seconds (unless --messages ends it first).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Stop once this many messages have arrived (0: run for --duration).
    #[arg(long, short = 'n', default_value_t = 0)]
    messages: u64,
    /// Load before measuring, in seconds, on the same connections.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// `StreamRequest.payload_bytes`: size of each message's payload.
    #[arg(long, default_value_t = 64)]
    payload_bytes: u32,
    /// `StreamRequest.interval_ms`: the upstream's pause between messages (long-lived
    /// streams for capacity runs; 0 streams as fast as it can).
    #[arg(long, default_value_t = 0)]
    interval_ms: u32,
    /// `StreamRequest.count`: messages per stream before the worker opens the next.
    #[arg(long, default_value_t = 2_000)]
    stream_messages: u32,
    /// After the window, how long the open streams may take to finish before they are
    /// cancelled, in seconds (`cancelled_streams` in the report).
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// Runtime worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// `NAME=PID`: report the CPU seconds process PID used in the window as `cpu_s.NAME`
    /// (Linux `/proc`); repeatable. Always reported: this tool's as `cpu_s.load`, the
    /// whole machine's busy time as `cpu_s.machine`.
    #[arg(long = "cpu", value_name = "NAME=PID", value_parser = cpu::parse_watch)]
    cpu: Vec<(String, u32)>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.write_descriptor_set {
        return match std::fs::write(path, tollgate_proto::FILE_DESCRIPTOR_SET) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rpc-load: {}: {e}", path.display());
                ExitCode::FAILURE
            }
        };
    }
    let mut rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rpc-load: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.serve {
        Some(addr) => rt.block_on(serve(addr)),
        None => rt
            .block_on(load::run(&args))
            .map(|report| println!("{report}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpc-load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `tollgate_proto::serve` until the process is stopped.
///
/// The listening socket has `TCP_NODELAY`, which Linux passes on to accepted sockets:
/// `serve` does not set it on its connections, and without it Nagle's algorithm holds
/// back the small writes of a stream of small messages (64-byte messages ran at ~57 %
/// of the rate with it), unlike a tonic server bound with `Server::serve`.
async fn serve(addr: SocketAddr) -> Result<(), String> {
    let bind = |addr: SocketAddr| -> std::io::Result<tokio::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    let listener = bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    tollgate_proto::serve(listener, tollgate_proto::TestServiceImpl::new())
        .await
        .map_err(|e| format!("serve: {e}"))
}
