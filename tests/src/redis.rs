//! A real Redis for the end-to-end tests of limits and budgets, never skipped.
//!
//! [`shared`] is the Redis on 127.0.0.1:6379 when it answers `PING`, else one
//! `redis-server` (Debian's `/usr/bin/redis-server`, installed by `scripts/test`) started
//! on a free port without persistence, kept while any test of the binary holds it.
//! Tests on the shared server keep apart with a unique [`prefix`] (the proxy's
//! `key_prefix`). [`Private`] is a server of the test's own that it may stop and restart
//! on the same port, as an outage. [`command`] speaks just enough RESP to look inside.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Self-contained (no `crate::` paths) so the filters crate's tests include this file too.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A Redis server a test can reach; stopped on drop when this process started it.
pub struct Server {
    pub port: u16,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// `redis://127.0.0.1:PORT`, as the proxy's `redis_url`.
    pub fn url(&self) -> String {
        url(self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

static SHARED: Mutex<Weak<Server>> = Mutex::new(Weak::new());

/// The Redis the tests of this binary share.
pub fn shared() -> Arc<Server> {
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = slot.upgrade() {
        return s;
    }
    let server = if ping(6379) {
        Server {
            port: 6379,
            child: None,
            _dir: None,
        }
    } else {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let port = free_port();
        let child = spawn(port, dir.path());
        Server {
            port,
            child: Some(child),
            _dir: Some(dir),
        }
    };
    let server = Arc::new(server);
    *slot = Arc::downgrade(&server);
    server
}

/// A key prefix no other test, binary or run uses (letters, digits, `-` only, so it is
/// safe in a `KEYS` pattern).
pub fn prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let test: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!(
        "tollgate-test-{test}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Redis of the test's own, to stop and restart on the same port (its data is lost:
/// no persistence).
pub struct Private {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Private {
    pub fn start() -> Private {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let port = free_port();
        let child = spawn(port, dir.path());
        Private {
            port,
            dir,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        url(self.port)
    }

    /// Kills the server: open connections drop, new ones are refused.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn(self.port, self.dir.path()));
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`Private::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .arg(sig)
                .arg(c.id().to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} failed");
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        self.stop();
    }
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

fn redis_server() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/redis-server");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("redis-server")
    }
}

/// Starts `redis-server` on `port` in `dir` and waits until it answers `PING`.
fn spawn(port: u16, dir: &Path) -> Child {
    let mut child = Command::new(redis_server())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed: scripts/test installs Debian's redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(port) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("redis-server on port {port} exited at start ({status}): port taken?");
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on port {port} did not answer PING within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn free_port() -> u16 {
    super::ports::unused_local_port().expect("a free port")
}

/// True when something on `port` answers `PING` with `+PONG`.
pub fn ping(port: u16) -> bool {
    matches!(command(port, &["PING"]), Ok(Reply::Simple(s)) if s == "PONG")
}

/// A RESP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    /// The strings of an array of bulk strings (`KEYS`), empty for anything else.
    pub fn strings(&self) -> Vec<String> {
        match self {
            Reply::Array(items) => items
                .iter()
                .filter_map(|i| match i {
                    Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Sends one command on a fresh connection and reads its reply (2 s bound each way).
pub fn command(port: u16, args: &[&str]) -> Result<Reply, BoxError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req)?;
    read_reply(&mut BufReader::new(s))
}

/// Keys matching `*{prefix}*` (the proxy may put a prefix inside a hash tag).
pub fn keys_with(port: u16, prefix: &str) -> Result<Vec<String>, BoxError> {
    Ok(command(port, &["KEYS", &format!("*{prefix}*")])?.strings())
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply, BoxError> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line
        .strip_suffix("\r\n")
        .ok_or_else(|| format!("truncated RESP line {line:?}"))?;
    let (kind, rest) = line.split_at_checked(1).ok_or("empty RESP line")?;
    Ok(match kind {
        "+" => Reply::Simple(rest.into()),
        "-" => Reply::Error(rest.into()),
        ":" => Reply::Int(rest.parse()?),
        "$" => {
            let n: i64 = rest.parse()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; usize::try_from(n)? + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(buf.len() - 2);
                Reply::Bulk(Some(buf))
            }
        }
        "*" => {
            let n: i64 = rest.parse()?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        other => return Err(format!("unknown RESP type {other:?}").into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_reply_kind() {
        let text = b"*4\r\n+OK\r\n:7\r\n$3\r\nabc\r\n$-1\r\n";
        let reply = read_reply(&mut &text[..]).unwrap();
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::Simple("OK".into()),
                Reply::Int(7),
                Reply::Bulk(Some(b"abc".to_vec())),
                Reply::Bulk(None),
            ])
        );
        assert_eq!(
            read_reply(&mut &b"-ERR no\r\n"[..]).unwrap(),
            Reply::Error("ERR no".into())
        );
    }

    #[test]
    fn private_servers_stop_and_restart_on_their_port() {
        let mut r = Private::start();
        assert!(ping(r.port));
        command(r.port, &["SET", "k", "v"]).unwrap();
        r.stop();
        assert!(!ping(r.port), "stopped");
        r.restart();
        assert!(ping(r.port), "restarted");
        assert_eq!(command(r.port, &["GET", "k"]).unwrap(), Reply::Bulk(None));
    }
}
