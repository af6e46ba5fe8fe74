//! Runs `tollgate proxy` as a child process with a config written to a temp folder.

use crate::BoxError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `tollgate` binary: `$TOLLGATE_BIN`, else next to the test executable's folder.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("TOLLGATE_BIN") {
        return p.into();
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/tollgate
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("tollgate"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --bins` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A running proxy; killed when dropped.
pub struct ProxyProcess {
    child: Child,
    pub dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub listeners: HashMap<String, SocketAddr>,
    log: PathBuf,
}

impl ProxyProcess {
    /// Writes `config` (TOML) and `files` (name, contents) to a temp folder, starts the
    /// proxy there and waits until its listeners are bound.
    pub fn start(config: &str, files: &[(&str, &str)]) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents)?;
        }
        let cfg = dir.path().join("tollgate.toml");
        std::fs::write(&cfg, config)?;
        let ready = dir.path().join("ready.json");
        let log = dir.path().join("proxy.log");
        let child = Command::new(binary())
            .args(["proxy", "--config"])
            .arg(&cfg)
            .arg("--ready-file")
            .arg(&ready)
            .args(["--poll-ms", "200"])
            .env(
                "RUST_LOG",
                std::env::var("TOLLGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(std::fs::File::create(&log)?))
            .stderr(Stdio::from(std::fs::File::create(
                dir.path().join("proxy.err"),
            )?))
            .spawn()?;
        let mut p = ProxyProcess {
            child,
            dir,
            admin: "0.0.0.0:0".parse()?,
            listeners: HashMap::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: serde_json::Value = serde_json::from_str(&text)?;
                p.admin = v["admin"].as_str().ok_or("admin")?.parse()?;
                if let Some(map) = v["listeners"].as_object() {
                    for (k, a) in map {
                        p.listeners
                            .insert(k.clone(), a.as_str().ok_or("addr")?.parse()?);
                    }
                }
                return Ok(p);
            }
            if let Some(status) = p.child.try_wait()? {
                return Err(format!("proxy exited early ({status}): {}", p.stderr()).into());
            }
            if Instant::now() > deadline {
                return Err("proxy did not become ready within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the proxy on a config expected to be refused; returns exit status and stderr.
    pub fn start_expect_failure(
        config: &str,
        files: &[(&str, &str)],
    ) -> Result<(ExitStatus, String), BoxError> {
        let dir = tempfile::tempdir()?;
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents)?;
        }
        let cfg = dir.path().join("tollgate.toml");
        std::fs::write(&cfg, config)?;
        let out = Command::new(binary())
            .args(["proxy", "--config"])
            .arg(&cfg)
            .output()?;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Address of a named listener.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners[listener]
    }

    /// Replaces the config file (the proxy notices within its poll interval).
    pub fn write_config(&self, config: &str) -> Result<(), BoxError> {
        let tmp = self.dir.path().join("tollgate.toml.new");
        std::fs::write(&tmp, config)?;
        std::fs::rename(tmp, self.dir.path().join("tollgate.toml"))?;
        Ok(())
    }

    /// Writes a file next to the config (certificates and such).
    pub fn write_file(&self, name: &str, contents: &str) -> Result<(), BoxError> {
        let tmp = self.dir.path().join(format!("{name}.new"));
        std::fs::write(&tmp, contents)?;
        std::fs::rename(tmp, self.dir.path().join(name))?;
        Ok(())
    }

    pub fn signal(&self, sig: &str) -> Result<(), BoxError> {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{sig} failed").into())
        }
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err("proxy did not exit in time".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the proxy logged so far (stdout: tracing output).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.err")).unwrap_or_default()
    }

    /// GETs an admin path and returns (status, body).
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), BoxError> {
        let (status, _, body) = crate::client::get_plain(self.admin, "admin", path).await?;
        Ok((status, body))
    }

    /// The Prometheus text from `/metrics`.
    pub async fn metrics(&self) -> Result<String, BoxError> {
        Ok(self.admin_get("/metrics").await?.1)
    }

    /// Sum of a metric's samples whose label set contains all of `labels` (`k="v"` strings).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> Result<f64, BoxError> {
        Ok(metric_value(&self.metrics().await?, name, labels))
    }

    /// Polls `metric` until `pred` holds or `timeout` passes; returns the last value.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[&str],
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> Result<f64, BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(name, labels).await?;
            if pred(v) || Instant::now() > deadline {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sums the samples of `name` in Prometheus text whose labels include every `labels` entry.
pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r),
                None => (series, ""),
            };
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- proxy log ---\n{}\n--- proxy stderr ---\n{}",
                self.logs(),
                self.stderr()
            );
        }
    }
}
