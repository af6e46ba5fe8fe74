//! API key commands (aggregate `api_key/<key_id>`): create and revoke.
//!
//! The key is generated here with [`tollgate_filters::apikey::generate`]
//! (`{sk|pk}_{live|test}_{appprefix}_{32 base62}`); the answer to the create
//! command is the only place the whole key ever appears. The event, and so the log,
//! the projection and every proxy, holds only its SHA-256. Revocation removes the
//! record, so proxies refuse the key as soon as they apply the event.

use super::{CommandError, Commands, Ctx, Plan, Target, Written, check_id, now_unix};
use crate::ids;
use serde::{Deserialize, Serialize};
use tollgate_filters::apikey::{self, APP_PREFIX_MAX};
use tollgate_routing::{ApiKeySpec, EdgeEvent, KeyKind};

const KIND: &str = "api_key";

/// `POST /api/v1/apps/{app}/keys`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Generated (`k_…`) when absent.
    #[serde(default)]
    pub key_id: Option<String>,
    /// `secret` (default) or `public`.
    #[serde(default = "secret")]
    pub kind: KeyKind,
    /// `live` (default) or `test` keys.
    #[serde(default = "yes")]
    pub live: bool,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Unix seconds from which the key is refused.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Public keys: exact `scheme://host[:port]` origins allowed to use it.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

fn secret() -> KeyKind {
    KeyKind::Secret
}
fn yes() -> bool {
    true
}

/// The answer to a create: the record plus the key, shown this once.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct CreatedKey {
    /// The whole key. Not stored anywhere: lost if not copied now.
    pub key: String,
    #[serde(flatten)]
    pub record: ApiKeySpec,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &"<redacted>")
            .field("record", &self.record)
            .finish()
    }
}

/// The human label in the key: the app id's lowercase letters and digits, at most
/// 12 (`app` when none are left).
fn app_prefix(app: &str) -> String {
    let p: String = app
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(APP_PREFIX_MAX)
        .collect();
    if p.is_empty() { "app".into() } else { p }
}

impl Commands {
    /// Creates a key for `app`; the answer carries the key itself.
    pub async fn create_key(
        &self,
        ctx: &Ctx,
        app: &str,
        req: CreateKey,
    ) -> Result<Written<CreatedKey>, CommandError> {
        let key_id = match &req.key_id {
            Some(id) => {
                check_id("key id", id)?;
                id.clone()
            }
            None => ids::generate("k_")?,
        };
        if req.kind == KeyKind::Public && req.allowed_origins.is_empty() {
            return Err(CommandError::invalid(
                "a public key needs at least one allowed origin",
            ));
        }
        if let Some(exp) = req.expires_at
            && exp <= now_unix()
        {
            return Err(CommandError::invalid("expires_at is in the past"));
        }
        if req.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err(CommandError::BadRequest(
                "scopes must be non-empty and contain no spaces".into(),
            ));
        }
        let (key, sha256) = apikey::generate(req.kind, req.live, &app_prefix(app))
            .map_err(|e| CommandError::Store(format!("generating the key: {e:?}")))?;
        let record = ApiKeySpec {
            key_id: key_id.clone(),
            app: app.to_string(),
            kind: req.kind,
            sha256,
            scopes: req.scopes,
            expires_at: req.expires_at,
            allowed_origins: req.allowed_origins,
        };
        // The one record's own checks: building a store for it would cost a store.
        if apikey::check_record(&record).is_err() {
            return Err(CommandError::invalid(
                "allowed_origins must be exact scheme://host[:port] origins",
            ));
        }
        let target = Target::with_id(KIND, &key_id, req.key_id.is_none());
        self.execute(ctx, target, |config| {
            let Some(a) = config.apps.get(app) else {
                return Err(CommandError::NotFound(format!("no app `{app}`")));
            };
            if a.deleting_until.is_some() {
                return Err(CommandError::Conflict(format!(
                    "app `{app}` is being deleted"
                )));
            }
            if config.api_keys.contains_key(&key_id) {
                return Err(CommandError::Conflict(format!(
                    "key `{key_id}` already exists"
                )));
            }
            Ok(Plan::new(
                vec![EdgeEvent::ApiKeyCreated {
                    key: record.clone(),
                }],
                CreatedKey { key, record },
            ))
        })
        .await
    }

    /// Revokes a key; answers with its record as it was.
    pub async fn revoke_key(
        &self,
        ctx: &Ctx,
        key_id: &str,
    ) -> Result<Written<ApiKeySpec>, CommandError> {
        self.execute(ctx, Target::new(KIND, key_id), |config| {
            let record = config
                .api_keys
                .get(key_id)
                .map(|k| ApiKeySpec::clone(k))
                .ok_or_else(|| CommandError::NotFound(format!("no key `{key_id}`")))?;
            Ok(Plan::new(
                vec![EdgeEvent::ApiKeyRevoked {
                    key_id: key_id.to_string(),
                }],
                record,
            ))
        })
        .await
    }
}
