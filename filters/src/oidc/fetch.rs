//! Discovery and JWKS fetches: HTTPS (plain HTTP only on loopback), bounded in time
//! and size, no redirects.

use super::error::TokenError;
use super::jwk::JwkSet;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;
use tollgate_routing::OidcIssuerSpec;

/// Time allowed for one request, from connecting to the last body byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery or JWKS document accepted.
pub const MAX_DOCUMENT: usize = 1024 * 1024;

/// Why a fetch failed; logged, never shown to callers.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("request to {0} timed out")]
    Timeout(String),
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: {reason}")]
    Document { url: String, reason: String },
}

/// The HTTP side of one issuer.
pub(crate) struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    issuer: String,
    discovery: Uri,
    /// Whether plain HTTP is allowed (the issuer itself is on loopback HTTP).
    loopback_http: bool,
}

impl Fetcher {
    pub(crate) fn new(spec: &OidcIssuerSpec) -> Result<Fetcher, TokenError> {
        let issuer_uri = check_url(&spec.issuer, true).ok_or_else(|| {
            tracing::error!(issuer = %spec.issuer, "issuer must be an https:// URL (http:// only on loopback)");
            TokenError::InvalidConfig
        })?;
        let loopback_http = issuer_uri.scheme_str() == Some("http");
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            spec.issuer.trim_end_matches('/')
        );
        let discovery = check_url(&discovery, loopback_http).ok_or(TokenError::InvalidConfig)?;

        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(FETCH_TIMEOUT));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(spec)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Ok(Fetcher {
            client,
            issuer: spec.issuer.clone(),
            discovery,
            loopback_http,
        })
    }

    /// OIDC Discovery: the `jwks_uri` of a document whose `issuer` is ours.
    pub(crate) async fn discover(&self) -> Result<Uri, FetchError> {
        let url = self.discovery.to_string();
        let body = self.get(self.discovery.clone()).await?;
        let bad = |reason: &str| FetchError::Document {
            url: url.clone(),
            reason: reason.to_owned(),
        };
        let doc: Value = serde_json::from_slice(&body).map_err(|_| bad("not JSON"))?;
        if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(bad("`issuer` differs from the configured issuer"));
        }
        let jwks = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no `jwks_uri`"))?;
        check_url(jwks, self.loopback_http)
            .ok_or_else(|| bad("`jwks_uri` must be https:// (http:// only for a loopback issuer)"))
    }

    /// The usable keys at `jwks_uri`.
    pub(crate) async fn jwks(&self, jwks_uri: &Uri) -> Result<JwkSet, FetchError> {
        let body = self.get(jwks_uri.clone()).await?;
        JwkSet::parse(&body).map_err(|e| FetchError::Document {
            url: jwks_uri.to_string(),
            reason: match e {
                TokenError::NoKeys => "no usable signature key".to_owned(),
                _ => "not a JWKS document".to_owned(),
            },
        })
    }

    async fn get(&self, uri: Uri) -> Result<Bytes, FetchError> {
        let url = uri.to_string();
        let transport = |reason: String| FetchError::Transport {
            url: url.clone(),
            reason,
        };
        let request = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "tollgate")
            .body(Empty::<Bytes>::new())
            .map_err(|e| transport(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| transport(e.to_string()))?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status {
                    url: url.clone(),
                    status: response.status(),
                });
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT)
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout(url.clone()))?
    }
}

/// `url` as a URI when it is `https://host…`, or `http://` to a loopback host when
/// `allow_loopback_http`; no user info.
fn check_url(url: &str, allow_loopback_http: bool) -> Option<Uri> {
    let uri: Uri = url.parse().ok()?;
    let authority = uri.authority()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    match uri.scheme_str()? {
        "https" => Some(uri),
        "http" if allow_loopback_http && is_loopback(authority.host()) => Some(uri),
        _ => None,
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn tls_config(spec: &OidcIssuerSpec) -> Result<rustls::ClientConfig, TokenError> {
    tollgate_certs::client_config(spec.ca_file.as_deref()).map_err(|reason| {
        tracing::error!(issuer = %spec.issuer, ca_file = ?spec.ca_file, %reason, "cannot use CA file");
        TokenError::InvalidConfig
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("https://idp.example.com/realms/x", false).is_some());
        assert!(check_url("http://idp.example.com", true).is_none());
        assert!(check_url("http://127.0.0.1:8080/x", true).is_some());
        assert!(check_url("http://127.0.0.1:8080/x", false).is_none());
        assert!(check_url("http://localhost/x", true).is_some());
        assert!(check_url("http://[::1]:9/x", true).is_some());
        assert!(check_url("https://user@idp.example.com", false).is_none());
        assert!(check_url("ftp://idp.example.com", true).is_none());
        assert!(check_url("/relative", true).is_none());
        assert!(check_url("http://127.0.0.1.evil.com/", true).is_none());
    }
}
