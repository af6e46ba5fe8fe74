//! PostgreSQL for the tests: a database per test ([`test_db`], used by the control
//! service's event-store tests) and a private cluster a test starts, stops and starts
//! again itself ([`PrivateCluster`], used by the upgrade drill to restart PostgreSQL
//! under a running control service).
//!
//! [`test_db`] finds or starts a server once per test process:
//!
//! 1. `TOLLGATE_TEST_PG_URL`, if set, is used as-is (every test shares that
//!    database; the suite only asserts on its own uniquely named aggregates).
//! 2. Otherwise, if `127.0.0.1:5432` accepts `postgres` without a password, each
//!    test gets a fresh `tollgate_test_*` database there, dropped afterwards.
//! 3. Otherwise (or with `TOLLGATE_TEST_PG_FORCE_OWN=1`) a [`PrivateCluster`] is
//!    started, kept for the whole test process.
//!
//! A [`PrivateCluster`] runs Debian's binaries (`/usr/lib/postgresql/<ver>/bin`;
//! `TOLLGATE_TEST_PG_BIN` overrides the binaries' dir) on a data directory in a temp
//! dir, on a free port, as the `postgres` user when running as root, with trust auth
//! and the unix socket in the temp dir. A detached watchdog stops it and deletes the
//! dir when the test process exits (test binaries never run static destructors, and a
//! panicking test must not leak a server); dropping it does the same at once.
//!
//! If none works the test fails with the reasons; it never skips silently.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

const LOCAL_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Bound on the server starting (`pg_ctl -w -t`) and on it answering afterwards.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where test databases come from.
#[derive(Debug, Clone)]
enum Server {
    /// `TOLLGATE_TEST_PG_URL`: one shared database.
    Given(String),
    /// A server we may create databases on: `postgres://postgres@host:port`.
    Admin { base: String, origin: &'static str },
}

/// A database for one test. Dropping it drops a database it created.
pub struct TestDb {
    pub url: String,
    /// Where the database came from (for messages).
    pub origin: &'static str,
    created: Option<(String, String)>,
    /// Bounds concurrent PostgreSQL tests so a shared server's connection
    /// limit (100 by default) is not exhausted; each store pools up to 11.
    _slot: tokio::sync::SemaphorePermit<'static>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.created.take() else {
            return;
        };
        // Best effort, on a thread with its own runtime (we may be inside one).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// A database name no other test (or earlier run against a shared server) uses.
fn unique_db_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "tollgate_test_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database for one test; panics (test failure) with the reasons if no
/// PostgreSQL can be found or started.
pub async fn test_db() -> TestDb {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(3);
    let slot = SLOTS.acquire().await.expect("semaphore never closes");
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        // Discovery is async; run it on its own thread and runtime so this
        // works from any test runtime.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot build a runtime: {e}"))?
                .block_on(discover())
        })
        .join()
        .unwrap_or_else(|_| Err("PostgreSQL discovery panicked".into()))
    });
    let server = match server {
        Ok(server) => server.clone(),
        Err(reasons) => panic!(
            "no PostgreSQL available for the event-store tests:\n{reasons}\n\
             Set TOLLGATE_TEST_PG_URL=postgres://user@host:port/db to use an existing database."
        ),
    };
    match server {
        Server::Given(url) => TestDb {
            url,
            origin: "TOLLGATE_TEST_PG_URL",
            created: None,
            _slot: slot,
        },
        Server::Admin { base, origin } => {
            let admin = format!("{base}/postgres");
            let name = unique_db_name();
            let mut conn = PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("connecting to {admin} ({origin}): {e}"));
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin}: {e}"));
            let _ = conn.close().await;
            TestDb {
                url: format!("{base}/{name}"),
                origin,
                created: Some((admin, name)),
                _slot: slot,
            }
        }
    }
}

async fn discover() -> Result<Server, String> {
    if let Ok(url) = std::env::var("TOLLGATE_TEST_PG_URL")
        && !url.trim().is_empty()
    {
        return match check(&url).await {
            Ok(()) => Ok(Server::Given(url)),
            Err(e) => Err(format!("TOLLGATE_TEST_PG_URL={url}: {e}")),
        };
    }
    let mut reasons = Vec::new();
    if std::env::var_os("TOLLGATE_TEST_PG_FORCE_OWN").is_some() {
        reasons.push("local 127.0.0.1:5432: skipped (TOLLGATE_TEST_PG_FORCE_OWN set)".to_string());
    } else {
        let addr: SocketAddr = ([127, 0, 0, 1], 5432).into();
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) => reasons.push(format!("local 127.0.0.1:5432: {e}")),
            Ok(_) => match check(LOCAL_ADMIN_URL).await {
                Ok(()) => {
                    return Ok(Server::Admin {
                        base: "postgres://postgres@127.0.0.1:5432".into(),
                        origin: "local server 127.0.0.1:5432",
                    });
                }
                Err(e) => reasons.push(format!("local {LOCAL_ADMIN_URL}: {e}")),
            },
        }
    }
    match PrivateCluster::start().await {
        Ok(cluster) => {
            let base = cluster.base_url();
            // Kept for the whole test process; its watchdog stops it at the end.
            std::mem::forget(cluster);
            Ok(Server::Admin {
                base,
                origin: "own cluster",
            })
        }
        Err(e) => {
            reasons.push(format!("own cluster: {e}"));
            Err(reasons.join("\n"))
        }
    }
}

/// Connects to `url` and runs `SELECT 1`, within 10 s.
pub async fn check(url: &str) -> Result<(), String> {
    let connect = async {
        let mut conn = PgConnection::connect(url).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        conn.close().await
    };
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out connecting".into()),
    }
}

/// `TOLLGATE_TEST_PG_BIN` if set, else the newest `/usr/lib/postgresql/<ver>/bin`
/// holding `initdb` and `pg_ctl`.
fn find_bin_dir() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("TOLLGATE_TEST_PG_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.join("initdb").is_file() && bin.join("pg_ctl").is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "TOLLGATE_TEST_PG_BIN={}: no initdb and pg_ctl there",
                bin.display()
            ))
        };
    }
    let root = Path::new("/usr/lib/postgresql");
    let entries = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut found: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no {}/<version>/bin with initdb and pg_ctl", root.display()))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args…`, as the `postgres` user when we are root (PostgreSQL refuses
/// to run as root).
fn pg_command(as_postgres: bool, program: &Path, cwd: &Path) -> Command {
    let mut cmd = if as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.current_dir(cwd).stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its end off the async threads; its output in the error.
async fn run(cmd: Command, what: &str) -> Result<(), String> {
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    crate::ports::unused_local_port()
}

fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A PostgreSQL cluster of the test's own, on a fixed port it keeps across
/// [`stop`](Self::stop) and [`start_again`](Self::start_again), so clients configured
/// with [`url`](Self::url) reconnect to it. Stopped and deleted when dropped.
pub struct PrivateCluster {
    bin: PathBuf,
    as_postgres: bool,
    /// The temp dir: `data/`, `sock/` and `postgres.log`.
    dir: PathBuf,
    port: u16,
    running: bool,
}

impl PrivateCluster {
    /// `initdb` in a new temp dir, then starts the server on a free port and waits
    /// until it answers.
    pub async fn start() -> Result<Self, String> {
        let bin = find_bin_dir()?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("tollgate-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?
            .keep();
        let mut cluster = PrivateCluster {
            bin,
            as_postgres,
            dir,
            port: 0,
            running: false,
        };
        // From here on, dropping `cluster` removes the dir (and stops the server).
        let sock = cluster.dir.join("sock");
        std::fs::create_dir(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
        if as_postgres {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(&cluster.dir);
            run(chown, "chown postgres").await?;
        }
        let mut initdb = pg_command(as_postgres, &cluster.bin.join("initdb"), &cluster.dir);
        initdb.arg("-D").arg(cluster.data()).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(initdb, "initdb").await?;
        cluster.port = free_port()?;
        cluster.start_again().await?;
        spawn_watchdog(
            cluster.as_postgres,
            &cluster.bin,
            &cluster.data(),
            &cluster.dir,
        );
        eprintln!(
            "tests: started a private PostgreSQL ({}) in {} on port {}",
            cluster.bin.display(),
            cluster.dir.display(),
            cluster.port
        );
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT`, without a database.
    pub fn base_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// The `postgres` database, as the superuser `postgres` (trust auth, no password).
    pub fn url(&self) -> String {
        format!("{}/postgres", self.base_url())
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The server's log so far, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A new database `name`; returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, String> {
        let mut conn = PgConnection::connect(&self.url())
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.url()))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        let _ = conn.close().await;
        Ok(format!("{}/{name}", self.base_url()))
    }

    /// Stops the server (`pg_ctl stop -m fast`: open sessions are cut, as in a
    /// restart for an upgrade) and waits until it has.
    pub async fn stop(&mut self) -> Result<(), String> {
        if !self.running {
            return Err("the cluster is not running".into());
        }
        let mut stop = pg_command(self.as_postgres, &self.bin.join("pg_ctl"), &self.dir);
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run(stop, "pg_ctl stop").await?;
        self.running = false;
        Ok(())
    }

    /// Starts the server (again) on the same data and port, and waits until it
    /// answers queries.
    pub async fn start_again(&mut self) -> Result<(), String> {
        if self.running {
            return Err("the cluster is already running".into());
        }
        let mut start = pg_command(self.as_postgres, &self.bin.join("pg_ctl"), &self.dir);
        start
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", &START_TIMEOUT.as_secs().to_string(), "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                self.port,
                sh_quote(&self.dir.join("sock"))
            ))
            .arg("start");
        if let Err(e) = run(start, "pg_ctl start").await {
            return Err(format!("{e}\nserver log:\n{}", self.log()));
        }
        self.running = true;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match check(&self.url()).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "private cluster on port {} not reachable: {e}\nserver log:\n{}",
                        self.port,
                        self.log()
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.running {
            let mut stop = pg_command(self.as_postgres, &self.bin.join("pg_ctl"), Path::new("/"));
            stop.arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = stop.status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A detached process that waits for this test process to exit, then stops the
/// cluster and removes its directory (test binaries never run static
/// destructors, and a panicking test must not leak a server).
fn spawn_watchdog(as_postgres: bool, bin: &Path, data: &Path, dir: &Path) {
    let pg_ctl = bin.join("pg_ctl");
    let stop = if as_postgres {
        format!(
            "runuser -u postgres -- {} -D {} -m immediate stop",
            sh_quote(&pg_ctl),
            sh_quote(data)
        )
    } else {
        format!(
            "{} -D {} -m immediate stop",
            sh_quote(&pg_ctl),
            sh_quote(data)
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; cd /; \
         [ -d {data} ] && {stop}; rm -rf {dir}",
        pid = std::process::id(),
        data = sh_quote(data),
        dir = sh_quote(dir),
    );
    let mut cmd = if Path::new("/usr/bin/setsid").exists() {
        let mut c = Command::new("/usr/bin/setsid");
        c.arg("sh");
        c
    } else {
        Command::new("sh")
    };
    let spawned = cmd
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!("tests: cannot start the PostgreSQL watchdog ({e}); stop it by hand");
    }
}
