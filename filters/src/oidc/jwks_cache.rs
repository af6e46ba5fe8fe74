//! One issuer's keys: fetched in the background, cached, refetched on unknown `kid`s
//! behind a rate limit, kept when the provider is down, absent (fail closed) until the
//! first fetch succeeds. Tokens that verified are remembered (by digest) until their
//! `exp` or the next change of the key set.

use super::claims::{Validity, VerifiedToken};
use super::error::TokenError;
use super::fetch::Fetcher;
use super::jwk::JwkSet;
use super::jws::MAX_TOKEN_LEN;
use super::verify::{names_key, precheck, verify};
use arc_swap::ArcSwapOption;
use http::Uri;
use moka::Expiry;
use moka::sync::Cache;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;
use tollgate_routing::OidcIssuerSpec;

/// First retry delay after a failed refresh; doubles up to `jwks_refresh_secs`.
const RETRY_START: Duration = Duration::from_secs(1);

/// Most verified tokens remembered per issuer; the least used go first.
pub const VERIFIED_CACHE_CAPACITY: u64 = 10_000;

/// Longest a verified token is remembered, however far off its `exp`.
const VERIFIED_CACHE_MAX_TTL: Duration = Duration::from_secs(3600);

/// SHA-256 of a token: the verified-token cache never holds tokens themselves.
pub type TokenDigest = [u8; 32];

/// The digest a token is cached under; `None` for a token too long to ever verify.
pub(crate) fn token_digest(token: &str) -> Option<TokenDigest> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().ok()
}

/// A key set and its generation, which changes whenever the set does.
struct Loaded {
    set: Arc<JwkSet>,
    generation: u64,
}

/// A token that verified against the keys of `generation`.
#[derive(Clone)]
struct Verified {
    token: Arc<VerifiedToken>,
    validity: Validity,
    generation: u64,
    /// Until `exp`, counted from the `now` it was verified at.
    ttl: Duration,
}

/// Entries live for their own `ttl`.
struct UntilExpiry;

impl Expiry<TokenDigest, Verified> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &TokenDigest,
        value: &Verified,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &TokenDigest,
        value: &Verified,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The keys of one OIDC issuer and the machinery that keeps them fresh.
pub struct IssuerKeys {
    spec: OidcIssuerSpec,
    fetcher: Fetcher,
    keys: ArcSwapOption<Loaded>,
    /// Tokens verified against `keys`, by digest. Only successes: a refusal is always
    /// decided afresh (a refused token can become good once the keys change).
    verified: Cache<TokenDigest, Verified>,
    hits: AtomicU64,
    misses: AtomicU64,
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
            verified: Cache::builder()
                .max_capacity(VERIFIED_CACHE_CAPACITY)
                .expire_after(UntilExpiry)
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
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
    ///
    /// A token that verified before against the current key set is not verified again:
    /// only its `exp`, `nbf` and `iat` are checked against `now_unix` (same leeway).
    pub async fn verify(
        &self,
        token: &str,
        now_unix: i64,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        let digest = token_digest(token);
        if let Some(digest) = &digest
            && let Some(hit) = self.cached(digest, now_unix)
        {
            return hit;
        }
        self.verify_uncached(token, digest, now_unix).await
    }

    /// The verdict on a token remembered under `digest`, if it verified against the
    /// current key set: `Ok` while its times hold at `now_unix`, `Expired` or
    /// `NotYetValid` otherwise. `None` when it must be verified in full.
    pub(crate) fn cached(
        &self,
        digest: &TokenDigest,
        now_unix: i64,
    ) -> Option<Result<Arc<VerifiedToken>, TokenError>> {
        let entry = self.verified.get(digest)?;
        let current = self.keys.load();
        if current.as_ref().map(|k| k.generation) != Some(entry.generation) {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(
            entry
                .validity
                .check(self.spec.leeway_secs, now_unix)
                .map(|()| entry.token),
        )
    }

    /// Verifies `token` in full (signature and claims) and remembers it when it holds.
    pub(crate) async fn verify_uncached(
        &self,
        token: &str,
        digest: Option<TokenDigest>,
        now_unix: i64,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let before = self.keys.load_full();
        if let Some(keys) = &before {
            match verify(token, &self.spec, &keys.set, now_unix) {
                Err(TokenError::UnknownKey) if names_key(token) => {}
                other => return self.remember(digest, keys.generation, other, now_unix),
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
            Some(keys) => {
                let verdict = verify(token, &self.spec, &keys.set, now_unix);
                self.remember(digest, keys.generation, verdict, now_unix)
            }
            None => Err(TokenError::NoKeys),
        }
    }

    /// Caches a success against the key set it was checked with, until its `exp`
    /// (counted from `now_unix`); failures pass through uncached.
    fn remember(
        &self,
        digest: Option<TokenDigest>,
        generation: u64,
        verdict: Result<VerifiedToken, TokenError>,
        now_unix: i64,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        let token = Arc::new(verdict?);
        if let Some(digest) = digest
            && let Ok(validity) = Validity::of(&token.claims)
        {
            let left = u64::try_from(validity.exp.saturating_sub(now_unix)).unwrap_or(0);
            let ttl = Duration::from_secs(left).min(VERIFIED_CACHE_MAX_TTL);
            if !ttl.is_zero() {
                self.verified.insert(
                    digest,
                    Verified {
                        token: token.clone(),
                        validity,
                        generation,
                        ttl,
                    },
                );
            }
        }
        Ok(token)
    }

    /// How many verifications the verified-token cache answered.
    pub fn cache_hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// How many verifications checked a signature (or failed before one could be).
    pub fn cache_misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// How many verified tokens are remembered (approximate: evictions are lazy).
    pub fn cached_tokens(&self) -> u64 {
        self.verified.run_pending_tasks();
        self.verified.entry_count()
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
        self.keys.load().as_ref().map_or(0, |k| k.set.len())
    }

    /// The cached keys, if any were fetched.
    pub fn keys(&self) -> Option<Arc<JwkSet>> {
        self.keys.load().as_ref().map(|k| k.set.clone())
    }

    /// Stores a fetched key set. When it differs from the current one (a key added,
    /// changed or removed) it starts a new generation, and every token verified
    /// against the old set must be verified again.
    fn store(&self, set: JwkSet) {
        let current = self.keys.load_full();
        let generation = match &current {
            Some(k) if *k.set == set => k.generation,
            Some(k) => k.generation + 1,
            None => 0,
        };
        self.keys.store(Some(Arc::new(Loaded {
            set: Arc::new(set),
            generation,
        })));
        if current.is_some_and(|k| k.generation != generation) {
            // entries of the old generation are already dead; this frees them
            self.verified.invalidate_all();
        }
    }

    /// Fetches keys unless `trigger` is rate limited or another fetch replaced `seen`
    /// while this one waited; true when new keys were stored.
    async fn refetch(&self, trigger: Trigger, seen: Option<&Arc<Loaded>>) -> bool {
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
                self.store(set);
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
