//! A real Redis for tests, never skipped.
//!
//! [`shared`] uses the Redis on 127.0.0.1:6379 when it answers PING, else starts one
//! `redis-server` (Debian's `/usr/bin/redis-server`, no persistence) on a free port,
//! kept while any test of the binary holds it and killed after. [`Private`] is an
//! instance of the test's own that it may stop, freeze and restart on the same port.
//! Tests on a shared server use a unique key [`prefix`] so they never collide.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A Redis server a test can reach; killed on drop when this process started it.
pub struct Server {
    pub port: u16,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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

/// The Redis every test of this binary shares.
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
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = spawn(port, &dir.path().to_path_buf());
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

/// A key prefix no other test (or run) uses.
pub fn prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "tgtest:{test}:{}:{nanos}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Redis of the test's own, to stop and restart (state is lost: no persistence).
pub struct Private {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Private {
    pub fn start() -> Private {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = spawn(port, &dir.path().to_path_buf());
        Private {
            port,
            dir,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server; connections drop, the port refuses.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn(self.port, &self.dir.path().to_path_buf()));
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
}

impl Drop for Private {
    fn drop(&mut self) {
        self.thaw();
        self.stop();
    }
}

fn redis_server() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/redis-server");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("redis-server")
    }
}

fn spawn(port: u16, dir: &PathBuf) -> Child {
    let child = Command::new(redis_server())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(port) {
        assert!(
            Instant::now() < deadline,
            "redis-server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// True when something on `port` answers `PING` with `+PONG`.
pub fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
