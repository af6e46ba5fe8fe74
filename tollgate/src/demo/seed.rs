//! Seeds the demo tenants through the control service's HTTP API, exactly as an
//! operator would with curl.

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// What the demo needs back from seeding.
pub struct Seeded {
    /// The demo API key, shown once by the control service.
    pub key: String,
}

/// The control API, reached over a fresh HTTP/1.1 connection per call.
pub struct Api {
    pub addr: SocketAddr,
    pub token: String,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Value) -> Result<Value, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{method} {path}: {status} {v}"));
        }
        Ok(v)
    }
}

/// Binds `host` to the demo tenant `acme` and asks for its certificate over ACME.
pub async fn seed_acme(api: &Api, host: &str) -> Result<(), String> {
    api.call(
        Method::PUT,
        &format!("/api/v1/hostnames/{host}"),
        serde_json::json!({"app": "acme"}),
    )
    .await?;
    api.call(
        Method::PUT,
        &format!("/api/v1/hostnames/{host}/tls"),
        serde_json::json!({"challenge": "http-01"}),
    )
    .await?;
    Ok(())
}

/// The demo tenants' upstream addresses.
pub struct Tenants {
    pub acme: SocketAddr,
    pub globex: SocketAddr,
    /// The gRPC `TestService` (h2c).
    pub grpc: SocketAddr,
}

/// Creates the demo platform settings, certificate and tenants.
pub async fn seed(
    api: &Api,
    domain: &str,
    cert: &tollgate_certs::CertSource,
    tenants: &Tenants,
) -> Result<Seeded, String> {
    let Tenants { acme, globex, .. } = *tenants;
    use Method as M;
    api.call(
        M::PUT,
        "/api/v1/platform/api-hosts",
        json!({"hosts": [format!("api.{domain}")]}),
    )
    .await?;
    api.call(
        M::POST,
        "/api/v1/certificates",
        json!({"id": "demo", "cert_pem": cert.cert_pem, "key_pem": cert.key_pem}),
    )
    .await?;
    for (app, addr) in [("acme", acme), ("globex", globex), ("initech", globex)] {
        api.call(M::POST, "/api/v1/apps", json!({"id": app}))
            .await?;
        let instances = format!("/api/v1/apps/{app}/upstreams/default/instances");
        api.call(M::POST, &instances, json!({"address": addr.to_string()}))
            .await?;
        if app != "initech" {
            let host = format!("/api/v1/hostnames/{app}.{domain}");
            api.call(M::PUT, &host, json!({"app": app})).await?;
        }
    }
    api.call(M::POST, "/api/v1/apps/initech/suspend", json!({}))
        .await?;
    api.call(
        M::POST,
        "/api/v1/routes",
        json!({
            "id": "acme-private", "hostname": format!("acme.{domain}"), "path_prefix": "/private",
            "app": "acme", "auth": {"api_keys": true, "require_scopes": ["orders:read"]}
        }),
    )
    .await?;
    let key = api
        .call(
            M::POST,
            "/api/v1/apps/acme/keys",
            json!({"key_id": "demo-key", "scopes": ["orders:read"], "live": false}),
        )
        .await?;
    let key = key["key"]["key"]
        .as_str()
        .ok_or("no key in the answer")?
        .to_string();
    seed_grpc(api, domain, tenants.grpc).await?;
    Ok(Seeded { key })
}

/// The gRPC tenant: an app whose upstream speaks h2c, and a route on `grpc.<domain>`
/// marked as a gRPC service, so browsers' gRPC-Web and Connect calls (JSON through the
/// built-in descriptor set) are translated, from any origin.
async fn seed_grpc(api: &Api, domain: &str, addr: SocketAddr) -> Result<(), String> {
    use Method as M;
    api.call(M::POST, "/api/v1/apps", json!({"id": "grpcdemo"}))
        .await?;
    api.call(
        M::PUT,
        "/api/v1/apps/grpcdemo/upstreams/default",
        json!({"protocol": "h2c"}),
    )
    .await?;
    api.call(
        M::POST,
        "/api/v1/apps/grpcdemo/upstreams/default/instances",
        json!({"address": addr.to_string()}),
    )
    .await?;
    api.call(
        M::POST,
        "/api/v1/routes",
        json!({
            "id": "grpcdemo", "hostname": format!("grpc.{domain}"), "path_prefix": "/",
            "app": "grpcdemo", "rpc": {"descriptor_set": "builtin"},
            "cors": {"allowed_origins": ["*"]}
        }),
    )
    .await?;
    Ok(())
}
