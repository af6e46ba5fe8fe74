//! Bidirectional byte copy between client and backend with byte counters, half-close
//! propagation and an idle timeout (no byte either way for `idle`).

use crate::clock::now_ms;
use prometheus::IntCounter;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes moved each way by a finished splice.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub to_backend: u64,
    pub to_client: u64,
}

/// Copies both ways until both sides close, an error, or `idle` passes without traffic.
pub async fn splice(
    client: TcpStream,
    backend: TcpStream,
    idle: Duration,
    up: IntCounter,
    down: IntCounter,
) -> io::Result<Moved> {
    let activity = AtomicU64::new(now_ms());
    let (cr, cw) = client.into_split();
    let (br, bw) = backend.into_split();
    let both =
        async { tokio::try_join!(pump(cr, bw, &up, &activity), pump(br, cw, &down, &activity)) };
    tokio::select! {
        r = both => r.map(|(to_backend, to_client)| Moved { to_backend, to_client }),
        _ = idle_watch(&activity, idle) => Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle")),
    }
}

async fn pump(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    counter: &IntCounter,
    activity: &AtomicU64,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on; the other direction may still be talking.
            let _ = w.shutdown().await;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
        counter.inc_by(n as u64);
        activity.store(now_ms(), Relaxed);
    }
}

async fn idle_watch(activity: &AtomicU64, idle: Duration) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        let quiet = now_ms().saturating_sub(activity.load(Relaxed));
        if quiet >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - quiet)).await;
    }
}
