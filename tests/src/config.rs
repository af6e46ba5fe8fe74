//! Builds proxy config files (TOML) for tests, on ephemeral ports only.
//!
//! Sections are appended in call order, so top-level keys go through [`Config::top`]
//! (they are written before every table).

use crate::tls::TestCert;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A proxy config under construction; [`Config::build`] gives the TOML text.
#[derive(Clone, Debug)]
pub struct Config {
    top: Vec<String>,
    sections: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    /// Admin on an ephemeral loopback port, nothing else.
    pub fn new() -> Self {
        Config {
            top: Vec::new(),
            sections: vec!["[admin]\nlisten = \"127.0.0.1:0\"\n".into()],
        }
    }

    /// A top-level line such as `api_hosts = ["api.test"]`.
    pub fn top(mut self, line: &str) -> Self {
        self.top.push(format!("{line}\n"));
        self
    }

    /// Any TOML text, appended as is (tables such as `[limits]`).
    pub fn raw(mut self, toml: &str) -> Self {
        self.sections.push(format!("{toml}\n"));
        self
    }

    /// A plain listener (HTTP/1.1 and h2c) on `127.0.0.1:0`.
    pub fn listener(self, name: &str) -> Self {
        self.raw(&format!(
            "[[listeners]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\""
        ))
    }

    /// A TLS listener on `127.0.0.1:0`; `tls` holds extra `[listeners.tls]` lines.
    pub fn tls_listener(self, name: &str, tls: &str) -> Self {
        self.raw(&format!(
            "[[listeners]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n[listeners.tls]\n{tls}"
        ))
    }

    /// A certificate read from `<stem>.crt` and `<stem>.key` next to the config.
    pub fn cert(self, stem: &str) -> Self {
        self.raw(&format!(
            "[[certificates]]\ncert_file = \"{stem}.crt\"\nkey_file = \"{stem}.key\""
        ))
    }

    /// An app with one HTTP/1.1 upstream endpoint and the given tenant hostnames.
    pub fn app(self, id: &str, hostnames: &[&str], upstream: SocketAddr) -> Self {
        let hosts: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
        self.raw(&format!(
            "[[apps]]\nid = \"{id}\"\nhostnames = [{}]\n[apps.upstreams.default]\nendpoints = [{{ address = \"{upstream}\" }}]",
            hosts.join(", ")
        ))
    }

    /// [`Config::app`] with `metrics = "detailed"`: its series carry its id.
    pub fn detailed_app(self, id: &str, hostnames: &[&str], upstream: SocketAddr) -> Self {
        let hosts: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
        self.raw(&format!(
            "[[apps]]\nid = \"{id}\"\nmetrics = \"detailed\"\nhostnames = [{}]\n[apps.upstreams.default]\nendpoints = [{{ address = \"{upstream}\" }}]",
            hosts.join(", ")
        ))
    }

    /// An explicit route of `hostname` (all paths) to `app`.
    pub fn route(self, hostname: &str, app: &str) -> Self {
        self.raw(&format!(
            "[[routes]]\nhostname = \"{hostname}\"\napp = \"{app}\""
        ))
    }

    pub fn build(&self) -> String {
        let mut out = self.top.concat();
        out.push('\n');
        out.push_str(&self.sections.join("\n"));
        out
    }
}

/// An `[[apps]]` section with one `default` cluster of `endpoints`; `cluster` holds extra
/// `[apps.upstreams.default]` lines.
pub fn cluster_app(id: &str, endpoints: &[SocketAddr], cluster: &str) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[[apps]]\nid = \"{id}\"\n[apps.upstreams.default]\nendpoints = [{}]\n{cluster}",
        eps.join(", ")
    )
}

/// An `[[apps]]` section (as [`cluster_app`] gives) marked `metrics = "detailed"`, so
/// its metrics carry its id rather than `app="_other"`.
pub fn detailed(app_section: &str) -> String {
    match app_section.strip_prefix("[[apps]]\n") {
        Some(rest) => format!("[[apps]]\nmetrics = \"detailed\"\n{rest}"),
        None => app_section.to_string(),
    }
}

/// A plain listener `http` on the API host `api.test`, then `sections` as given.
pub fn api_config(sections: &[String]) -> Config {
    sections.iter().fold(
        Config::new()
            .top("api_hosts = [\"api.test\"]")
            .listener("http"),
        |cfg, s| cfg.raw(s),
    )
}

/// Files written next to the config: certificates and anything else by name.
#[derive(Clone, Debug, Default)]
pub struct Files(Vec<(String, String)>);

impl Files {
    pub fn new() -> Self {
        Files::default()
    }

    /// `<stem>.crt` and `<stem>.key`, as [`Config::cert`] names them.
    pub fn cert(self, stem: &str, cert: &TestCert) -> Self {
        self.file(&format!("{stem}.crt"), &cert.cert_pem)
            .file(&format!("{stem}.key"), &cert.key_pem)
    }

    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.0.push((name.to_string(), contents.to_string()));
        self
    }

    /// In the shape `ProxyProcess::start` takes.
    pub fn refs(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_str()))
            .collect()
    }
}

/// Runs the proxy on a config expected to be refused, like
/// `ProxyProcess::start_expect_failure`, but kills it and errors if it is still running
/// after `timeout` (an accepted config would otherwise hang the test).
pub fn expect_start_failure(
    config: &str,
    files: &[(&str, &str)],
    timeout: Duration,
) -> Result<(std::process::ExitStatus, String), crate::BoxError> {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir()?;
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents)?;
    }
    let cfg = dir.path().join("tollgate.toml");
    std::fs::write(&cfg, config)?;
    let err = dir.path().join("stderr");
    let mut child = Command::new(crate::proxy::binary())
        .args(["proxy", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&err)?))
        .spawn()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, std::fs::read_to_string(&err)?));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "proxy still running after {timeout:?}: the config was accepted\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
