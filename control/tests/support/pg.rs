//! PostgreSQL for the tests, found or started once per test process:
//!
//! 1. `TOLLGATE_TEST_PG_URL`, if set, is used as-is (every test shares that
//!    database; the suite only asserts on its own uniquely named aggregates).
//! 2. Otherwise, if `127.0.0.1:5432` accepts `postgres` without a password, each
//!    test gets a fresh `tollgate_test_*` database there, dropped afterwards.
//! 3. Otherwise (or with `TOLLGATE_TEST_PG_FORCE_OWN=1`) a private cluster is
//!    started from Debian's binaries (`/usr/lib/postgresql/<ver>/bin`) in a temp
//!    dir on a free port (`TOLLGATE_TEST_PG_BIN` overrides the binaries' dir), as the `postgres` user when running as root, with
//!    trust auth and the unix socket in the temp dir. A detached watchdog stops
//!    it and deletes the dir when the test process exits.
//!
//! If none works the test fails with the reasons; it never skips silently.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

const LOCAL_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

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
            let name = crate::support::unique("tollgate_test")
                .replace('-', "_")
                .to_lowercase();
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
    match start_own().await {
        Ok(server) => Ok(server),
        Err(e) => {
            reasons.push(format!("own cluster: {e}"));
            Err(reasons.join("\n"))
        }
    }
}

async fn check(url: &str) -> Result<(), String> {
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

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
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
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

async fn start_own() -> Result<Server, String> {
    let bin = find_bin_dir()?;
    let as_postgres = running_as_root();
    let dir = tempfile::Builder::new()
        .prefix("tollgate-pg-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?
        .keep();
    let data = dir.join("data");
    let sock = dir.join("sock");
    let log = dir.join("postgres.log");
    std::fs::create_dir(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    if as_postgres {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(&dir);
                c
            },
            "chown postgres",
        )?;
    }

    let result = async {
        let mut initdb = pg_command(as_postgres, &bin.join("initdb"), &dir);
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(initdb, "initdb")?;

        let port = free_port()?;
        let mut start = pg_command(as_postgres, &bin.join("pg_ctl"), &dir);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                sh_quote(&sock)
            ))
            .arg("start");
        if let Err(e) = run(start, "pg_ctl start") {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{e}\nserver log:\n{log_text}"));
        }
        spawn_watchdog(as_postgres, &bin, &data, &dir);

        let base = format!("postgres://postgres@127.0.0.1:{port}");
        let admin = format!("{base}/postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match check(&admin).await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("own cluster on port {port} not reachable: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        eprintln!(
            "event-store tests: started own PostgreSQL ({}) in {} on port {port}",
            bin.display(),
            dir.display()
        );
        Ok(Server::Admin {
            base,
            origin: "own cluster",
        })
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
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
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; cd /; {stop}; rm -rf {dir}",
        pid = std::process::id(),
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
        eprintln!("event-store tests: cannot start the PostgreSQL watchdog ({e}); stop it by hand");
    }
}
