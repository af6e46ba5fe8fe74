//! Who may call what: route and app auth policies, API key records (hashes only),
//! and the OIDC issuers tokens are accepted from.

use serde::{Deserialize, Serialize};

/// Credentials a route requires; a route without a policy is open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthPolicy {
    /// Accept the app's API keys (`sk_…`, and `pk_…` when `public_keys`).
    #[serde(default)]
    pub api_keys: bool,
    /// Accept public `pk_…` keys here (routes a browser may call).
    #[serde(default)]
    pub public_keys: bool,
    /// Names of the OIDC issuers whose access tokens are accepted.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Every one of these scopes (token `scope`/`scp`, or key scopes) is required.
    #[serde(default)]
    pub require_scopes: Vec<String>,
    /// Every one of these roles is required (tokens only).
    #[serde(default)]
    pub require_roles: Vec<String>,
    /// A token claim that must equal the app id (cross-tenant calls are refused).
    #[serde(default)]
    pub tenant_claim: Option<String>,
}

/// Secret keys may do anything their scopes allow; public keys only what a browser may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Secret,
    Public,
}

/// An API key as the edge knows it: never the key itself, only its SHA-256.
///
/// A revoked key is absent from the config; revocation removes its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    pub key_id: String,
    pub app: String,
    pub kind: KeyKind,
    /// Lowercase hex SHA-256 of the whole key string.
    pub sha256: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Unix seconds from which the key is refused (like a JWT `exp`).
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Public keys: browser origins allowed to use it (exact `scheme://host[:port]`).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// An OIDC issuer whose access tokens the edge verifies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerSpec {
    /// Name policies refer to.
    pub name: String,
    /// Exact `iss` value; discovery is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// At least one must appear in the token's `aud`.
    pub audiences: Vec<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Claims that must be present (beyond iss, exp, sub).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Require the RFC 9068 `typ: at+jwt` header.
    #[serde(default)]
    pub require_at_jwt: bool,
    /// Extra dotted claim path holding roles (string or array), besides Keycloak's.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Client whose `resource_access.<client>.roles` count as roles.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default = "default_refresh")]
    pub jwks_refresh_secs: u64,
    /// Least time between JWKS fetches triggered by unknown `kid`s.
    #[serde(default = "default_min_refetch")]
    pub min_refetch_secs: u64,
    /// PEM CAs trusted for the discovery and JWKS endpoints; web PKI when absent.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// Algorithms allowed unless an issuer narrows them; never `none` or HMAC.
pub const SUPPORTED_ALGORITHMS: [&str; 4] = ["RS256", "PS256", "ES256", "EdDSA"];

fn default_algorithms() -> Vec<String> {
    SUPPORTED_ALGORITHMS.iter().map(|s| s.to_string()).collect()
}
fn default_leeway() -> u64 {
    30
}
fn default_refresh() -> u64 {
    300
}
fn default_min_refetch() -> u64 {
    10
}
