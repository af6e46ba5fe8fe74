//! One issuer's keys: fetched in the background, cached, refetched on unknown `kid`s
//! behind a rate limit, kept when the provider is down, absent (fail closed) until the
//! first fetch succeeds.

use super::claims::VerifiedToken;
use super::error::TokenError;
use super::fetch::Fetcher;
use super::jwk::JwkSet;
use super::verify::{names_key, precheck, verify};
use arc_swap::ArcSwapOption;
use http::Uri;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;
use tollgate_routing::OidcIssuerSpec;

/// First retry delay after a failed refresh; doubles up to `jwks_refresh_secs`.
const RETRY_START: Duration = Duration::from_secs(1);

/// The keys of one OIDC issuer and the machinery that keeps them fresh.
pub struct IssuerKeys {
    spec: OidcIssuerSpec,
    fetcher: Fetcher,
    keys: ArcSwapOption<JwkSet>,
    /// Held for the whole of a fetch: one fetch at a time per issuer.
    fetch: tokio::sync::Mutex<FetchState>,
    refresher: Mutex<Option<AbortHandle>>,
}

#[derive(Default)]
struct FetchState {
    /// When the last fetch (of any kind) started; paces on-demand refetches.
    last_attempt: Option<Instant>,
    /// From discovery; forgotten when a JWKS fetch fails, so the next one rediscovers.
    jwks_uri: Option<Uri>,
}

/// What asked for a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The refresh loop or an explicit [`IssuerKeys::refresh`]: always fetches.
    Scheduled,
    /// A token with a `kid` we lack: at most once per `min_refetch_secs`.
    UnknownKey,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("name", &self.spec.name)
            .field("issuer", &self.spec.issuer)
            .field("keys", &self.key_count())
            .finish()
    }
}

impl IssuerKeys {
    /// Keys for `spec`, none fetched yet; `InvalidConfig` for a URL that is not https
    /// (or http on loopback) or an unusable `ca_file`. Call [`IssuerKeys::start`].
    pub fn new(spec: OidcIssuerSpec) -> Result<Arc<Self>, TokenError> {
        let fetcher = Fetcher::new(&spec)?;
        Ok(Arc::new(IssuerKeys {
            spec,
            fetcher,
            keys: ArcSwapOption::empty(),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            refresher: Mutex::new(None),
        }))
    }

    /// Spawns the refresh loop on the current tokio runtime: a first fetch now, then one
    /// every `jwks_refresh_secs` (sooner, with backoff, after a failure). The loop holds
    /// only a `Weak` and stops when the `IssuerKeys` is dropped. Idempotent; without a
    /// runtime it logs and does nothing (on-demand fetches still happen).
    pub fn start(self: &Arc<Self>) {
        let mut slot = self.refresher.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(issuer = %self.spec.issuer, "no tokio runtime: JWKS refresh not started");
            return;
        };
        let task = runtime.spawn(refresh_loop(Arc::downgrade(self)));
        *slot = Some(task.abort_handle());
    }

    /// Verifies `token` with the cached keys. A token naming an unknown `kid` (after
    /// key rotation) triggers one refetch, at most once per `min_refetch_secs` for the
    /// issuer, then a second try. `NoKeys` when no keys were ever fetched.
    pub async fn verify(&self, token: &str, now_unix: i64) -> Result<VerifiedToken, TokenError> {
        let before = self.keys.load_full();
        if let Some(keys) = &before {
            match verify(token, &self.spec, keys, now_unix) {
                Err(TokenError::UnknownKey) if names_key(token) => {}
                other => return other,
            }
        }
        // Only a well-formed, current token of this issuer is worth a fetch.
        precheck(token, &self.spec, now_unix).map_err(|e| {
            if before.is_some() {
                TokenError::UnknownKey
            } else {
                e
            }
        })?;
        self.refetch(Trigger::UnknownKey, before.as_ref()).await;
        match self.keys.load_full() {
            Some(keys) => verify(token, &self.spec, &keys, now_unix),
            None => Err(TokenError::NoKeys),
        }
    }

    /// Fetches discovery and JWKS now, whatever the rate limit (admin and tests).
    /// The number of keys, or `ProviderUnavailable` (the previous keys are kept).
    pub async fn refresh(&self) -> Result<usize, TokenError> {
        let current = self.keys.load_full();
        if self.refetch(Trigger::Scheduled, current.as_ref()).await {
            Ok(self.key_count())
        } else {
            Err(TokenError::ProviderUnavailable)
        }
    }

    pub fn spec(&self) -> &OidcIssuerSpec {
        &self.spec
    }

    /// Number of cached keys; 0 until the first successful fetch.
    pub fn key_count(&self) -> usize {
        self.keys.load().as_ref().map_or(0, |k| k.len())
    }

    /// The cached keys, if any were fetched.
    pub fn keys(&self) -> Option<Arc<JwkSet>> {
        self.keys.load_full()
    }

    /// Fetches keys unless `trigger` is rate limited or another fetch replaced `seen`
    /// while this one waited; true when new keys were stored.
    async fn refetch(&self, trigger: Trigger, seen: Option<&Arc<JwkSet>>) -> bool {
        let mut state = self.fetch.lock().await;
        if trigger == Trigger::UnknownKey {
            let current = self.keys.load_full();
            let replaced = match (seen, &current) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                (None, Some(_)) => true,
                _ => false,
            };
            if replaced {
                return false;
            }
            let pace = Duration::from_secs(self.spec.min_refetch_secs);
            if state.last_attempt.is_some_and(|t| t.elapsed() < pace) {
                tracing::debug!(issuer = %self.spec.issuer, "unknown kid: refetch rate limited");
                return false;
            }
        }
        state.last_attempt = Some(Instant::now());
        let uri = match state.jwks_uri.clone() {
            Some(uri) => uri,
            None => match self.fetcher.discover().await {
                Ok(uri) => {
                    state.jwks_uri = Some(uri.clone());
                    uri
                }
                Err(e) => {
                    self.log_failure(&e);
                    return false;
                }
            },
        };
        match self.fetcher.jwks(&uri).await {
            Ok(set) => {
                tracing::info!(
                    issuer = %self.spec.issuer,
                    keys = set.len(),
                    kids = ?set.kids(),
                    ?trigger,
                    "JWKS fetched"
                );
                self.keys.store(Some(Arc::new(set)));
                true
            }
            Err(e) => {
                state.jwks_uri = None;
                self.log_failure(&e);
                false
            }
        }
    }

    fn log_failure(&self, e: &super::fetch::FetchError) {
        let cached = self.key_count();
        tracing::warn!(
            issuer = %self.spec.issuer,
            error = %e,
            cached_keys = cached,
            "JWKS fetch failed; {}",
            if cached > 0 { "keeping the previous keys" } else { "no keys: tokens are refused" }
        );
    }
}

impl Drop for IssuerKeys {
    fn drop(&mut self) {
        if let Some(task) = self
            .refresher
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

async fn refresh_loop(weak: Weak<IssuerKeys>) {
    let mut retry = RETRY_START;
    loop {
        let wait = {
            let Some(keys) = weak.upgrade() else { return };
            let every = Duration::from_secs(keys.spec.jwks_refresh_secs.max(1));
            let current = keys.keys.load_full();
            if keys.refetch(Trigger::Scheduled, current.as_ref()).await {
                retry = RETRY_START;
                every
            } else {
                let wait = retry.min(every);
                retry = (retry * 2).min(every);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}
