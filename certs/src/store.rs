//! The immutable certificate store: validated keys indexed by hostname.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
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
    /// The leaf's `notBefore`, in Unix seconds.
    pub not_before_unix: i64,
    /// The leaf's `notAfter`, in Unix seconds.
    pub not_after_unix: i64,
    /// Lowercase hex SHA-256 of the leaf certificate's DER.
    pub sha256_fingerprint: String,
}

impl CertSummary {
    /// Whether `now` (Unix seconds) lies outside the leaf's validity window.
    pub fn out_of_window(&self, now: i64) -> bool {
        now > self.not_after_unix || now < self.not_before_unix
    }
}

/// How a certificate outside its validity window is treated when a store is built.
///
/// Time is the one problem a certificate can acquire after it was accepted: refusing
/// a whole store for it would take every tenant down with the one whose certificate
/// lapsed. Everything else (bad PEM, key mismatch, names not covered) is always refused.
#[derive(Debug, Clone, Copy)]
pub enum Expiry<'a> {
    /// Refuse it: for certificates being introduced (an upload).
    Refuse,
    /// Serve it for its names, as nginx and Envoy do: its clients see the expiry.
    Serve,
    /// Serve it when its leaf's SHA-256 fingerprint is in the set (it was already
    /// serving), refuse it otherwise: for a reload that may also introduce new ones.
    ServeKnown(&'a HashSet<String>),
}

impl Expiry<'_> {
    pub(crate) fn tolerates(&self, fingerprint: &str) -> bool {
        match self {
            Expiry::Refuse => false,
            Expiry::Serve => true,
            Expiry::ServeKnown(known) => known.contains(fingerprint),
        }
    }
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
    /// Validates every source and indexes them; fails as a whole on the first bad
    /// source, an expired one included.
    ///
    /// Two sources claiming the same name (exact or identical wildcard) is an error.
    pub fn build(sources: &[CertSource]) -> Result<CertStore, CertError> {
        CertStore::build_with(sources, Expiry::Refuse)
    }

    /// Like [`CertStore::build`], with certificates outside their validity window
    /// treated as `expiry` says.
    pub fn build_with(sources: &[CertSource], expiry: Expiry<'_>) -> Result<CertStore, CertError> {
        let mut store = CertStore::empty();
        match store.index(sources, expiry, false).into_iter().next() {
            Some(err) => Err(err),
            None => Ok(store),
        }
    }

    /// Builds what can be built: a bad source (or one claiming a name an earlier
    /// source holds) is left out and reported, the others are served; expired ones
    /// are served. For configs whose certificates were each validated on upload.
    pub fn build_isolated(sources: &[CertSource]) -> (CertStore, Vec<CertError>) {
        let mut store = CertStore::empty();
        let errors = store.index(sources, Expiry::Serve, true);
        (store, errors)
    }

    /// Loads and indexes `sources`; stops at the first error unless `skip_bad`.
    fn index(
        &mut self,
        sources: &[CertSource],
        expiry: Expiry<'_>,
        skip_bad: bool,
    ) -> Vec<CertError> {
        let now = clock::now_unix();
        let mut errors = Vec::new();
        let mut owner: HashMap<String, usize> = HashMap::new();
        for (index, source) in sources.iter().enumerate() {
            let loaded = match source.load(index, now, expiry) {
                Ok(l) => l,
                Err(e) => {
                    errors.push(e);
                    if skip_bad {
                        continue;
                    }
                    return errors;
                }
            };
            if let Some(name) = loaded.names.iter().find(|n| owner.contains_key(*n)) {
                errors.push(CertError::DuplicateName {
                    name: name.clone(),
                    first: owner
                        .get(name)
                        .and_then(|i| self.summaries.get(*i))
                        .map(|s| label(&s.names))
                        .unwrap_or_default(),
                    second: label(&loaded.names),
                });
                if skip_bad {
                    continue;
                }
                return errors;
            }
            for name in &loaded.names {
                if let Entry::Vacant(slot) = owner.entry(name.clone()) {
                    slot.insert(self.summaries.len());
                }
                let key = Arc::clone(&loaded.key);
                match names::wildcard_parent(name) {
                    Some(parent) => self.wildcard.insert(parent.to_owned(), key),
                    None => self.exact.insert(name.clone(), key),
                };
            }
            self.summaries.push(loaded.summary);
        }
        errors
    }

    /// The leaf fingerprints of every certificate in the store.
    pub fn fingerprints(&self) -> HashSet<String> {
        self.summaries
            .iter()
            .map(|s| s.sha256_fingerprint.clone())
            .collect()
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

    /// The summaries without copying them.
    pub fn summary_list(&self) -> &[CertSummary] {
        &self.summaries
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
