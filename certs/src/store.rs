//! The immutable certificate store: validated keys indexed by hostname.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use imbl::{HashMap, OrdMap};
use rustls::sign::CertifiedKey;

use crate::error::{CertError, label};
use crate::source::{CertSource, Loaded};
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

/// A certificate in the store: its served names, key and summary.
#[derive(Debug)]
struct Served {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
    summary: CertSummary,
}

/// A source left out: why, and for a name clash the certificate that would be served
/// once the name is free again.
#[derive(Debug, Clone)]
struct Refused {
    error: Arc<str>,
    waiting: Option<Arc<Served>>,
}

/// Validated certificates indexed by exact name and by wildcard parent.
///
/// Immutable once built; replace it wholesale through
/// [`CertResolver::swap`](crate::CertResolver::swap). Its maps are persistent: a
/// clone shares them, and [`CertStore::update`] copies only the paths it changes, so
/// updating one certificate costs the same with ten or ten thousand others.
#[derive(Clone, Default)]
pub struct CertStore {
    /// Served certificates by id (the source's position for a list, zero-padded, so
    /// that id order is list order).
    served: OrdMap<Arc<str>, Arc<Served>>,
    /// Exact names, e.g. `a.example`, with the id serving each.
    exact: HashMap<String, (Arc<str>, Arc<CertifiedKey>)>,
    /// Wildcards keyed by parent: `*.t.example` is stored under `t.example`.
    wildcard: HashMap<String, (Arc<str>, Arc<CertifiedKey>)>,
    /// Sources left out, by id.
    refused: OrdMap<Arc<str>, Refused>,
    /// Served when the client sends no SNI: the name asked for and its key.
    default: Option<(String, Arc<CertifiedKey>)>,
}

/// The id of the `index`-th source of a list: ids sort in list order.
fn list_id(index: usize) -> Arc<str> {
    format!("{index:010}").into()
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
        let now = clock::now_unix();
        let mut store = CertStore::empty();
        for (index, source) in sources.iter().enumerate() {
            let served = Arc::new(source.load(index, now, expiry).map(served)?);
            if let Some(err) = store.clash(&served) {
                return Err(err);
            }
            store.serve(list_id(index), served);
        }
        Ok(store)
    }

    /// Builds what can be built: a bad source (or one claiming a name an earlier
    /// source holds) is left out and reported, the others are served; expired ones
    /// are served. For configs whose certificates were each validated on upload.
    pub fn build_isolated(sources: &[CertSource]) -> (CertStore, Vec<CertError>) {
        let mut store = CertStore::empty();
        let mut errors = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            if let Some(e) = store.put(list_id(index), source, Some(index)) {
                errors.push(e);
            }
        }
        (store, errors)
    }

    /// This store with the certificates `changes` names by id replaced (`Some`) or
    /// removed (`None`), each loaded as [`CertStore::build_isolated`] would: a bad one
    /// is left out and reported by [`CertStore::refused`]. Only the changed
    /// certificates are loaded; the cost does not depend on how many others there are.
    ///
    /// A certificate claiming a name another one serves waits, refused, until that
    /// name is free: the one serving first keeps it.
    pub fn update<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a str, Option<&'a CertSource>)>,
    ) -> CertStore {
        let mut store = self.clone();
        let mut freed = Vec::new();
        for (id, source) in changes {
            if let Some(old) = store.unserve(id) {
                freed.extend(old.names.iter().cloned());
            }
            store.refused.remove(id);
            if let Some(source) = source {
                store.put(id.into(), source, None);
            }
        }
        store.retry_waiting(&freed);
        if let Some((name, _)) = &store.default {
            // The default follows the certificate now serving its name.
            let key = store.lookup(name).cloned();
            store.default = key.map(|k| (name.clone(), k));
        }
        store
    }

    /// Loads `source` as `id` and serves it, or records why not; returns that error.
    /// `index` is its position in a list; without one, errors name it by `id`.
    fn put(
        &mut self,
        id: Arc<str>,
        source: &CertSource,
        index: Option<usize>,
    ) -> Option<CertError> {
        let now = clock::now_unix();
        let served = match source.load(index.unwrap_or(0), now, Expiry::Serve) {
            Ok(l) => Arc::new(served(l)),
            Err(e) => {
                let e = match e {
                    CertError::Source { problem, .. }
                        if index.is_none() && source.names.is_none() =>
                    {
                        CertError::Source {
                            cert: format!("`{id}`"),
                            problem,
                        }
                    }
                    e => e,
                };
                self.refuse(id, &e, None);
                return Some(e);
            }
        };
        match self.clash(&served) {
            Some(e) => {
                self.refuse(id, &e, Some(served));
                Some(e)
            }
            None => {
                self.serve(id, served);
                None
            }
        }
    }

    fn refuse(&mut self, id: Arc<str>, error: &CertError, waiting: Option<Arc<Served>>) {
        let error = error.to_string().into();
        self.refused.insert(id, Refused { error, waiting });
    }

    /// The error for a certificate claiming a name another one serves, if it does.
    fn clash(&self, new: &Served) -> Option<CertError> {
        new.names.iter().find_map(|name| {
            let (id, _) = self.slot(name)?;
            Some(CertError::DuplicateName {
                name: name.clone(),
                first: self
                    .served
                    .get(id)
                    .map(|s| label(&s.names))
                    .unwrap_or_default(),
                second: label(&new.names),
            })
        })
    }

    /// Where `name` (normalised; wildcards as `*.parent`) is held, if it is.
    fn slot(&self, name: &str) -> Option<&(Arc<str>, Arc<CertifiedKey>)> {
        match names::wildcard_parent(name) {
            Some(parent) => self.wildcard.get(parent),
            None => self.exact.get(name),
        }
    }

    fn serve(&mut self, id: Arc<str>, served: Arc<Served>) {
        for name in &served.names {
            let slot = (id.clone(), Arc::clone(&served.key));
            match names::wildcard_parent(name) {
                Some(parent) => self.wildcard.insert(parent.to_owned(), slot),
                None => self.exact.insert(name.clone(), slot),
            };
        }
        self.served.insert(id, served);
    }

    /// Stops serving `id`; returns what it served.
    fn unserve(&mut self, id: &str) -> Option<Arc<Served>> {
        let old = self.served.remove(id)?;
        for name in &old.names {
            match names::wildcard_parent(name) {
                Some(parent) => self.wildcard.remove(parent),
                None => self.exact.remove(name),
            };
        }
        Some(old)
    }

    /// Serves, in id order, the refused certificates that were waiting for one of
    /// `freed` and no longer clash.
    fn retry_waiting(&mut self, freed: &[String]) {
        if freed.is_empty() {
            return;
        }
        let candidates: Vec<(Arc<str>, Arc<Served>)> = self
            .refused
            .iter()
            .filter_map(|(id, r)| Some((id.clone(), r.waiting.clone()?)))
            .filter(|(_, w)| w.names.iter().any(|n| freed.contains(n)))
            .collect();
        for (id, waiting) in candidates {
            if self.clash(&waiting).is_none() {
                self.refused.remove(&id);
                self.serve(id, waiting);
            }
        }
    }

    /// Why each left-out certificate is not served, in id order.
    pub fn refused(&self) -> Vec<String> {
        self.refused.values().map(|r| r.error.to_string()).collect()
    }

    /// The leaf fingerprints of every certificate in the store.
    pub fn fingerprints(&self) -> HashSet<String> {
        self.summary_list()
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
        let (normal, key) = names::normalize(name)
            .and_then(|n| Some((n.clone(), self.lookup(&n).cloned()?)))
            .ok_or_else(|| CertError::DefaultNotCovered(name.to_owned()))?;
        self.default = Some((normal, key));
        Ok(self)
    }

    /// The certificate for an SNI value (case-insensitive, trailing dot ignored):
    /// exact name first, then a wildcard one label up. No SNI gives the default.
    pub fn resolve(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        match sni {
            Some(sni) => self.lookup(&names::sni_key(sni)).cloned(),
            None => self.default.as_ref().map(|(_, k)| Arc::clone(k)),
        }
    }

    fn lookup(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        if let Some((_, key)) = self.exact.get(name) {
            return Some(key);
        }
        self.wildcard
            .get(names::parent_for_wildcard(name)?)
            .map(|(_, key)| key)
    }

    /// One summary per certificate, in the order the sources were given (by id).
    pub fn summaries(&self) -> Vec<CertSummary> {
        self.summary_list().cloned().collect()
    }

    /// The summaries without copying them, in id order.
    pub fn summary_list(&self) -> impl Iterator<Item = &CertSummary> {
        self.served.values().map(|s| &s.summary)
    }

    /// Number of certificates (not names).
    pub fn len(&self) -> usize {
        self.served.len()
    }

    /// Whether the store holds no certificates.
    pub fn is_empty(&self) -> bool {
        self.served.is_empty()
    }

    /// Whether a default (no-SNI) certificate is set.
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }
}

fn served(loaded: Loaded) -> Served {
    Served {
        names: loaded.names,
        key: loaded.key,
        summary: loaded.summary,
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field(
                "certs",
                &self.served.values().map(|s| &s.names).collect::<Vec<_>>(),
            )
            .field("has_default", &self.default.is_some())
            .finish()
    }
}
