//! Authentication at the edge: picks the credential a request carries (API key or
//! OIDC access token), verifies it against the active config, applies the route's
//! policy (scopes, roles, tenant), and sets the identity headers the upstream sees.
//!
//! Identity comes only from what was verified: every `x-tollgate-*` header and every
//! configured identity header (`x-tenant-id`, `x-actor-id`, `x-user-id` by default) a
//! client sends is removed before forwarding, whether or not the route requires auth.

use crate::credential_memo::{Bearer, CredentialMemo};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use std::sync::Arc;
use tollgate_filters::apikey::{self, KeyError, KeyIdentity, KeyStore};
use tollgate_filters::bearer::BearerError;
use tollgate_filters::oidc::{
    IssuerRegistry, MAX_TOKEN_LEN, TokenDigest, TokenError, VerifiedToken,
};
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

/// Who the caller is, as verified: the key record or the token it was verified from,
/// shared with the key store or the token cache, with the identity header values
/// already built (a request copies nothing but a reference).
#[derive(Debug)]
pub enum Identity {
    Key(Arc<KeyIdentity>),
    Token {
        token: Arc<VerifiedToken>,
        /// The route's tenant claim named the app the request is for.
        tenant: bool,
    },
}

impl Identity {
    /// `api_key` or `token`: the header and metrics value.
    pub fn method(&self) -> &'static str {
        match self {
            Identity::Key(_) => "api_key",
            Identity::Token { .. } => "token",
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        match self {
            Identity::Key(k) => Some(&k.key_id),
            Identity::Token { .. } => None,
        }
    }

    /// `key:<key_id>` for a key, the token's `sub` for a token.
    pub fn subject(&self) -> &str {
        match self {
            Identity::Key(k) => &k.subject,
            Identity::Token { token, .. } => &token.subject,
        }
    }

    pub fn issuer(&self) -> Option<&str> {
        match self {
            Identity::Key(_) => None,
            Identity::Token { token, .. } => Some(&token.issuer),
        }
    }
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

/// How far [`authenticate`] got without waiting.
pub enum Verdict<'h> {
    Done(Result<Identity, AuthFailure>),
    /// An access token none of the route's issuers has verified against its current
    /// keys: [`verify_token`] decides, fetching the keys if need be.
    Unverified {
        token: &'h str,
        digest: Option<TokenDigest>,
    },
}

/// Verifies the request's credential against `policy` for a call to `app_id`, as far
/// as it can without waiting: an API key entirely, an access token when its issuer
/// has verified it before (its verified-token cache).
///
/// `Authorization` is read by the one bearer parser, through the connection's `memo`
/// (see [`CredentialMemo::bearer`]); credentials it refuses are a 401 before anything
/// else is looked at.
pub fn authenticate<'h>(
    auth: &AuthState,
    policy: &AuthPolicy,
    app_id: &str,
    headers: &'h HeaderMap,
    memo: &CredentialMemo,
    now: i64,
) -> Verdict<'h> {
    let bearer = match memo.bearer(headers) {
        Ok(b) => b,
        Err(e) => return Verdict::Done(Err(AuthFailure::Bearer(e))),
    };
    let token = bearer.as_ref().map(|b| b.token);
    // A credential's digest: the bearer token's is known already (the same slice).
    let sha256 = |c: &str| match &bearer {
        Some(Bearer {
            token,
            digest: Some(d),
        }) if std::ptr::eq(*token, c) => *d,
        _ => memo.sha256(c),
    };
    match apikey::with_bearer(Ok(token), headers) {
        Ok(Some(key)) => {
            return Verdict::Done(key_identity(
                auth, policy, app_id, headers, key, sha256, now,
            ));
        }
        Ok(None) => {}
        Err(e) => return Verdict::Done(Err(AuthFailure::Key(e))),
    }
    let Some(token) = token else {
        return Verdict::Done(Err(AuthFailure::Missing));
    };
    if policy.issuers.is_empty() {
        return Verdict::Done(Err(AuthFailure::NotAccepted));
    }
    let digest = (token.len() <= MAX_TOKEN_LEN).then(|| sha256(token));
    match digest
        .as_ref()
        .and_then(|d| auth.issuers.cached(d, &policy.issuers, now))
    {
        Some(verified) => Verdict::Done(
            verified
                .map_err(AuthFailure::Token)
                .and_then(|t| token_identity(t, policy, app_id)),
        ),
        None => Verdict::Unverified { token, digest },
    }
}

/// The rest of [`authenticate`] for a token it could not settle: verified by its
/// issuer (the route must allow that issuer), then held to the route's policy.
pub async fn verify_token(
    auth: &AuthState,
    policy: &AuthPolicy,
    app_id: &str,
    token: &str,
    digest: Option<TokenDigest>,
    now: i64,
) -> Result<Identity, AuthFailure> {
    let t = auth
        .issuers
        .verify_uncached(token, digest, &policy.issuers, now)
        .await
        .map_err(AuthFailure::Token)?;
    token_identity(t, policy, app_id)
}

fn key_identity(
    auth: &AuthState,
    policy: &AuthPolicy,
    app_id: &str,
    headers: &HeaderMap,
    key: &str,
    sha256: impl FnOnce(&str) -> [u8; 32],
    now: i64,
) -> Result<Identity, AuthFailure> {
    if !policy.api_keys {
        return Err(AuthFailure::NotAccepted);
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let id = auth
        .keys
        .verify_hashed(key, app_id, origin, now, sha256)
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
    Ok(Identity::Key(id))
}

/// A verified token held to the route's roles, scopes and tenant claim.
fn token_identity(
    t: Arc<VerifiedToken>,
    policy: &AuthPolicy,
    app_id: &str,
) -> Result<Identity, AuthFailure> {
    if !contains_all(&t.roles, &policy.require_roles) {
        return Err(AuthFailure::MissingRole);
    }
    if !contains_all(&t.scopes, &policy.require_scopes) {
        return Err(AuthFailure::InsufficientScope);
    }
    let tenant = match &policy.tenant_claim {
        Some(claim) => match t.claim_str(claim) {
            Some(v) if v == app_id => true,
            _ => return Err(AuthFailure::WrongTenant),
        },
        None => false,
    };
    Ok(Identity::Token { token: t, tenant })
}

fn contains_all(have: &[String], need: &[String]) -> bool {
    need.iter().all(|n| have.contains(n))
}

/// Headers carrying identity to the upstream; clients can never set them.
const IDENTITY_PREFIX: &str = "x-tollgate-";

static X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");
static X_ACTOR_ID: HeaderName = HeaderName::from_static("x-actor-id");
static X_API_KEY: HeaderName = HeaderName::from_static(apikey::API_KEY_HEADER);

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

impl IdentityHeaders {
    /// Whether a client's header of this (lowercase) name is removed: an `x-tollgate-*`
    /// name or one of these.
    fn strips(&self, name: &str) -> bool {
        name.starts_with(IDENTITY_PREFIX) || self.0.iter().any(|n| n.as_str() == name)
    }
}

/// Removes every `x-tollgate-*` header and every header of `identity` a client sent.
///
/// Found by one scan of the names, so a request that carries none (nearly all) pays
/// no lookups and no allocation.
pub fn strip_identity_headers(headers: &mut HeaderMap, identity: &IdentityHeaders) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| identity.strips(k.as_str()))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// Sets the verified identity for the upstream, `x-tenant-id` to `app` (the app the
/// credential was verified for) and `x-actor-id` to the key id or the token's subject.
/// API keys never leave the edge.
pub fn set_identity_headers(headers: &mut HeaderMap, id: &Identity, app: &HeaderValue) {
    static KEY_ID: HeaderName = HeaderName::from_static("x-tollgate-key-id");
    static AUTH: HeaderName = HeaderName::from_static("x-tollgate-auth");
    static SUBJECT: HeaderName = HeaderName::from_static("x-tollgate-subject");
    static ISSUER: HeaderName = HeaderName::from_static("x-tollgate-issuer");
    static TENANT: HeaderName = HeaderName::from_static("x-tollgate-tenant");
    static ROLES: HeaderName = HeaderName::from_static("x-tollgate-roles");
    static SCOPES: HeaderName = HeaderName::from_static("x-tollgate-scopes");
    headers.insert(X_TENANT_ID.clone(), app.clone());
    headers.insert(AUTH.clone(), HeaderValue::from_static(id.method()));
    // A tenant is only ever the app the credential was verified for.
    let (actor, subject, issuer, tenant, roles, scopes) = match id {
        Identity::Key(k) => {
            headers.remove(header::AUTHORIZATION);
            headers.remove(&X_API_KEY);
            set(headers, &KEY_ID, k.key_id_value.as_ref());
            let actor = k.key_id_value.as_ref();
            (
                actor,
                k.subject_value.as_ref(),
                None,
                true,
                None,
                k.scopes_value.as_ref(),
            )
        }
        Identity::Token { token, tenant } => {
            let v = &token.values;
            let subject = v.subject.as_ref();
            (
                subject,
                subject,
                v.issuer.as_ref(),
                *tenant,
                v.roles.as_ref(),
                v.scopes.as_ref(),
            )
        }
    };
    match actor {
        Some(v) => {
            headers.insert(X_ACTOR_ID.clone(), v.clone());
        }
        None => {
            headers.remove(&X_ACTOR_ID);
        }
    }
    set(headers, &SUBJECT, subject);
    set(headers, &ISSUER, issuer);
    if tenant {
        headers.insert(TENANT.clone(), app.clone());
    }
    set(headers, &ROLES, roles);
    set(headers, &SCOPES, scopes);
}

/// Sets `name` to `value` when there is one; none leaves the header out.
fn set(headers: &mut HeaderMap, name: &HeaderName, value: Option<&HeaderValue>) {
    if let Some(v) = value {
        headers.insert(name.clone(), v.clone());
    }
}

/// Identities for tests: a key of app `acme` with scope `read`, and a token of
/// issuer `https://idp.test` with role `admin`.
#[cfg(test)]
pub(crate) mod test_identities {
    use super::*;
    use tollgate_filters::oidc::TokenValues;
    use tollgate_routing::ApiKeySpec;

    pub fn key(key_id: &str) -> Identity {
        Identity::Key(Arc::new(KeyIdentity::new(Arc::new(ApiKeySpec {
            key_id: key_id.into(),
            app: "acme".into(),
            kind: KeyKind::Secret,
            sha256: String::new(),
            scopes: vec!["read".into()],
            expires_at: None,
            allowed_origins: vec![],
        }))))
    }

    pub fn token(subject: &str, tenant: bool) -> Identity {
        let (issuer, roles) = ("https://idp.test".to_string(), vec!["admin".to_string()]);
        Identity::Token {
            token: Arc::new(VerifiedToken {
                values: TokenValues::new(&issuer, subject, &roles, &[]),
                issuer,
                subject: subject.into(),
                client_id: None,
                audiences: vec![],
                scopes: vec![],
                roles,
                expires_at: 0,
                claims: Default::default(),
            }),
            tenant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_identities::{key, token};
    use super::*;

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
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer sk"));
        h.insert(&X_API_KEY, HeaderValue::from_static("sk"));
        set_identity_headers(&mut h, &key("k1"), &app);
        assert_eq!(h["x-tenant-id"], "acme");
        assert_eq!(h["x-actor-id"], "k1");
        assert_eq!(h["x-tollgate-key-id"], "k1");
        assert_eq!(h["x-tollgate-subject"], "key:k1");
        assert_eq!(h["x-tollgate-scopes"], "read");
        assert_eq!(h["x-tollgate-auth"], "api_key");
        assert_eq!(h["x-tollgate-tenant"], "acme", "a key is its app's");
        assert!(h.get("authorization").is_none() && h.get("x-api-key").is_none());
        let mut h = HeaderMap::new();
        set_identity_headers(&mut h, &token("user-7", true), &app);
        assert_eq!(h["x-actor-id"], "user-7");
        assert_eq!(h["x-tollgate-subject"], "user-7");
        assert_eq!(h["x-tollgate-issuer"], "https://idp.test");
        assert_eq!(h["x-tollgate-roles"], "admin");
        assert_eq!(h["x-tollgate-tenant"], "acme");
        assert_eq!(h["x-tollgate-auth"], "token");
        assert!(h.get("x-tollgate-key-id").is_none() && h.get("x-tollgate-scopes").is_none());
        let mut h = HeaderMap::new();
        set_identity_headers(&mut h, &token("user-7", false), &app);
        assert!(h.get("x-tollgate-tenant").is_none(), "no tenant verified");
        assert!(serde_json::from_str::<IdentityHeaders>(r#"["bad name"]"#).is_err());
        assert_eq!(IdentityHeaders::default().0.len(), 3);
    }
}
