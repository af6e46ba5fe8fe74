//! The service's ACME account: created once per CA directory and kept in the event
//! log (aggregate `acme_account/<digest of the directory URL>`, event
//! `acme_account_registered`), so every control replica and every restart use the
//! same account. Proxies never see it: it is not an edge event, and its
//! credentials (the account's private key) are sealed at rest by the store.

use super::options::AcmeOptions;
use crate::store::{AnyStore, EventStore, NewEvent, StoreError};
use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use std::sync::Arc;

const KIND: &str = "acme_account";
const EVENT: &str = "acme_account_registered";
/// Environment variable for the EAB HMAC key (base64url).
pub const EAB_HMAC_ENV: &str = "TOLLGATE_ACME_EAB_HMAC";

fn aggregate_id(directory: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, directory.as_bytes());
    d.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn builder(opts: &AcmeOptions) -> Result<instant_acme::AccountBuilder, String> {
    match &opts.ca_root {
        Some(path) => Account::builder_with_root(path)
            .map_err(|e| format!("loading the ACME CA root {}: {e}", path.display())),
        None => Account::builder().map_err(|e| format!("building the ACME client: {e}")),
    }
}

fn eab(opts: &AcmeOptions) -> Result<Option<ExternalAccountKey>, String> {
    let Some(kid) = &opts.eab_kid else {
        return Ok(None);
    };
    let hmac = match &opts.eab_hmac {
        Some(h) => h.clone(),
        None => std::env::var(EAB_HMAC_ENV)
            .map_err(|_| format!("--acme-eab-kid needs an HMAC key: set {EAB_HMAC_ENV}"))?,
    };
    use base64::Engine as _;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(hmac.trim().trim_end_matches('='))
        .map_err(|e| format!("the EAB HMAC key is not base64url: {e}"))?;
    Ok(Some(ExternalAccountKey::new(kid.clone(), &key)))
}

/// Loads the account for `opts.directory` from the log, or registers one with the
/// CA and records it. A replica that loses the race to record it uses the winner's.
pub async fn load_or_create(store: &Arc<AnyStore>, opts: &AcmeOptions) -> Result<Account, String> {
    let directory = opts
        .directory
        .clone()
        .ok_or("no ACME directory configured")?;
    let id = aggregate_id(&directory);
    for _ in 0..3 {
        let events = store
            .read_aggregate(KIND, &id)
            .await
            .map_err(|e| format!("reading the ACME account: {e}"))?;
        if let Some(e) = events.iter().rev().find(|e| e.event_type == EVENT) {
            let text = e
                .payload
                .get("account_credentials")
                .and_then(|v| v.as_str())
                .ok_or("the recorded ACME account has no credentials")?;
            let creds: AccountCredentials = serde_json::from_str(text)
                .map_err(|e| format!("the recorded ACME account does not parse: {e}"))?;
            return builder(opts)?
                .from_credentials(creds)
                .await
                .map_err(|e| format!("restoring the ACME account: {e}"));
        }
        let contact: Vec<&str> = opts.contact.iter().map(String::as_str).collect();
        let (account, creds) = builder(opts)?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                eab(opts)?.as_ref(),
            )
            .await
            .map_err(|e| format!("registering an ACME account at {directory}: {e}"))?;
        let text =
            serde_json::to_string(&creds).map_err(|e| format!("encoding the ACME account: {e}"))?;
        let payload = serde_json::json!({
            "directory_url": directory,
            "account_id": account.id(),
            "account_credentials": text,
        });
        match store
            .append(
                KIND,
                &id,
                events.len() as i64,
                "acme",
                vec![NewEvent::new(EVENT, payload)],
            )
            .await
        {
            Ok(_) => {
                tracing::info!(account = account.id(), %directory, "ACME account registered");
                return Ok(account);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(format!("recording the ACME account: {e}")),
        }
    }
    Err("could not record the ACME account (conflicting writers)".into())
}
