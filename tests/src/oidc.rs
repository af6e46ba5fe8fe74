//! A real OpenID provider for the end-to-end tests: the certified `oidc-provider` npm
//! package, run by `node tests/oidc/provider.mjs`, issuing client-credentials access
//! tokens as RFC 9068 JWTs (`typ: at+jwt`).
//!
//! The npm dependencies are installed by `scripts/test`
//! (`npm ci --prefix tests/oidc --no-audit --no-fund`); without them [`OidcProvider::start`]
//! fails, so tests fail instead of skipping.
//!
//! Signing keys come from a [`Keyset`]: two fixed RSA-2048 keys (`tests/oidc/keys/`, ring
//! cannot generate RSA keys) and freshly generated P-256 and Ed25519 keys. Tests rotate keys
//! by restarting the provider on the same port with another keyset
//! ([`OidcProvider::restart_with`]).

use crate::BoxError;
use crate::client;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use serde_json::{Map, Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The audience of issued tokens unless configured otherwise.
pub const DEFAULT_RESOURCE: &str = "https://api.tollgate.test";

/// How long `start` waits for the provider to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on one HTTP exchange with the provider.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

const RSA_FIXTURES: [&str; 2] = [
    include_str!("../oidc/keys/rsa-1.json"),
    include_str!("../oidc/keys/rsa-2.json"),
];

/// JWK members that are private key material.
const PRIVATE_MEMBERS: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];

/// `tests/oidc`: the provider script and its `node_modules`.
pub fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// The command that installs the provider's npm dependencies.
pub const NPM_INSTALL: &str = "npm ci --prefix tests/oidc --no-audit --no-fund";

/// Signing keys as private JWKs, each with a distinct `kid`.
#[derive(Clone, Debug, Default)]
pub struct Keyset {
    keys: Vec<Value>,
}

impl Keyset {
    /// Fixed RSA-2048 key number `n` (1 or 2) from `tests/oidc/keys/rsa-<n>.json`,
    /// `kid` `rsa-<n>`.
    pub fn rsa(n: usize) -> Self {
        let text = n
            .checked_sub(1)
            .and_then(|i| RSA_FIXTURES.get(i))
            .unwrap_or_else(|| panic!("no RSA fixture key {n}: there are rsa-1 and rsa-2"));
        let jwk: Value = serde_json::from_str(text).expect("RSA fixture is JSON");
        Keyset { keys: vec![jwk] }
    }

    /// A fresh P-256 key (ES256), `kid` `ec-<thumbprint prefix>`.
    pub fn ec() -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("P-256 keygen");
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("P-256");
        // ring's PKCS#8 holds the RFC 5915 ECPrivateKey: `02 01 01 04 20 <d:32>`.
        let d = after(pkcs8.as_ref(), &[0x02, 0x01, 0x01, 0x04, 0x20], 32).expect("P-256 d");
        let point = pair.public_key().as_ref(); // 04 || x || y
        assert_eq!(point.len(), 65);
        let mut jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": B64.encode(&point[1..33]),
            "y": B64.encode(&point[33..65]),
        });
        let kid = format!("ec-{}", thumbprint(&jwk));
        let obj = jwk.as_object_mut().expect("object");
        obj.insert("d".into(), B64.encode(d).into());
        obj.insert("kid".into(), kid.into());
        obj.insert("use".into(), "sig".into());
        Keyset { keys: vec![jwk] }
    }

    /// A fresh Ed25519 key (EdDSA), `kid` `ed-<thumbprint prefix>`.
    pub fn ed25519() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 keygen");
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519");
        // ring's PKCS#8 v2: `04 22 04 20 <seed:32>`.
        let seed = after(pkcs8.as_ref(), &[0x04, 0x22, 0x04, 0x20], 32).expect("Ed25519 seed");
        let public = pair.public_key().as_ref();
        signature::Ed25519KeyPair::from_seed_and_public_key(seed, public)
            .expect("seed matches the key");
        let mut jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": B64.encode(public) });
        let kid = format!("ed-{}", thumbprint(&jwk));
        let obj = jwk.as_object_mut().expect("object");
        obj.insert("d".into(), B64.encode(seed).into());
        obj.insert("kid".into(), kid.into());
        obj.insert("use".into(), "sig".into());
        Keyset { keys: vec![jwk] }
    }

    /// This keyset followed by `other`'s keys (the provider signs with the first key
    /// that fits the algorithm unless `ProviderConfig::signing_kid` says otherwise).
    pub fn and(mut self, other: Keyset) -> Self {
        self.keys.extend(other.keys);
        self
    }

    /// All keys of `sets`, in order.
    pub fn combine(sets: impl IntoIterator<Item = Keyset>) -> Self {
        sets.into_iter().fold(Keyset::default(), Keyset::and)
    }

    /// The private JWKs.
    pub fn keys(&self) -> &[Value] {
        &self.keys
    }

    /// The `kid`s, in order.
    pub fn kids(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The JWKS with private members (what the provider is given).
    pub fn private_jwks(&self) -> Value {
        json!({ "keys": self.keys })
    }

    /// The public JWKS (`d`, `p`, `q`, … removed), e.g. for a static JWKS file.
    pub fn public_jwks(&self) -> Value {
        let keys: Vec<Value> = self.keys.iter().map(public_jwk).collect();
        json!({ "keys": keys })
    }

    /// Signs a compact JWS with key `kid`, for tokens the provider would never issue
    /// (tampered claims, odd headers). `alg` is RS256, PS256, ES256 or EdDSA; the header
    /// is `{alg, kid, typ: "at+jwt"}` merged with `header` (an object, or null).
    pub fn sign_jwt(
        &self,
        kid: &str,
        alg: &str,
        header: &Value,
        claims: &Value,
    ) -> Result<String, BoxError> {
        let jwk = self
            .keys
            .iter()
            .find(|k| k["kid"] == kid)
            .ok_or_else(|| format!("no key {kid} in keyset {:?}", self.kids()))?;
        let mut h = json!({ "alg": alg, "kid": kid, "typ": "at+jwt" });
        if let (Some(h), Some(extra)) = (h.as_object_mut(), header.as_object()) {
            h.extend(extra.clone());
        }
        let input = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&h)?),
            B64.encode(serde_json::to_vec(claims)?)
        );
        let sig = sign(jwk, alg, input.as_bytes())?;
        Ok(format!("{input}.{}", B64.encode(sig)))
    }
}

/// One client of the provider (client_secret_basic, client_credentials only).
#[derive(Clone, Debug)]
pub struct OidcClient {
    pub id: String,
    pub secret: String,
    /// Scopes it may request (space-separated); `None`: all of the resource's scopes.
    pub scope: Option<String>,
    /// Claims added to its access tokens (a JSON object); they cannot replace the
    /// standard ones (iss, aud, sub, exp, …).
    pub claims: Map<String, Value>,
}

impl OidcClient {
    pub fn new(id: &str, secret: &str) -> Self {
        OidcClient {
            id: id.into(),
            secret: secret.into(),
            scope: None,
            claims: Map::new(),
        }
    }

    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds (or replaces) one extra access-token claim.
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    /// Replaces all extra claims with the members of `claims` (an object).
    pub fn claims(mut self, claims: Value) -> Self {
        self.claims = match claims {
            Value::Object(m) => m,
            other => panic!("claims must be a JSON object, got {other}"),
        };
        self
    }

    fn to_json(&self) -> Value {
        let mut c = json!({
            "client_id": self.id,
            "client_secret": self.secret,
            "claims": self.claims,
        });
        if let Some(scope) = &self.scope {
            c["scope"] = scope.clone().into();
        }
        c
    }
}

/// What the provider runs with. Defaults: port 0 (ephemeral), keys `Keyset::rsa(1)`,
/// RS256, resource `https://api.tollgate.test` with scopes `read write admin`, TTL 300 s,
/// one client `svc` / `secret` whose tokens carry
/// `realm_access: {roles: ["reader"]}` and `tenant: "acme"`.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub port: u16,
    pub keys: Keyset,
    /// RS256, PS256, ES256 or EdDSA; the keyset needs a key that fits.
    pub alg: String,
    /// Sign with this key (else the first key of the keyset that fits `alg`).
    pub signing_kid: Option<String>,
    /// The resource indicator, used as the tokens' `aud`.
    pub resource: String,
    /// The resource server's scopes, space-separated.
    pub scope: String,
    /// Access-token lifetime (`exp - iat`), seconds.
    pub ttl_secs: u64,
    pub clients: Vec<OidcClient>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            port: 0,
            keys: Keyset::rsa(1),
            alg: "RS256".into(),
            signing_kid: None,
            resource: DEFAULT_RESOURCE.into(),
            scope: "read write admin".into(),
            ttl_secs: 300,
            clients: vec![
                OidcClient::new("svc", "secret")
                    .claim("realm_access", json!({ "roles": ["reader"] }))
                    .claim("tenant", json!("acme")),
            ],
        }
    }
}

impl ProviderConfig {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn keys(mut self, keys: Keyset) -> Self {
        self.keys = keys;
        self
    }

    pub fn alg(mut self, alg: &str) -> Self {
        self.alg = alg.into();
        self
    }

    pub fn signing_kid(mut self, kid: &str) -> Self {
        self.signing_kid = Some(kid.into());
        self
    }

    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = resource.into();
        self
    }

    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = scope.into();
        self
    }

    pub fn ttl(mut self, secs: u64) -> Self {
        self.ttl_secs = secs;
        self
    }

    /// Adds a client, replacing one with the same id (e.g. the default `svc`).
    pub fn client(mut self, c: OidcClient) -> Self {
        self.clients.retain(|x| x.id != c.id);
        self.clients.push(c);
        self
    }

    /// Replaces all clients.
    pub fn clients(mut self, clients: Vec<OidcClient>) -> Self {
        self.clients = clients;
        self
    }

    /// The JSON file `provider.mjs` reads.
    pub fn to_json(&self) -> Value {
        json!({
            "port": self.port,
            "keys": self.keys.private_jwks(),
            "alg": self.alg,
            "signing_kid": self.signing_kid,
            "resource": self.resource,
            "scope": self.scope,
            "access_token_ttl": self.ttl_secs,
            "clients": self.clients.iter().map(OidcClient::to_json).collect::<Vec<_>>(),
        })
    }
}

/// A running provider; killed when dropped.
pub struct OidcProvider {
    /// `http://127.0.0.1:<port>`; stays the same across `restart_with`.
    pub issuer: String,
    pub port: u16,
    pub config: ProviderConfig,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Writes `cfg` to a temp folder, runs `node tests/oidc/provider.mjs` on it and waits
    /// (30 s at most) for the line saying it listens.
    pub fn start(cfg: &ProviderConfig) -> Result<Self, BoxError> {
        let oidc = oidc_dir();
        if !oidc
            .join("node_modules/oidc-provider/package.json")
            .exists()
        {
            return Err(format!(
                "{} has no node_modules/oidc-provider: install it with `{NPM_INSTALL}` \
                 (scripts/test does)",
                oidc.display()
            )
            .into());
        }
        let node = std::env::var("TOLLGATE_NODE").unwrap_or_else(|_| "node".into());
        let dir = tempfile::tempdir()?;
        let cfg_path = dir.path().join("provider.json");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg.to_json())?)?;
        let err_path = dir.path().join("provider.err");
        let mut child = Command::new(&node)
            .arg(oidc.join("provider.mjs"))
            .arg(&cfg_path)
            .current_dir(&oidc)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&err_path)?))
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run `{node}` ({e}): the OIDC tests need Node.js >= 20 on PATH \
                     (or TOLLGATE_NODE) and `{NPM_INSTALL}` (scripts/test does it)"
                )
            })?;

        // Read stdout on a thread so the wait is bounded; it drains stdout until exit.
        let stdout = child.stdout.take().ok_or("child stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut p = OidcProvider {
            issuer: String::new(),
            port: 0,
            config: cfg.clone(),
            child: Some(child),
            dir,
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    let (Some(issuer), Some(port)) = (v["issuer"].as_str(), v["port"].as_u64())
                    else {
                        continue;
                    };
                    p.issuer = issuer.to_owned();
                    p.port = u16::try_from(port)?;
                    p.config.port = p.port;
                    return Ok(p);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = match p.child.as_mut().map(Child::wait).transpose()? {
                        Some(s) => s.to_string(),
                        None => "not running".into(),
                    };
                    return Err(
                        format!("OIDC provider exited early ({status}): {}", p.stderr()).into(),
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "OIDC provider did not listen within {START_TIMEOUT:?}: {}",
                        p.stderr()
                    )
                    .into());
                }
            }
        }
    }

    /// Stops the provider and starts it again on the same port (same issuer) with `cfg`:
    /// key rotation, other clients, another TTL.
    pub fn restart_with(&mut self, cfg: &ProviderConfig) -> Result<(), BoxError> {
        self.stop();
        let cfg = cfg.clone().port(self.port);
        *self = Self::start(&cfg)?;
        Ok(())
    }

    /// Starts the provider again after `stop`, with its last config on the same port.
    pub fn restart(&mut self) -> Result<(), BoxError> {
        let cfg = self.config.clone();
        self.restart_with(&cfg)
    }

    /// Kills the provider (connections to its port are then refused).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `<issuer>/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The provider's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("provider.err")).unwrap_or_default()
    }

    /// The discovery document.
    pub async fn discovery(&self) -> Result<Value, BoxError> {
        let (status, body) = http("GET", &self.discovery_url(), &[], "").await?;
        if status != 200 {
            return Err(format!("discovery: {status} {body}").into());
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// The public JWKS served at the discovery document's `jwks_uri`.
    pub async fn jwks(&self) -> Result<Value, BoxError> {
        let uri = endpoint(&self.discovery().await?, "jwks_uri")?;
        let (status, body) = http("GET", &uri, &[], "").await?;
        if status != 200 {
            return Err(format!("jwks: {status} {body}").into());
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// A client-credentials access token (a JWT) for the configured resource.
    pub async fn token(
        &self,
        client_id: &str,
        secret: &str,
        scope: Option<&str>,
    ) -> Result<String, BoxError> {
        let (status, body) = self.token_response(client_id, secret, scope).await?;
        match body["access_token"].as_str() {
            Some(t) if status == 200 => Ok(t.to_owned()),
            _ => Err(format!("token request for {client_id}: {status} {body}").into()),
        }
    }

    /// The raw token-endpoint answer (status, JSON body) of a client-credentials request
    /// (client_secret_basic, `resource` = the configured resource), for error cases.
    pub async fn token_response(
        &self,
        client_id: &str,
        secret: &str,
        scope: Option<&str>,
    ) -> Result<(u16, Value), BoxError> {
        let uri = endpoint(&self.discovery().await?, "token_endpoint")?;
        let mut form = format!(
            "grant_type=client_credentials&resource={}",
            form_encode(&self.config.resource)
        );
        if let Some(scope) = scope {
            form.push_str(&format!("&scope={}", form_encode(scope)));
        }
        // RFC 6749 §2.3.1: id and secret are form-encoded before base64.
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(client_id),
            form_encode(secret)
        ));
        let (status, body) = http(
            "POST",
            &uri,
            &[
                ("authorization", &format!("Basic {basic}")),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            &form,
        )
        .await?;
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Ok((status, json))
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let err = self.stderr();
            if !err.is_empty() {
                eprintln!("--- OIDC provider stderr ---\n{err}");
            }
        }
    }
}

/// The (header, payload) of a compact JWS, decoded without verifying anything.
pub fn decode_jwt(token: &str) -> Result<(Value, Value), BoxError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("not a compact JWS: {token}").into());
    };
    Ok((
        serde_json::from_slice(&B64.decode(h)?)?,
        serde_json::from_slice(&B64.decode(p)?)?,
    ))
}

/// Verifies a compact JWS against the public keys of `jwks` (the key named by the
/// header's `kid`; RS256, PS256, ES256, EdDSA). Checks the signature only, no claims.
pub fn verify_jwt(token: &str, jwks: &Value) -> Result<(), BoxError> {
    let (header, _) = decode_jwt(token)?;
    let (input, sig) = token.rsplit_once('.').ok_or("not a JWS")?;
    let sig = B64.decode(sig)?;
    let kid = header["kid"].as_str().ok_or("header has no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let alg = header["alg"].as_str().unwrap_or_default();
    let bad = |_| format!("{alg} signature by {kid} does not verify");
    match (jwk["kty"].as_str(), alg) {
        (Some("RSA"), "RS256" | "PS256") => {
            let params = if alg == "RS256" {
                &signature::RSA_PKCS1_2048_8192_SHA256
            } else {
                &signature::RSA_PSS_2048_8192_SHA256
            };
            signature::RsaPublicKeyComponents {
                n: member(jwk, "n")?,
                e: member(jwk, "e")?,
            }
            .verify(params, input.as_bytes(), &sig)
            .map_err(bad)?;
        }
        (Some("EC"), "ES256") => {
            let mut point = vec![4];
            point.extend(member(jwk, "x")?);
            point.extend(member(jwk, "y")?);
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(input.as_bytes(), &sig)
                .map_err(bad)?;
        }
        (Some("OKP"), "EdDSA" | "Ed25519") => {
            signature::UnparsedPublicKey::new(&signature::ED25519, member(jwk, "x")?)
                .verify(input.as_bytes(), &sig)
                .map_err(bad)?;
        }
        (kty, alg) => return Err(format!("cannot verify {alg} with a {kty:?} key").into()),
    }
    Ok(())
}

/// Seconds since the Unix epoch, for hand-made claims.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn public_jwk(jwk: &Value) -> Value {
    let mut k = jwk.clone();
    if let Some(obj) = k.as_object_mut() {
        for m in PRIVATE_MEMBERS {
            obj.remove(m);
        }
    }
    k
}

/// The `len` bytes that follow the first occurrence of `marker` in `der`.
fn after<'a>(der: &'a [u8], marker: &[u8], len: usize) -> Option<&'a [u8]> {
    let at = der.windows(marker.len()).position(|w| w == marker)? + marker.len();
    der.get(at..at + len)
}

/// First 8 bytes (hex) of the RFC 7638 thumbprint of a public EC / OKP JWK.
fn thumbprint(jwk: &Value) -> String {
    // Required members in lexicographic order, no whitespace.
    let names: &[&str] = match jwk["kty"].as_str() {
        Some("EC") => &["crv", "kty", "x", "y"],
        _ => &["crv", "kty", "x"],
    };
    let members: Vec<String> = names
        .iter()
        .map(|n| format!("\"{n}\":{}", jwk[*n]))
        .collect();
    let canonical = format!("{{{}}}", members.join(","));
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn member(jwk: &Value, name: &str) -> Result<Vec<u8>, BoxError> {
    let s = jwk[name]
        .as_str()
        .ok_or_else(|| format!("JWK {} has no {name}", jwk["kid"]))?;
    Ok(B64.decode(s)?)
}

fn sign(jwk: &Value, alg: &str, msg: &[u8]) -> Result<Vec<u8>, BoxError> {
    let rng = SystemRandom::new();
    match (jwk["kty"].as_str(), alg) {
        (Some("RSA"), "RS256" | "PS256") => {
            let pair = signature::RsaKeyPair::from_components(&ring::rsa::KeyPairComponents {
                public_key: ring::rsa::PublicKeyComponents {
                    n: member(jwk, "n")?,
                    e: member(jwk, "e")?,
                },
                d: member(jwk, "d")?,
                p: member(jwk, "p")?,
                q: member(jwk, "q")?,
                dP: member(jwk, "dp")?,
                dQ: member(jwk, "dq")?,
                qInv: member(jwk, "qi")?,
            })
            .map_err(|e| format!("RSA key: {e}"))?;
            let padding: &dyn signature::RsaEncoding = if alg == "RS256" {
                &signature::RSA_PKCS1_SHA256
            } else {
                &signature::RSA_PSS_SHA256
            };
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(padding, &rng, msg, &mut sig)
                .map_err(|_| "RSA signing failed")?;
            Ok(sig)
        }
        (Some("EC"), "ES256") => {
            let mut point = vec![4];
            point.extend(member(jwk, "x")?);
            point.extend(member(jwk, "y")?);
            let pair = signature::EcdsaKeyPair::from_private_key_and_public_key(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &member(jwk, "d")?,
                &point,
                &rng,
            )
            .map_err(|e| format!("P-256 key: {e}"))?;
            let sig = pair.sign(&rng, msg).map_err(|_| "ECDSA signing failed")?;
            Ok(sig.as_ref().to_vec())
        }
        (Some("OKP"), "EdDSA" | "Ed25519") => {
            let pair = signature::Ed25519KeyPair::from_seed_and_public_key(
                &member(jwk, "d")?,
                &member(jwk, "x")?,
            )
            .map_err(|e| format!("Ed25519 key: {e}"))?;
            Ok(pair.sign(msg).as_ref().to_vec())
        }
        (kty, alg) => Err(format!("cannot sign {alg} with a {kty:?} key").into()),
    }
}

fn endpoint(discovery: &Value, name: &str) -> Result<String, BoxError> {
    Ok(discovery[name]
        .as_str()
        .ok_or_else(|| format!("discovery has no {name}: {discovery}"))?
        .to_owned())
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.1 exchange with an `http://host:port/path` URL, bounded by `HTTP_TIMEOUT`.
async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), BoxError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .map_err(|e| format!("{url}: host is not ip:port ({e})"))?;
    let exchange = async {
        let mut sender = client::connect_plain(addr, false).await?;
        let mut req = client::request(
            &sender,
            method,
            "http",
            authority,
            path,
            client::full(body.to_owned()),
        );
        for (name, value) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes())?,
                http::HeaderValue::from_str(value)?,
            );
        }
        let (status, _, text) = client::text(sender.send(req).await?).await?;
        Ok::<_, BoxError>((status, text))
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{method} {url}: no answer within {HTTP_TIMEOUT:?}"))?
}
