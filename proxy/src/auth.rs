//! Authentication at the edge: picks the credential a request carries (API key or
//! OIDC access token), verifies it against the active config, applies the route's
//! policy (scopes, roles, tenant), and sets the identity headers the upstream sees.
//!
//! Identity comes only from what was verified: every `x-tollgate-*` header and every
//! configured identity header (`x-tenant-id`, `x-actor-id`, `x-user-id` by default) a
//! client sends is removed before forwarding, whether or not the route requires auth.

use crate::clock::now_unix;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use tollgate_filters::apikey::{self, KeyError, KeyStore};
use tollgate_filters::bearer::{self, BearerError};
use tollgate_filters::oidc::{IssuerRegistry, TokenError};
use tollgate_routing::{AuthPolicy, KeyKind};

/// Credential checkers built from one config generation.
#[derive(Clone)]
pub struct AuthState {
    pub keys: KeyStore,
    pub issuers: IssuerRegistry,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthState {{ keys: {} }}", self.keys.len())
    }
}

/// Who the caller is, as verified.
#[derive(Debug)]
pub struct Identity {
    pub method: &'static str,
    pub subject: String,
    pub key_id: Option<String>,
    pub issuer: Option<String>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
}

/// Why a request was refused; the client learns only 401 or 403, never which part failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    /// An `Authorization` header the bearer parser refuses (or two of them).
    Bearer(BearerError),
    Key(KeyError),
    Token(TokenError),
    /// A credential of a kind this route does not accept.
    NotAccepted,
    PublicKeyNotAllowed,
    InsufficientScope,
    MissingRole,
    WrongTenant,
}

impl AuthFailure {
    /// 401 (credentials missing or invalid) versus 403 (valid but not enough).
    pub fn is_forbidden(self) -> bool {
        matches!(
            self,
            AuthFailure::PublicKeyNotAllowed
                | AuthFailure::InsufficientScope
                | AuthFailure::MissingRole
                | AuthFailure::WrongTenant
        ) || matches!(
            self,
            AuthFailure::Key(KeyError::WrongApp | KeyError::OriginNotAllowed)
        )
    }

    /// Metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Bearer(e) => e.reason(),
            AuthFailure::Key(e) => e.reason(),
            AuthFailure::Token(e) => e.reason(),
            AuthFailure::NotAccepted => "credential_not_accepted",
            AuthFailure::PublicKeyNotAllowed => "public_key_not_allowed",
            AuthFailure::InsufficientScope => "insufficient_scope",
            AuthFailure::MissingRole => "missing_role",
            AuthFailure::WrongTenant => "wrong_tenant",
        }
    }
}

/// Verifies the request's credential against `policy` for a call to `app_id`.
///
/// `Authorization` is read by [`bearer::from_headers`], the one bearer parser (the API
/// key filter reads it the same way); credentials it refuses are a 401 before anything
/// else is looked at.
pub async fn authenticate(
    auth: &AuthState,
    policy: &AuthPolicy,
    app_id: &str,
    headers: &HeaderMap,
) -> Result<Identity, AuthFailure> {
    let now = now_unix();
    let bearer = bearer::from_headers(headers).map_err(AuthFailure::Bearer)?;
    if let Some(key) = apikey::with_bearer(Ok(bearer), headers).map_err(AuthFailure::Key)? {
        if !policy.api_keys {
            return Err(AuthFailure::NotAccepted);
        }
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let id = auth
            .keys
            .verify(key, app_id, origin, now)
            .map_err(AuthFailure::Key)?;
        if id.kind == KeyKind::Public && !policy.public_keys {
            return Err(AuthFailure::PublicKeyNotAllowed);
        }
        if !contains_all(&id.scopes, &policy.require_scopes) {
            return Err(AuthFailure::InsufficientScope);
        }
        if !policy.require_roles.is_empty() {
            return Err(AuthFailure::MissingRole); // keys carry no roles
        }
        return Ok(Identity {
            method: "api_key",
            subject: format!("key:{}", id.key_id),
            key_id: Some(id.key_id.clone()),
            issuer: None,
            tenant: Some(id.app.clone()),
            roles: Vec::new(),
            scopes: id.scopes.clone(),
        });
    }
    let Some(token) = bearer else {
        return Err(AuthFailure::Missing);
    };
    if policy.issuers.is_empty() {
        return Err(AuthFailure::NotAccepted);
    }
    let t = auth
        .issuers
        .verify(token, &policy.issuers, now)
        .await
        .map_err(AuthFailure::Token)?;
    if !contains_all(&t.roles, &policy.require_roles) {
        return Err(AuthFailure::MissingRole);
    }
    if !contains_all(&t.scopes, &policy.require_scopes) {
        return Err(AuthFailure::InsufficientScope);
    }
    let tenant = match &policy.tenant_claim {
        Some(claim) => match t.claim_str(claim) {
            Some(v) if v == app_id => Some(v.to_string()),
            _ => return Err(AuthFailure::WrongTenant),
        },
        None => None,
    };
    Ok(Identity {
        method: "token",
        subject: t.subject.clone(),
        key_id: None,
        issuer: Some(t.issuer.clone()),
        tenant,
        roles: t.roles.clone(),
        scopes: t.scopes.clone(),
    })
}

fn contains_all(have: &[String], need: &[String]) -> bool {
    need.iter().all(|n| have.contains(n))
}

/// Headers carrying identity to the upstream; clients can never set them.
const IDENTITY_PREFIX: &str = "x-tollgate-";

static X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");
static X_ACTOR_ID: HeaderName = HeaderName::from_static("x-actor-id");

/// Identity headers the platform's backends trust (`limits.identity_headers`), parsed
/// once when the config is read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct IdentityHeaders(pub Vec<HeaderName>);

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders(vec![
            X_TENANT_ID.clone(),
            X_ACTOR_ID.clone(),
            HeaderName::from_static("x-user-id"),
        ])
    }
}

impl TryFrom<Vec<String>> for IdentityHeaders {
    type Error = String;

    fn try_from(names: Vec<String>) -> Result<Self, String> {
        names
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| format!("`{n}` is not a header name"))
            })
            .collect::<Result<_, _>>()
            .map(IdentityHeaders)
    }
}

/// Removes every `x-tollgate-*` header and every header of `identity` a client sent.
pub fn strip_identity_headers(headers: &mut HeaderMap, identity: &IdentityHeaders) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(IDENTITY_PREFIX))
        .cloned()
        .collect();
    for name in spoofed.iter().chain(&identity.0) {
        headers.remove(name);
    }
}

/// Sets the verified identity for the upstream, `x-tenant-id` to `app` (the app the
/// credential was verified for) and `x-actor-id` to the key id or the token's subject.
/// API keys never leave the edge.
pub fn set_identity_headers(headers: &mut HeaderMap, id: &Identity, app: &HeaderValue) {
    if id.method == "api_key" {
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-api-key");
    }
    headers.insert(X_TENANT_ID.clone(), app.clone());
    let actor = id.key_id.as_deref().unwrap_or(&id.subject);
    match HeaderValue::from_str(actor) {
        Ok(v) => {
            if id.key_id.is_some() {
                headers.insert(HeaderName::from_static("x-tollgate-key-id"), v.clone());
            }
            headers.insert(X_ACTOR_ID.clone(), v);
        }
        Err(_) => {
            headers.remove(&X_ACTOR_ID);
        }
    }
    headers.insert(
        HeaderName::from_static("x-tollgate-auth"),
        HeaderValue::from_static(id.method),
    );
    set_text(headers, "x-tollgate-subject", &id.subject);
    if let Some(i) = &id.issuer {
        set_text(headers, "x-tollgate-issuer", i);
    }
    // A tenant is only ever the app the credential was verified for.
    if id.tenant.is_some() {
        headers.insert(HeaderName::from_static("x-tollgate-tenant"), app.clone());
    }
    if !id.roles.is_empty() {
        set_text(headers, "x-tollgate-roles", &id.roles.join(","));
    }
    if !id.scopes.is_empty() {
        set_text(headers, "x-tollgate-scopes", &id.scopes.join(" "));
    }
}

/// Sets `name` to `value` when it is a valid header value; a value that is not leaves
/// the header out.
fn set_text(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(key_id: Option<&str>) -> Identity {
        Identity {
            method: if key_id.is_some() { "api_key" } else { "token" },
            subject: "user-7".into(),
            key_id: key_id.map(Into::into),
            issuer: None,
            tenant: None,
            roles: Vec::new(),
            scopes: Vec::new(),
        }
    }

    #[test]
    fn client_identity_headers_are_replaced_by_the_verified_ones() {
        let names: IdentityHeaders =
            serde_json::from_str(r#"["X-Tenant-Id", "x-actor-id", "x-user-id", "x-org"]"#).unwrap();
        let mut h = HeaderMap::new();
        for name in [
            "x-tenant-id",
            "x-actor-id",
            "x-user-id",
            "x-org",
            "x-tollgate-subject",
        ] {
            h.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static("spoof"),
            );
        }
        strip_identity_headers(&mut h, &names);
        assert!(h.is_empty(), "{h:?}");
        let app = HeaderValue::from_static("acme");
        set_identity_headers(&mut h, &identity(Some("k1")), &app);
        assert_eq!(h["x-tenant-id"], "acme");
        assert_eq!(h["x-actor-id"], "k1");
        assert_eq!(h["x-tollgate-key-id"], "k1");
        assert_eq!(h["x-tollgate-auth"], "api_key");
        assert!(h.get("x-tollgate-tenant").is_none(), "no tenant verified");
        let mut h = HeaderMap::new();
        let tenant = Identity {
            tenant: Some("acme".into()),
            ..identity(None)
        };
        set_identity_headers(&mut h, &tenant, &app);
        assert_eq!(h["x-actor-id"], "user-7");
        assert_eq!(h["x-tollgate-subject"], "user-7");
        assert_eq!(h["x-tollgate-tenant"], "acme");
        assert_eq!(h["x-tollgate-auth"], "token");
        assert!(h.get("x-tollgate-key-id").is_none());
        assert!(serde_json::from_str::<IdentityHeaders>(r#"["bad name"]"#).is_err());
        assert_eq!(IdentityHeaders::default().0.len(), 3);
    }
}
