//! Lookups over the edge config that would otherwise scan it: an app's hostnames,
//! routes and keys, the routes on a name, under a wildcard or on a port, the keys with
//! a hash, the certificates naming a host. [`EdgeConfig::apply`](crate::EdgeConfig::apply) keeps them up to date, so
//! a command's checks and answers cost what it touched, not the tenant count.
//!
//! The index is derived data: it is not serialized, and a deserialized config
//! rebuilds it on first use ([`Index::stale`]). Two configs with the same data are
//! equal whatever their index holds.

use crate::auth::ApiKeySpec;
use crate::edge::{EdgeCert, EdgeConfig};
use crate::host::wildcard_parent;
use crate::model::RouteSpec;
use equivalent::{Comparable, Equivalent};
use imbl::OrdSet;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

/// A name or id held by the index. Shared, so that writing to a tree node that
/// another version of the config still holds copies pointers rather than strings:
/// with `String`s, those copies and their frees were a fifth of the control service's
/// CPU under a bulk load of keys.
pub(crate) type Name = Arc<str>;

/// `(key, id)` pairs in one ordered set: the ids under a key are a range of it. One
/// set per lookup, rather than a set of ids per key, because most keys have one id
/// (a key's hash, an app's hostname) and a set of its own costs a whole tree node:
/// at 100,000 keys that was most of the index's memory.
pub(crate) type Pairs<K> = OrdSet<(K, Name)>;

/// A `(key, id)` pair looked up by reference, without building the stored pair.
struct Probe<'a, Q: ?Sized>(&'a Q, &'a str);

impl<Q: ?Sized + Comparable<K>, K> Equivalent<(K, Name)> for Probe<'_, Q> {
    fn equivalent(&self, pair: &(K, Name)) -> bool {
        self.0.equivalent(&pair.0) && self.1 == &*pair.1
    }
}

impl<Q: ?Sized + Comparable<K>, K> Comparable<(K, Name)> for Probe<'_, Q> {
    fn compare(&self, pair: &(K, Name)) -> Ordering {
        self.0.compare(&pair.0).then_with(|| self.1.cmp(&pair.1))
    }
}

/// The edge config's lookups; every set holds ids (hostnames for `hostnames_of`).
#[derive(Clone, Default)]
pub struct Index {
    /// Built from nothing: a deserialized config's index must be rebuilt before use.
    pub(crate) stale: bool,
    /// A proxy's index: `keys_by_hash`, which only the control service's checks
    /// read, is left empty (they scan instead): about 170 B per key (massif, 100,000 keys).
    pub(crate) edge_only: bool,
    pub(crate) hostnames_of: Pairs<Name>,
    pub(crate) routes_of: Pairs<Name>,
    pub(crate) routes_on: Pairs<Name>,
    /// By the wildcard parent of the route's name: the routes `*.<parent>` covers.
    pub(crate) routes_under: Pairs<Name>,
    pub(crate) routes_at: Pairs<u16>,
    pub(crate) keys_of: Pairs<Name>,
    pub(crate) keys_by_hash: Pairs<Name>,
    /// A certificate's stored names (normalised by the control service) → cert ids.
    pub(crate) certs_by_name: Pairs<Name>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.stale { "Index(stale)" } else { "Index" })
    }
}

impl PartialEq for Index {
    /// Derived data: configs compare by what they hold.
    fn eq(&self, _: &Index) -> bool {
        true
    }
}

/// `key`, shared with a pair already under it when there is one (most keys repeat:
/// an app's keys and routes), so a key is stored once however many ids it has.
fn shared_key(set: &Pairs<Name>, key: &str) -> Name {
    match set.get_next(&Probe(key, "")) {
        Some((k, _)) if &**k == key => k.clone(),
        _ => Name::from(key),
    }
}

fn add(set: &mut Pairs<Name>, key: &str, id: Name) {
    let key = shared_key(set, key);
    set.insert((key, id));
}

fn remove<Q: ?Sized + Comparable<K>, K: Ord + Clone>(set: &mut Pairs<K>, key: &Q, id: &str) {
    set.remove(&Probe(key, id));
}

/// The ids under `key`, in order.
pub(crate) fn ids<'a, Q, K>(set: &'a Pairs<K>, key: &'a Q) -> impl Iterator<Item = &'a str> + 'a
where
    Q: ?Sized + Comparable<K>,
    K: Ord + Clone + 'a,
{
    set.range((Bound::Included(Probe(key, "")), Bound::Unbounded))
        .take_while(move |(k, _)| key.equivalent(k))
        .map(|(_, id)| &**id)
}

impl Index {
    /// The index of a config that is not built by `apply` (deserialized).
    pub(crate) fn stale() -> Index {
        Index {
            stale: true,
            ..Index::default()
        }
    }

    /// The index of `config`, from scratch, of the same kind as its current one.
    pub(crate) fn build(config: &EdgeConfig) -> Index {
        Index::build_for(config, config.index().edge_only)
    }

    /// The index of `config`, from scratch; a proxy's one when `edge_only`.
    pub(crate) fn build_for(config: &EdgeConfig, edge_only: bool) -> Index {
        let mut index = Index {
            edge_only,
            ..Index::default()
        };
        for (id, r) in &config.routes {
            index.add_route(id, r);
        }
        for (h, app) in &config.hostnames {
            index.add_hostname(h, app);
        }
        for k in config.api_keys.values() {
            index.add_key(k);
        }
        for c in config.certificates.values() {
            index.add_cert(c);
        }
        index
    }

    /// Whether both hold the same lookups (`==` ignores the index).
    pub(crate) fn same_as(&self, other: &Index) -> bool {
        self.hostnames_of == other.hostnames_of
            && self.routes_of == other.routes_of
            && self.routes_on == other.routes_on
            && self.routes_under == other.routes_under
            && self.routes_at == other.routes_at
            && self.keys_of == other.keys_of
            && self.keys_by_hash == other.keys_by_hash
            && self.certs_by_name == other.certs_by_name
    }

    pub(crate) fn add_cert(&mut self, c: &EdgeCert) {
        let id = Name::from(c.id.as_str());
        for n in &c.names {
            add(&mut self.certs_by_name, n, id.clone());
        }
    }

    pub(crate) fn remove_cert(&mut self, c: &EdgeCert) {
        for n in &c.names {
            remove(&mut self.certs_by_name, n.as_str(), &c.id);
        }
    }

    pub(crate) fn add_route(&mut self, id: &str, r: &RouteSpec) {
        let id = Name::from(id);
        add(&mut self.routes_of, &r.app, id.clone());
        add(&mut self.routes_on, &r.hostname, id.clone());
        if let Some(p) = covered_parent(&r.hostname) {
            add(&mut self.routes_under, p, id.clone());
        }
        if let Some(port) = r.listen_port {
            self.routes_at.insert((port, id));
        }
    }

    pub(crate) fn remove_route(&mut self, id: &str, r: &RouteSpec) {
        remove(&mut self.routes_of, r.app.as_str(), id);
        remove(&mut self.routes_on, r.hostname.as_str(), id);
        if let Some(p) = covered_parent(&r.hostname) {
            remove(&mut self.routes_under, p, id);
        }
        if let Some(port) = r.listen_port {
            remove(&mut self.routes_at, &port, id);
        }
    }

    pub(crate) fn add_hostname(&mut self, hostname: &str, app: &str) {
        add(&mut self.hostnames_of, app, Name::from(hostname));
    }

    pub(crate) fn remove_hostname(&mut self, hostname: &str, app: &str) {
        remove(&mut self.hostnames_of, app, hostname);
    }

    pub(crate) fn add_key(&mut self, k: &ApiKeySpec) {
        let id = Name::from(k.key_id.as_str());
        if !self.edge_only {
            add(&mut self.keys_by_hash, &k.sha256, id.clone());
        }
        add(&mut self.keys_of, &k.app, id);
    }

    pub(crate) fn remove_key(&mut self, k: &ApiKeySpec) {
        remove(&mut self.keys_of, k.app.as_str(), &k.key_id);
        if !self.edge_only {
            remove(&mut self.keys_by_hash, k.sha256.as_str(), &k.key_id);
        }
    }
}

/// The parent a wildcard must name to cover `hostname` (`x.p.example` → `p.example`);
/// none for wildcards themselves and names too short to be covered.
pub(crate) fn covered_parent(hostname: &str) -> Option<&str> {
    if hostname.starts_with("*.") {
        return None;
    }
    wildcard_parent(hostname)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::KeyKind;
    use crate::edge::EdgeConfig;

    #[test]
    fn ids_are_the_range_of_one_key_and_a_key_is_stored_once() {
        let mut set: Pairs<Name> = Pairs::new();
        for (key, id) in [("a", "2"), ("ab", "1"), ("a", "1"), ("", "0"), ("b", "9")] {
            add(&mut set, key, Name::from(id));
        }
        assert_eq!(ids(&set, "a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(ids(&set, "ab").collect::<Vec<_>>(), ["1"]);
        assert_eq!(ids(&set, "").collect::<Vec<_>>(), ["0"]);
        assert_eq!(ids(&set, "c").count(), 0);
        let under_a: Vec<&Name> = set
            .iter()
            .filter(|(k, _)| &**k == "a")
            .map(|(k, _)| k)
            .collect();
        assert!(Arc::ptr_eq(under_a[0], under_a[1]));
        remove(&mut set, "a", "1");
        remove(&mut set, "a", "3");
        assert_eq!(ids(&set, "a").collect::<Vec<_>>(), ["2"]);
        assert_eq!(set.len(), 4);
    }

    #[test]
    fn a_proxy_index_keeps_no_keys_by_hash() {
        let mut config = EdgeConfig::default();
        let key = ApiKeySpec {
            key_id: "k1".into(),
            app: "a".into(),
            kind: KeyKind::Secret,
            sha256: "0".repeat(64),
            scopes: vec![],
            expires_at: None,
            allowed_origins: vec![],
        };
        config.api_keys.insert("k1".into(), Arc::new(key.clone()));
        let full = Index::build_for(&config, false);
        let mut edge = Index::build_for(&config, true);
        assert_eq!(full.keys_by_hash.len(), 1);
        assert!(edge.keys_by_hash.is_empty());
        assert_eq!(edge.keys_of, full.keys_of);
        edge.remove_key(&key);
        edge.add_key(&key);
        assert!(edge.keys_by_hash.is_empty() && edge.keys_of.len() == 1);
    }
}
