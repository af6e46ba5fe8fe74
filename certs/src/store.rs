//! The immutable certificate store: validated keys indexed by hostname.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::error::{CertError, label};
use crate::source::CertSource;
use crate::{clock, names};

/// What an admin view shows about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Names the certificate is served for (normalised; wildcards as `*.parent`).
    pub names: Vec<String>,
    /// The leaf's `notAfter`, in Unix seconds.
    pub not_after_unix: i64,
    /// Lowercase hex SHA-256 of the leaf certificate's DER.
    pub sha256_fingerprint: String,
}

/// Validated certificates indexed by exact name and by wildcard parent.
///
/// Immutable once built; replace it wholesale through
/// [`CertResolver::swap`](crate::CertResolver::swap).
#[derive(Clone, Default)]
pub struct CertStore {
    summaries: Vec<CertSummary>,
    /// Exact names, e.g. `a.example`.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Wildcards keyed by parent: `*.t.example` is stored under `t.example`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Served when the client sends no SNI.
    default: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Validates every source and indexes them; fails as a whole on the first bad source.
    ///
    /// Two sources claiming the same name (exact or identical wildcard) is an error.
    pub fn build(sources: &[CertSource]) -> Result<CertStore, CertError> {
        let now = clock::now_unix();
        let mut store = CertStore::empty();
        let mut owner: HashMap<String, usize> = HashMap::new();
        for (index, source) in sources.iter().enumerate() {
            let loaded = source.load(index, now)?;
            for name in &loaded.names {
                match owner.entry(name.clone()) {
                    Entry::Occupied(first) => {
                        return Err(CertError::DuplicateName {
                            name: name.clone(),
                            first: store
                                .summaries
                                .get(*first.get())
                                .map(|s| label(&s.names))
                                .unwrap_or_default(),
                            second: label(&loaded.names),
                        });
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(store.summaries.len());
                    }
                }
                let key = Arc::clone(&loaded.key);
                match names::wildcard_parent(name) {
                    Some(parent) => store.wildcard.insert(parent.to_owned(), key),
                    None => store.exact.insert(name.clone(), key),
                };
            }
            store.summaries.push(loaded.summary);
        }
        Ok(store)
    }

    /// A store with no certificates; every lookup misses.
    pub fn empty() -> CertStore {
        CertStore::default()
    }

    /// Sets the certificate served to clients that send no SNI: the one that
    /// would be served for `name`. Errors if no certificate covers `name`.
    pub fn with_default(mut self, name: &str) -> Result<CertStore, CertError> {
        let key = names::normalize(name)
            .and_then(|n| self.lookup(&n).cloned())
            .ok_or_else(|| CertError::DefaultNotCovered(name.to_owned()))?;
        self.default = Some(key);
        Ok(self)
    }

    /// The certificate for an SNI value (case-insensitive, trailing dot ignored):
    /// exact name first, then a wildcard one label up. No SNI gives the default.
    pub fn resolve(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        match sni {
            Some(sni) => self.lookup(&names::sni_key(sni)).cloned(),
            None => self.default.clone(),
        }
    }

    fn lookup(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        if let Some(key) = self.exact.get(name) {
            return Some(key);
        }
        self.wildcard.get(names::parent_for_wildcard(name)?)
    }

    /// One summary per certificate, in the order the sources were given.
    pub fn summaries(&self) -> Vec<CertSummary> {
        self.summaries.clone()
    }

    /// Number of certificates (not names).
    pub fn len(&self) -> usize {
        self.summaries.len()
    }

    /// Whether the store holds no certificates.
    pub fn is_empty(&self) -> bool {
        self.summaries.is_empty()
    }

    /// Whether a default (no-SNI) certificate is set.
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field(
                "certs",
                &self.summaries.iter().map(|s| &s.names).collect::<Vec<_>>(),
            )
            .field("has_default", &self.default.is_some())
            .finish()
    }
}
