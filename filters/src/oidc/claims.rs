//! Claim checks of a verified access token (RFC 7519 §4.1, RFC 9068 §2.2, §4) and what
//! the edge extracts from it: subject, client, audiences, scopes, roles.

use super::error::TokenError;
use super::json::lookup;
use http::HeaderValue;
use serde_json::{Map, Value};
use std::collections::HashSet;
use tollgate_routing::OidcIssuerSpec;

/// An access token whose signature and claims were checked; every field comes from it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// `iss`, equal to the issuer's configured value.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `client_id` (RFC 9068), else `azp` (OIDC, Keycloak).
    pub client_id: Option<String>,
    /// `aud`, as a list.
    pub audiences: Vec<String>,
    /// `scope` (space-separated) and `scp` (array or string), without duplicates.
    pub scopes: Vec<String>,
    /// `realm_access.roles`, `resource_access.<client_id>.roles` and the configured
    /// roles claim, without duplicates.
    pub roles: Vec<String>,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
    /// Every claim of the payload.
    pub claims: Map<String, Value>,
    /// The identity header values the upstream is sent, built once when the token
    /// verifies: a token served from the cache costs no formatting.
    pub values: TokenValues,
}

/// A verified token's identity header values; `None` where the claim is empty or not a
/// valid header value.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenValues {
    pub subject: Option<HeaderValue>,
    pub issuer: Option<HeaderValue>,
    /// Roles joined by commas.
    pub roles: Option<HeaderValue>,
    /// Scopes joined by spaces.
    pub scopes: Option<HeaderValue>,
}

impl TokenValues {
    pub fn new(issuer: &str, subject: &str, roles: &[String], scopes: &[String]) -> Self {
        let value = |s: &str| (!s.is_empty()).then(|| HeaderValue::from_str(s).ok())?;
        TokenValues {
            subject: value(subject),
            issuer: value(issuer),
            roles: value(&roles.join(",")),
            scopes: value(&scopes.join(" ")),
        }
    }
}

impl VerifiedToken {
    /// The string claim at `dotted_path`: an exact top-level name first (names may hold
    /// dots), then a path through nested objects (`tenant.id`).
    pub fn claim_str(&self, dotted_path: &str) -> Option<&str> {
        lookup(&self.claims, dotted_path)?.as_str()
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Checks the claims of a token whose signature is valid and builds the result.
pub(crate) fn validate(
    claims: Map<String, Value>,
    spec: &OidcIssuerSpec,
    now: i64,
) -> Result<VerifiedToken, TokenError> {
    let issuer = required_str(&claims, "iss")?;
    if issuer != spec.issuer {
        return Err(TokenError::WrongIssuer);
    }
    check_times(&claims, spec.leeway_secs, now)?;
    let expires_at = numeric_date(claims.get("exp"))?.ok_or(TokenError::MissingClaim)?;

    let audiences = string_or_array(claims.get("aud"))?.ok_or(TokenError::MissingClaim)?;
    if !audiences.iter().any(|a| spec.audiences.contains(a)) {
        return Err(TokenError::WrongAudience);
    }
    let subject = required_str(&claims, "sub")?;
    if subject.is_empty() {
        return Err(TokenError::MissingClaim);
    }
    for name in &spec.required_claims {
        if lookup(&claims, name).is_none_or(Value::is_null) {
            return Err(TokenError::MissingClaim);
        }
    }
    let client_id = match optional_str(&claims, "client_id")? {
        Some(c) => Some(c),
        None => optional_str(&claims, "azp")?,
    };

    let mut scopes = Vec::new();
    if let Some(s) = claims.get("scope") {
        let s = s.as_str().ok_or(TokenError::Malformed)?;
        push_unique(&mut scopes, s.split_ascii_whitespace().map(str::to_owned));
    }
    if let Some(list) = string_or_array(claims.get("scp"))? {
        let words = list
            .iter()
            .flat_map(|s| s.split_ascii_whitespace())
            .map(str::to_owned)
            .collect::<Vec<_>>();
        push_unique(&mut scopes, words);
    }

    let mut roles = Vec::new();
    push_unique(&mut roles, roles_at(&claims, "realm_access.roles")?);
    if let Some(client) = &spec.client_id {
        let client_roles = claims
            .get("resource_access")
            .and_then(Value::as_object)
            .and_then(|r| r.get(client.as_str()))
            .and_then(Value::as_object)
            .and_then(|c| c.get("roles"));
        push_unique(
            &mut roles,
            string_or_array(client_roles)?.unwrap_or_default(),
        );
    }
    if let Some(path) = &spec.roles_claim {
        push_unique(&mut roles, roles_at(&claims, path)?);
    }

    Ok(VerifiedToken {
        values: TokenValues::new(&issuer, &subject, &roles, &scopes),
        issuer,
        subject,
        client_id,
        audiences,
        scopes,
        roles,
        expires_at,
        claims,
    })
}

/// `exp` (required), `nbf` and `iat` against `now`, each with `leeway_secs` of slack.
pub(crate) fn check_times(
    claims: &Map<String, Value>,
    leeway_secs: u64,
    now: i64,
) -> Result<(), TokenError> {
    let leeway = leeway(leeway_secs);
    let exp = numeric_date(claims.get("exp"))?.ok_or(TokenError::MissingClaim)?;
    check_expiry(exp, leeway, now)?;
    check_not_before(numeric_date(claims.get("nbf"))?, leeway, now)?;
    check_not_before(numeric_date(claims.get("iat"))?, leeway, now)
}

/// The time claims of a verified token, parsed once, so that a cached token is checked
/// against a later `now` by the same rules as [`check_times`] without reading its claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
}

impl Validity {
    pub(crate) fn of(claims: &Map<String, Value>) -> Result<Validity, TokenError> {
        Ok(Validity {
            exp: numeric_date(claims.get("exp"))?.ok_or(TokenError::MissingClaim)?,
            nbf: numeric_date(claims.get("nbf"))?,
            iat: numeric_date(claims.get("iat"))?,
        })
    }

    /// What [`check_times`] says of the same claims at `now`.
    pub(crate) fn check(&self, leeway_secs: u64, now: i64) -> Result<(), TokenError> {
        let leeway = leeway(leeway_secs);
        check_expiry(self.exp, leeway, now)?;
        check_not_before(self.nbf, leeway, now)?;
        check_not_before(self.iat, leeway, now)
    }
}

fn leeway(leeway_secs: u64) -> i64 {
    i64::try_from(leeway_secs).unwrap_or(i64::MAX)
}

fn check_expiry(exp: i64, leeway: i64, now: i64) -> Result<(), TokenError> {
    if now > exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// `nbf` or `iat`: refused while it lies beyond `now` plus the leeway.
fn check_not_before(not_before: Option<i64>, leeway: i64, now: i64) -> Result<(), TokenError> {
    if let Some(t) = not_before
        && now.saturating_add(leeway) < t
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// An RFC 7519 NumericDate: seconds, possibly fractional (floored); `None` when absent.
fn numeric_date(v: Option<&Value>) -> Result<Option<i64>, TokenError> {
    let Some(v) = v else { return Ok(None) };
    let Value::Number(n) = v else {
        return Err(TokenError::Malformed);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    if n.as_u64().is_some() {
        return Ok(Some(i64::MAX));
    }
    match n.as_f64() {
        // `as` saturates at the i64 bounds
        Some(f) if f.is_finite() => Ok(Some(f.floor() as i64)),
        _ => Err(TokenError::Malformed),
    }
}

fn required_str(claims: &Map<String, Value>, name: &str) -> Result<String, TokenError> {
    optional_str(claims, name)?.ok_or(TokenError::MissingClaim)
}

fn optional_str(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::Malformed),
    }
}

/// A string or an array of strings, as a list; `None` when absent.
fn string_or_array(v: Option<&Value>) -> Result<Option<Vec<String>>, TokenError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or(TokenError::Malformed))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(TokenError::Malformed),
    }
}

fn roles_at(claims: &Map<String, Value>, path: &str) -> Result<Vec<String>, TokenError> {
    Ok(string_or_array(lookup(claims, path))?.unwrap_or_default())
}

fn push_unique(into: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    let mut seen: HashSet<String> = into.iter().cloned().collect();
    for item in items {
        if !item.is_empty() && seen.insert(item.clone()) {
            into.push(item);
        }
    }
}
