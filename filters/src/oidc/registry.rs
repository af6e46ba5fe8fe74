//! Every configured issuer, found by a token's `iss`; rebuilt on config reload while
//! keeping the key caches of unchanged issuers.

use super::claims::VerifiedToken;
use super::error::TokenError;
use super::jwks_cache::{IssuerKeys, TokenDigest, token_digest};
use super::verify::peek_issuer;
use std::collections::HashMap;
use std::sync::Arc;
use tollgate_routing::OidcIssuerSpec;

/// The issuers of one config, by exact `iss` value.
#[derive(Debug, Default, Clone)]
pub struct IssuerRegistry {
    by_issuer: HashMap<String, Arc<IssuerKeys>>,
    /// Policy name → the same issuers.
    names: HashMap<String, Arc<IssuerKeys>>,
}

impl IssuerRegistry {
    /// No issuers: every token is refused with `UnknownIssuer`.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The registry for `specs`. An issuer whose spec equals the one in `previous` keeps
    /// its `IssuerKeys` (cached keys, refresh loop); new or changed issuers get fresh
    /// ones. Every refresh loop is started here (on the current tokio runtime, if any;
    /// see [`IssuerKeys::start`]); issuers left out of `specs` stop when the previous
    /// registry is dropped.
    /// `InvalidConfig` for a duplicate name or `iss`, or a spec `IssuerKeys` refuses.
    pub fn build(
        specs: &[OidcIssuerSpec],
        previous: Option<&IssuerRegistry>,
    ) -> Result<IssuerRegistry, TokenError> {
        let mut registry = IssuerRegistry::empty();
        for spec in specs {
            if registry.by_issuer.contains_key(&spec.issuer)
                || registry.names.contains_key(&spec.name)
            {
                tracing::error!(issuer = %spec.issuer, name = %spec.name, "OIDC issuer configured twice");
                return Err(TokenError::InvalidConfig);
            }
            let reused = previous
                .and_then(|p| p.by_issuer.get(&spec.issuer))
                .filter(|keys| keys.spec() == spec)
                .cloned();
            let keys = match reused {
                Some(keys) => keys,
                None => IssuerKeys::new(spec.clone())?,
            };
            // no-op when already running (reused), starts new ones
            keys.start();
            registry.names.insert(spec.name.clone(), keys.clone());
            registry.by_issuer.insert(spec.issuer.clone(), keys);
        }
        Ok(registry)
    }

    /// Verifies `token` with the issuer its `iss` names, which must be one of
    /// `allowed_issuer_names` (the route's policy); `UnknownIssuer` otherwise.
    ///
    /// A token already verified by one of the allowed issuers (against its current
    /// keys) is answered from that issuer's cache without being parsed: only its times
    /// are checked again. A token is cached by the issuer its `iss` names, whatever the
    /// route, so a route that does not allow that issuer never finds it there and
    /// refuses it as before.
    pub async fn verify(
        &self,
        token: &str,
        allowed_issuer_names: &[String],
        now_unix: i64,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        let digest = token_digest(token);
        if let Some(hit) = digest
            .as_ref()
            .and_then(|d| self.cached(d, allowed_issuer_names, now_unix))
        {
            return hit;
        }
        self.verify_uncached(token, digest, allowed_issuer_names, now_unix)
            .await
    }

    /// The verdict on the token whose SHA-256 is `digest` when one of the
    /// allowed issuers verified it against its current keys (its times checked again at
    /// `now_unix`); `None` when it must be verified in full.
    pub fn cached(
        &self,
        digest: &TokenDigest,
        allowed_issuer_names: &[String],
        now_unix: i64,
    ) -> Option<Result<Arc<VerifiedToken>, TokenError>> {
        allowed_issuer_names
            .iter()
            .filter_map(|name| self.names.get(name))
            .find_map(|keys| keys.cached(digest, now_unix))
    }

    /// The rest of [`verify`](Self::verify) after [`cached`](Self::cached) found
    /// nothing: `digest` is the token's SHA-256 (`None` for a token over
    /// [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN)), under which it is remembered when it
    /// verifies.
    pub async fn verify_uncached(
        &self,
        token: &str,
        digest: Option<TokenDigest>,
        allowed_issuer_names: &[String],
        now_unix: i64,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        let iss = peek_issuer(token)?;
        let keys = self.by_issuer.get(&iss).ok_or(TokenError::UnknownIssuer)?;
        if !allowed_issuer_names.contains(&keys.spec().name) {
            return Err(TokenError::UnknownIssuer);
        }
        keys.verify_uncached(token, digest, now_unix).await
    }

    /// The issuer a policy calls `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<IssuerKeys>> {
        self.names.get(name)
    }

    /// The issuer whose `iss` is `issuer`.
    pub fn by_issuer(&self, issuer: &str) -> Option<&Arc<IssuerKeys>> {
        self.by_issuer.get(issuer)
    }

    /// All issuers, in no particular order.
    pub fn issuers(&self) -> impl Iterator<Item = &Arc<IssuerKeys>> {
        self.by_issuer.values()
    }

    pub fn len(&self) -> usize {
        self.by_issuer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_issuer.is_empty()
    }
}
