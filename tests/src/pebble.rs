//! Let's Encrypt's test CA for the ACME end-to-end tests: Debian's `pebble` (2.4) with
//! `pebble-challtestsrv` as the only DNS server it asks.
//!
//! [`Pebble::start`] runs `/usr/bin/pebble-challtestsrv` on free 127.0.0.1 ports (DNS and
//! its management API only; every name answers A 127.0.0.1 and no AAAA unless a test
//! says otherwise), then `/usr/bin/pebble` with a generated config: its ACME and
//! management listeners on free 127.0.0.1 ports, served with a certificate for
//! `localhost` / `127.0.0.1` issued by a CA generated per run
//! ([`Pebble::server_root_pem_path`]), validating HTTP-01 and TLS-ALPN-01 on the ports of
//! [`PebbleOptions`] (where the proxy under test listens). Both programs are installed
//! by `scripts/test` (`apt-get install pebble`); without them `start` fails, so tests
//! fail instead of skipping. Their output goes to files in the temp dir
//! ([`Pebble::logs`]); both are killed on drop.

use crate::BoxError;
use crate::client;
use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Value, json};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Debian's pebble binaries.
pub const PEBBLE: &str = "/usr/bin/pebble";
pub const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// The command that installs them.
pub const APT_INSTALL: &str = "apt-get install --no-install-recommends pebble";

/// How long `start` waits for both programs to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on one HTTP exchange or DNS lookup.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the CA is asked to do differently from pebble's defaults.
#[derive(Clone, Debug, Default)]
pub struct PebbleOptions {
    /// Port pebble's VA connects to for HTTP-01 (`httpPort`); 0 picks a free one.
    pub http_port: u16,
    /// Port pebble's VA connects to for TLS-ALPN-01 (`tlsPort`); 0 picks a free one.
    pub tls_port: u16,
    /// Lifetime of issued certificates (`certificateValidityPeriod`), seconds; `None`:
    /// pebble's default (5 years).
    pub validity_secs: Option<u64>,
    /// Share of good nonces rejected as bad (`PEBBLE_WFE_NONCEREJECT`); `None`: pebble's
    /// default, 5 %.
    pub nonce_reject_percent: Option<u8>,
    /// `(kid, base64url HMAC key)`: external account binding required, with this key.
    pub eab: Option<(String, String)>,
    /// Keep pebble's random 0-15 s sleep before validating; `false` sets
    /// `PEBBLE_VA_NOSLEEP=1`.
    pub va_sleep: bool,
    /// Share of orders that reuse a valid authorization instead of validating again
    /// (`PEBBLE_AUTHZREUSE`); `None`: pebble's default, 50 %.
    pub authz_reuse_percent: Option<u8>,
}

/// A running pebble and challtestsrv; both killed when dropped.
pub struct Pebble {
    /// The options it runs with, ports of 0 replaced by the ones chosen.
    pub options: PebbleOptions,
    dir: tempfile::TempDir,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
    /// Pebble's ACME listener (`listenAddress`).
    acme: SocketAddr,
    /// Pebble's management listener (`managementListenAddress`): roots, intermediates.
    management: SocketAddr,
    /// challtestsrv's DNS server (UDP and TCP).
    dns: SocketAddr,
    /// challtestsrv's management API (plain HTTP).
    challtestsrv_api: SocketAddr,
    /// Trusts only the server root.
    tls: Arc<ClientConfig>,
}

impl Pebble {
    /// Starts challtestsrv, then pebble, and waits (30 s at most) until challtestsrv's DNS
    /// answers and pebble's directory does over TLS. The error carries both logs.
    pub async fn start(mut options: PebbleOptions) -> Result<Pebble, BoxError> {
        for bin in [PEBBLE, CHALLTESTSRV] {
            if !Path::new(bin).exists() {
                return Err(format!(
                    "{bin} is missing: install Debian's pebble with `{APT_INSTALL}` \
                     (scripts/test does)"
                )
                .into());
            }
        }
        if options.http_port == 0 {
            options.http_port = free_port()?;
        }
        if options.tls_port == 0 {
            options.tls_port = free_port()?;
        }
        let dir = tempfile::tempdir()?;
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let dns = SocketAddr::new(localhost, free_port()?);
        let challtestsrv_api = SocketAddr::new(localhost, free_port()?);
        let acme = SocketAddr::new(localhost, free_port()?);
        let management = SocketAddr::new(localhost, free_port()?);

        let (root_pem, cert_pem, key_pem) = server_certificates()?;
        std::fs::write(dir.path().join("server-root.pem"), &root_pem)?;
        std::fs::write(dir.path().join("server-cert.pem"), &cert_pem)?;
        std::fs::write(dir.path().join("server-key.pem"), &key_pem)?;
        let tls = client_config(&root_pem)?;

        let mut p = Pebble {
            options,
            dir,
            pebble: None,
            challtestsrv: None,
            acme,
            management,
            dns,
            challtestsrv_api,
            tls,
        };
        match p.boot().await {
            Ok(()) => Ok(p),
            Err(e) => Err(format!("pebble did not start: {e}\n{}", p.logs()).into()),
        }
    }

    async fn boot(&mut self) -> Result<(), BoxError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let dns = self.dns.to_string();
        let api = self.challtestsrv_api.to_string();
        let mut cmd = Command::new(CHALLTESTSRV);
        cmd.args(["-dns01", &dns, "-management", &api])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
        self.challtestsrv = Some(spawn(cmd, &self.dir.path().join("challtestsrv.log"))?);
        // The management API answers: it is up (and the default A record is set again).
        let api = self.challtestsrv_api;
        poll("challtestsrv's management API", deadline, self, || {
            mock(api, "/set-default-ipv4", json!({ "ip": "127.0.0.1" }))
        })
        .await?;
        // Its DNS answers the default A record.
        let dns_addr = self.dns;
        poll("challtestsrv's DNS", deadline, self, || async move {
            let ips = lookup_a(dns_addr, "pebble-harness-ready.test").await?;
            if ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)) {
                Ok(())
            } else {
                Err(format!("A pebble-harness-ready.test: {ips:?}").into())
            }
        })
        .await?;

        let config = self.config();
        let config_path = self.dir.path().join("pebble.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let mut cmd = Command::new(PEBBLE);
        cmd.arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns])
            .current_dir(self.dir.path());
        if !self.options.va_sleep {
            cmd.env("PEBBLE_VA_NOSLEEP", "1");
        }
        if let Some(pct) = self.options.nonce_reject_percent {
            cmd.env("PEBBLE_WFE_NONCEREJECT", pct.to_string());
        }
        if let Some(pct) = self.options.authz_reuse_percent {
            cmd.env("PEBBLE_AUTHZREUSE", pct.to_string());
        }
        self.pebble = Some(spawn(cmd, &self.dir.path().join("pebble.log"))?);
        let (tls, acme) = (self.tls.clone(), self.acme);
        poll("pebble's directory", deadline, self, || {
            let tls = tls.clone();
            async move { directory(&tls, acme).await.map(|_| ()) }
        })
        .await?;
        Ok(())
    }

    /// The pebble config file's JSON.
    fn config(&self) -> Value {
        let dir = self.dir.path();
        let mut c = json!({
            "listenAddress": self.acme.to_string(),
            "managementListenAddress": self.management.to_string(),
            "certificate": dir.join("server-cert.pem"),
            "privateKey": dir.join("server-key.pem"),
            "httpPort": self.options.http_port,
            "tlsPort": self.options.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": self.options.eab.is_some(),
        });
        let obj = c.as_object_mut().expect("object");
        if let Some((kid, key)) = &self.options.eab {
            obj.insert("externalAccountMACKeys".into(), json!({ kid: key }));
        }
        if let Some(secs) = self.options.validity_secs {
            obj.insert("certificateValidityPeriod".into(), secs.into());
        }
        json!({ "pebble": c })
    }

    /// `https://127.0.0.1:<port>/dir`, the ACME directory.
    pub fn directory_url(&self) -> String {
        format!("https://{}/dir", self.acme)
    }

    /// Pebble's ACME listener.
    pub fn acme_addr(&self) -> SocketAddr {
        self.acme
    }

    /// The CA certificate (PEM) behind pebble's own HTTPS listeners, which an ACME client
    /// must trust to reach [`Pebble::directory_url`]. Not the root of issued certificates:
    /// that is [`Pebble::issuing_roots_pem`].
    pub fn server_root_pem_path(&self) -> PathBuf {
        self.dir.path().join("server-root.pem")
    }

    /// A rustls client config trusting only [`Pebble::server_root_pem_path`].
    pub fn server_tls_config(&self) -> Arc<ClientConfig> {
        self.tls.clone()
    }

    /// challtestsrv's DNS server (UDP and TCP), the one pebble asks.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns
    }

    /// The temp dir holding the config, certificates and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The ACME directory document.
    pub async fn directory(&self) -> Result<Value, BoxError> {
        directory(&self.tls, self.acme).await
    }

    /// The root (PEM) that signs issued certificates (management `/roots/0`): what
    /// clients of the proxy must trust. Fresh on every pebble start.
    pub async fn issuing_roots_pem(&self) -> Result<String, BoxError> {
        self.management_get("/roots/0").await
    }

    /// The intermediate (PEM) between issued certificates and the root
    /// (management `/intermediates/0`); pebble sends it in the chain of every order.
    pub async fn intermediates_pem(&self) -> Result<String, BoxError> {
        self.management_get("/intermediates/0").await
    }

    async fn management_get(&self, path: &str) -> Result<String, BoxError> {
        let (status, body) = https(&self.tls, self.management, "GET", path).await?;
        if status != 200 {
            return Err(format!("pebble management GET {path}: {status} {body}").into());
        }
        Ok(body)
    }

    /// Makes `host` answer A `ip` only (replacing earlier A records of it).
    pub async fn set_a(&self, host: &str, ip: &str) -> Result<(), BoxError> {
        self.clear_a(host).await?;
        self.add_a(host, &[ip]).await
    }

    /// Adds A records `ips` to `host` (challtestsrv appends).
    pub async fn add_a(&self, host: &str, ips: &[&str]) -> Result<(), BoxError> {
        self.mock("/add-a", json!({ "host": fqdn(host), "addresses": ips }))
            .await
    }

    /// Removes `host`'s A records: it answers the default address again.
    pub async fn clear_a(&self, host: &str) -> Result<(), BoxError> {
        self.mock("/clear-a", json!({ "host": fqdn(host) })).await
    }

    /// Makes `name` answer TXT `value` only (replacing earlier TXT records of it).
    pub async fn set_txt(&self, name: &str, value: &str) -> Result<(), BoxError> {
        self.clear_txt(name).await?;
        self.add_txt(name, value).await
    }

    /// Adds TXT `value` to `name` (challtestsrv appends).
    pub async fn add_txt(&self, name: &str, value: &str) -> Result<(), BoxError> {
        self.mock("/set-txt", json!({ "host": fqdn(name), "value": value }))
            .await
    }

    /// Removes `name`'s TXT records.
    pub async fn clear_txt(&self, name: &str) -> Result<(), BoxError> {
        self.mock("/clear-txt", json!({ "host": fqdn(name) })).await
    }

    /// The address names without A records of their own answer (127.0.0.1 at start).
    pub async fn set_default_ipv4(&self, ip: &str) -> Result<(), BoxError> {
        self.mock("/set-default-ipv4", json!({ "ip": ip })).await
    }

    async fn mock(&self, path: &str, body: Value) -> Result<(), BoxError> {
        mock(self.challtestsrv_api, path, body).await
    }

    /// A resolver asking only challtestsrv's DNS, without a cache.
    pub fn resolver(&self) -> Result<Resolver<TokioRuntimeProvider>, BoxError> {
        resolver(self.dns)
    }

    /// The A records challtestsrv answers for `host`.
    pub async fn lookup_a(&self, host: &str) -> Result<Vec<IpAddr>, BoxError> {
        lookup_a(self.dns, host).await
    }

    /// The TXT records challtestsrv answers for `name` (each one's strings joined).
    pub async fn lookup_txt(&self, name: &str) -> Result<Vec<String>, BoxError> {
        let fq = fqdn(name);
        let lookup = tokio::time::timeout(CALL_TIMEOUT, resolver(self.dns)?.txt_lookup(fq))
            .await
            .map_err(|_| format!("TXT {name}: no answer in {CALL_TIMEOUT:?}"))??;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }

    /// Output of both programs so far (stdout and stderr), for failure messages.
    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- pebble-challtestsrv ---\n{}\n--- pebble ---\n{}",
            read("challtestsrv.log"),
            read("pebble.log")
        )
    }

    /// Kills both programs.
    pub fn stop(&mut self) {
        for mut child in [self.pebble.take(), self.challtestsrv.take()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether both programs are still running.
    pub fn is_running(&mut self) -> bool {
        [&mut self.pebble, &mut self.challtestsrv]
            .into_iter()
            .all(|c| c.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))))
    }

    /// An error naming the program that exited, if one did.
    fn exited(&mut self) -> Option<String> {
        for (name, child) in [
            ("pebble-challtestsrv", &mut self.challtestsrv),
            ("pebble", &mut self.pebble),
        ] {
            if let Some(c) = child
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(format!("{name} exited ({status})"));
            }
        }
        None
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Retries `check` every 50 ms until it succeeds, a program exits or `deadline` passes.
async fn poll<F, Fut>(
    what: &str,
    deadline: Instant,
    p: &mut Pebble,
    check: F,
) -> Result<(), BoxError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    loop {
        if let Some(e) = p.exited() {
            return Err(format!("waiting for {what}: {e}").into());
        }
        let last = match check().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!("{what} did not answer within {START_TIMEOUT:?}: {last}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One challtestsrv management call; anything but 200 is an error.
async fn mock(api: SocketAddr, path: &str, body: Value) -> Result<(), BoxError> {
    let call = async {
        let mut s = client::connect_plain(api, false).await?;
        let host = api.to_string();
        let mut req = client::request(
            &s,
            "POST",
            "http",
            &host,
            path,
            client::full(body.to_string()),
        );
        req.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        client::text(s.send(req).await?).await
    };
    let (status, _, text) = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| format!("challtestsrv POST {path}: no answer in {CALL_TIMEOUT:?}"))??;
    if status != 200 {
        return Err(format!("challtestsrv POST {path} {body}: {status} {text}").into());
    }
    Ok(())
}

/// A resolver asking only the DNS server at `dns`, without a cache.
fn resolver(dns: SocketAddr) -> Result<Resolver<TokioRuntimeProvider>, BoxError> {
    let mut udp = ConnectionConfig::udp();
    udp.port = dns.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = dns.port();
    let server = NameServerConfig::new(dns.ip(), true, vec![udp, tcp]);
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_parts(None, Vec::new(), vec![server]),
        TokioRuntimeProvider::default(),
    );
    let mut o = ResolverOpts::default();
    o.cache_size = 0;
    o.timeout = Duration::from_secs(2);
    *builder.options_mut() = o;
    Ok(builder.build()?)
}

async fn lookup_a(dns: SocketAddr, host: &str) -> Result<Vec<IpAddr>, BoxError> {
    let name = fqdn(host);
    let lookup = tokio::time::timeout(CALL_TIMEOUT, resolver(dns)?.ipv4_lookup(name))
        .await
        .map_err(|_| format!("A {host}: no answer in {CALL_TIMEOUT:?}"))??;
    Ok(lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect())
}

async fn directory(tls: &Arc<ClientConfig>, acme: SocketAddr) -> Result<Value, BoxError> {
    let (status, body) = https(tls, acme, "GET", "/dir").await?;
    if status != 200 {
        return Err(format!("GET /dir: {status} {body}").into());
    }
    Ok(serde_json::from_str(&body)?)
}

/// Runs `cmd` with stdout and stderr appended to `log`.
fn spawn(mut cmd: Command, log: &Path) -> Result<Child, BoxError> {
    let out = File::create(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", cmd.get_program()).into())
}

/// One HTTPS exchange on a fresh connection (SNI-less, verified against 127.0.0.1).
async fn https(
    cfg: &Arc<ClientConfig>,
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<(u16, String), BoxError> {
    let call = async {
        let mut s = client::connect_tls(addr, &addr.ip().to_string(), cfg.clone()).await?;
        let req = client::request(
            &s,
            method,
            "https",
            &addr.to_string(),
            path,
            client::empty(),
        );
        client::text(s.send(req).await?).await
    };
    let (status, _, body) = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| format!("{method} https://{addr}{path}: no answer in {CALL_TIMEOUT:?}"))??;
    Ok((status, body))
}

/// A CA and a leaf it signs for `localhost` and 127.0.0.1: (root PEM, leaf PEM, key PEM).
fn server_certificates() -> Result<(String, String, String), BoxError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "tollgate-tests pebble server root");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// A client config trusting only `root_pem`, HTTP/1.1.
fn client_config(root_pem: &str) -> Result<Arc<ClientConfig>, BoxError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(root_pem.as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// `name` with a trailing dot, as challtestsrv keys its records.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn free_port() -> Result<u16, BoxError> {
    Ok(crate::ports::unused_local_port()?)
}
