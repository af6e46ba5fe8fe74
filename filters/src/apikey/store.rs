//! The immutable set of known keys and verification against it.

use super::KeyError;
use super::format::{decode_sha256_hex, parse, sha256};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, OnceLock};
use subtle::ConstantTimeEq;
use tollgate_routing::{ApiKeySpec, KeyKind};

pub use super::verified::KeyIdentity;

/// Whether `identity` holds every one of `required` (none required: true).
pub fn has_scopes(identity: &ApiKeySpec, required: &[String]) -> bool {
    required
        .iter()
        .all(|r| identity.scopes.iter().any(|s| s == r))
}

/// The digest map is cut into this many shards: a change copies the shards it touches
/// (a few dozen entries at 100,000 keys), not the map. With 256 shards (400 entries
/// each), a proxy following a bulk load of keys spent 30-40 % of its CPU copying them.
const SHARDS: usize = 4096;

/// Keys whose digests the store's shard hash sends to one shard.
type Shard = HashMap<[u8; 32], Record, BuildHasherDefault<DigestHasher>>;

/// Hashes a digest by its first eight bytes, within a shard: digests are SHA-256
/// outputs, and crafted ones (hashes are configuration) that share a prefix are spread
/// over the shards by the keyed router, so no shard holds more than its share of
/// them. One keyed hash per lookup (the router's) instead of two.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(word);
    }

    /// The length prefix of the digest's slice: the same for every key.
    fn write_usize(&mut self, _: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Clone)]
struct Record {
    spec: Arc<ApiKeySpec>,
    /// Built on the key's first successful use; [`KeyStore::verify`] then hands out
    /// this very `Arc`, so accepting a key costs one reference-count increment and no
    /// allocation. Unbuilt, it costs a record 16 bytes; built, about 300 (the identity
    /// and its three header values), paid only by keys that are used.
    identity: OnceLock<Arc<KeyIdentity>>,
    /// Lowercased `scheme://host[:port]`; compared case-insensitively. Shared, so that
    /// copying a shard allocates nothing per record.
    allowed_origins: Arc<[Box<str>]>,
}

/// Known keys by SHA-256, built off the request path and never mutated: a new config
/// makes a new store. A clone shares every shard, and [`KeyStore::update`] copies only
/// the shards it changes, so changing one key costs the same among ten or a hundred
/// thousand; the records share the specs they were built from.
#[derive(Clone)]
pub struct KeyStore {
    shards: Arc<[Arc<Shard>]>,
    /// Picks a digest's shard with a per-process random key: hashes are configuration
    /// (a control API may accept a tenant's own), and crafted ones must not pile into
    /// one shard that every change then copies whole.
    router: RandomState,
}

impl Default for KeyStore {
    fn default() -> Self {
        let empty = Arc::new(Shard::default());
        KeyStore {
            shards: (0..SHARDS).map(|_| Arc::clone(&empty)).collect(),
            router: RandomState::new(),
        }
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("keys", &self.len())
            .finish()
    }
}

impl KeyStore {
    fn shard_of(&self, digest: &[u8; 32]) -> usize {
        // The remainder is below SHARDS, so the cast loses nothing.
        (self.router.hash_one(digest) % SHARDS as u64) as usize
    }

    /// Builds the store, decoding each hash once.
    ///
    /// Fails with [`KeyError::InvalidRecord`] (and logs which key) when a hash is not
    /// 64 lowercase hex digits, two records share a hash, or an allowed origin is not
    /// an exact `scheme://host[:port]`. A public key with no allowed origins is kept
    /// but can never be used.
    pub fn build(specs: &[ApiKeySpec]) -> Result<KeyStore, KeyError> {
        let specs: Vec<Arc<ApiKeySpec>> = specs.iter().cloned().map(Arc::new).collect();
        KeyStore::empty().update(specs.iter().map(|s| (None, Some(s))))
    }

    /// This store with each `(old, new)` change made: every `old` (when given) leaves,
    /// then every `new` (when given) comes in, checked as [`KeyStore::build`] checks.
    /// Only the shards of changed records are copied; a new record shares `new`.
    pub fn update<'a>(
        &self,
        changes: impl IntoIterator<Item = (Option<&'a Arc<ApiKeySpec>>, Option<&'a Arc<ApiKeySpec>>)>,
    ) -> Result<KeyStore, KeyError> {
        let changes: Vec<_> = changes.into_iter().collect();
        let mut shards: Vec<Arc<Shard>> = self.shards.to_vec();
        // Removals first, so that a batch which moves a hash from one key to another
        // does not see it taken.
        for old in changes.iter().filter_map(|(old, _)| *old) {
            let Some(digest) = decode_sha256_hex(&old.sha256) else {
                continue;
            };
            let shard = &mut shards[self.shard_of(&digest)];
            if shard
                .get(&digest)
                .is_some_and(|r| r.spec.key_id == old.key_id)
            {
                Arc::make_mut(shard).remove(&digest);
            }
        }
        for spec in changes.iter().filter_map(|(_, new)| *new) {
            let (digest, record) = record(spec)?;
            let shard = Arc::make_mut(&mut shards[self.shard_of(&digest)]);
            if shard.contains_key(&digest) {
                return Err(invalid(spec, "another key has the same hash"));
            }
            shard.insert(digest, record);
        }
        Ok(KeyStore {
            shards: shards.into(),
            router: self.router.clone(),
        })
    }

    /// A store that knows no keys.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }

    /// Verifies a presented key for a request to `app_id` at `now_unix`.
    ///
    /// `origin` is the request's `Origin` header; public keys require it to be one of
    /// the record's allowed origins (case-insensitive). A key is expired from its
    /// `expires_at` second on. Scopes are left to the caller ([`has_scopes`]). See the
    /// [module docs](super) for the order of checks and what is constant-time.
    pub fn verify(
        &self,
        presented: &str,
        app_id: &str,
        origin: Option<&str>,
        now_unix: i64,
    ) -> Result<Arc<KeyIdentity>, KeyError> {
        self.verify_hashed(presented, app_id, origin, now_unix, sha256)
    }

    /// [`verify`](Self::verify), with the presented key's SHA-256 taken by `digest`
    /// (which must return exactly [`sha256`] of it: a caller may remember one it took
    /// before). `digest` is called only for a well-formed key.
    pub fn verify_hashed(
        &self,
        presented: &str,
        app_id: &str,
        origin: Option<&str>,
        now_unix: i64,
        digest: impl FnOnce(&str) -> [u8; 32],
    ) -> Result<Arc<KeyIdentity>, KeyError> {
        // Bounded and strict before any hashing.
        let parsed = parse(presented)?;
        let digest = digest(presented);
        // The map is indexed by the digest, which reveals nothing usable about the
        // secret (module docs); the deciding comparison is constant-time.
        let (stored, record) = self.shards[self.shard_of(&digest)]
            .get_key_value(&digest)
            .ok_or(KeyError::Unknown)?;
        if !bool::from(stored.ct_eq(&digest)) {
            return Err(KeyError::Unknown);
        }
        // From here on the caller has proved possession of a known key.
        let id = &record.spec;
        if parsed.kind != id.kind {
            return Err(KeyError::KindMismatch);
        }
        if id.app != app_id {
            return Err(KeyError::WrongApp);
        }
        if let Some(exp) = id.expires_at
            && now_unix >= exp
        {
            return Err(KeyError::Expired);
        }
        if id.kind == KeyKind::Public {
            let allowed = origin.is_some_and(|o| {
                record
                    .allowed_origins
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(o))
            });
            if !allowed {
                return Err(KeyError::OriginNotAllowed);
            }
        }
        Ok(Arc::clone(record.identity.get_or_init(|| {
            Arc::new(KeyIdentity::new(Arc::clone(&record.spec)))
        })))
    }
}

fn invalid(spec: &ApiKeySpec, why: &str) -> KeyError {
    tracing::warn!(key_id = %spec.key_id, app = %spec.app, "invalid API key record: {why}");
    KeyError::InvalidRecord
}

/// Checks one key record as [`KeyStore::build`] does, without building a store: its
/// hash is 64 lowercase hex digits and every allowed origin is an exact
/// `scheme://host[:port]`. (A hash shared with another key is the store's to find.)
pub fn check_record(spec: &ApiKeySpec) -> Result<(), KeyError> {
    checked_digest(spec).map(|_| ())
}

/// The decoded hash of a record whose hash and origins are valid.
fn checked_digest(spec: &ApiKeySpec) -> Result<[u8; 32], KeyError> {
    let digest = decode_sha256_hex(&spec.sha256)
        .ok_or_else(|| invalid(spec, "sha256 is not 64 lowercase hex digits"))?;
    if let Some(bad) = spec.allowed_origins.iter().find(|o| !valid_origin(o)) {
        return Err(invalid(
            spec,
            &format!("allowed origin `{bad}` is not an exact scheme://host[:port]"),
        ));
    }
    Ok(digest)
}

/// The digest and record of a key, or why its spec is invalid.
fn record(spec: &Arc<ApiKeySpec>) -> Result<([u8; 32], Record), KeyError> {
    let digest = checked_digest(spec)?;
    let record = Record {
        spec: Arc::clone(spec),
        identity: OnceLock::new(),
        allowed_origins: spec
            .allowed_origins
            .iter()
            .map(|o| o.to_ascii_lowercase().into_boxed_str())
            .collect(),
    };
    Ok((digest, record))
}

/// An exact browser origin: `scheme://host[:port]`, no path, query, userinfo or
/// trailing slash; not `null` or a wildcard.
fn valid_origin(o: &str) -> bool {
    let Some((scheme, authority)) = o.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok
        || authority.is_empty()
        || !authority
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'@' | b'*'))
    {
        return false;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after {
            "" => (v6, None),
            p => match p.strip_prefix(':') {
                Some(p) => (v6, Some(p)),
                None => return false,
            },
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    !host.is_empty() && port_ok
}

#[cfg(test)]
mod tests {
    use super::super::format::generate;
    use super::*;

    fn spec(key_id: &str, app: &str, kind: KeyKind, hash: String) -> ApiKeySpec {
        ApiKeySpec {
            key_id: key_id.into(),
            app: app.into(),
            kind,
            sha256: hash,
            scopes: vec!["read".into()],
            expires_at: None,
            allowed_origins: vec![],
        }
    }

    #[test]
    fn round_trip_secret_and_public() {
        let (sk, sk_hash) = generate(KeyKind::Secret, true, "acme").unwrap();
        let (pk, pk_hash) = generate(KeyKind::Public, false, "acme").unwrap();
        let mut pk_spec = spec("k2", "acme", KeyKind::Public, pk_hash);
        pk_spec.allowed_origins = vec!["https://App.Example.com".into()];
        let store =
            KeyStore::build(&[spec("k1", "acme", KeyKind::Secret, sk_hash), pk_spec]).unwrap();
        assert_eq!(store.len(), 2);

        let id = store.verify(&sk, "acme", None, 0).unwrap();
        assert_eq!((id.key_id.as_str(), id.kind), ("k1", KeyKind::Secret));
        let id = store
            .verify(&pk, "acme", Some("https://app.example.COM"), 0)
            .unwrap();
        assert_eq!((id.key_id.as_str(), id.kind), ("k2", KeyKind::Public));
    }

    #[test]
    fn updates_add_and_revoke_keys_without_touching_the_others() {
        let (sk1, h1) = generate(KeyKind::Secret, true, "acme").unwrap();
        let (sk2, h2) = generate(KeyKind::Secret, true, "acme").unwrap();
        let k1 = Arc::new(spec("k1", "acme", KeyKind::Secret, h1.clone()));
        let k2 = Arc::new(spec("k2", "acme", KeyKind::Secret, h2));
        let before = KeyStore::empty().update([(None, Some(&k1))]).unwrap();
        let after = before.update([(None, Some(&k2))]).unwrap();
        assert_eq!((before.len(), after.len()), (1, 2));
        assert!(
            before.verify(&sk2, "acme", None, 0).is_err(),
            "the old store is unchanged"
        );
        assert!(after.verify(&sk2, "acme", None, 0).is_ok());
        let first = before.verify(&sk1, "acme", None, 0).unwrap();
        let shared = after.verify(&sk1, "acme", None, 0).unwrap();
        assert!(
            Arc::ptr_eq(&first.spec, &shared.spec),
            "untouched records are shared"
        );

        let revoked = after.update([(Some(&k1), None)]).unwrap();
        assert_eq!(
            revoked.verify(&sk1, "acme", None, 0),
            Err(KeyError::Unknown)
        );
        assert!(revoked.verify(&sk2, "acme", None, 0).is_ok());

        // A second key with a taken hash is refused; one holding another's hash is
        // not removed in its name.
        let twin = Arc::new(spec("k3", "acme", KeyKind::Secret, h1));
        assert_eq!(
            after.update([(None, Some(&twin))]).unwrap_err(),
            KeyError::InvalidRecord
        );
        let kept = after.update([(Some(&twin), None)]).unwrap();
        assert!(kept.verify(&sk1, "acme", None, 0).is_ok());
        // A hash moving from one key to another in one update, whatever the order.
        let moved = after
            .update([(None, Some(&twin)), (Some(&k1), None)])
            .unwrap();
        assert_eq!(moved.verify(&sk1, "acme", None, 0).unwrap().key_id, "k3");
    }

    #[test]
    fn identities_are_shared_not_cloned() {
        let (sk, h) = generate(KeyKind::Secret, true, "acme").unwrap();
        let store = KeyStore::build(&[spec("k1", "acme", KeyKind::Secret, h)]).unwrap();
        let a = store.verify(&sk, "acme", None, 0).unwrap();
        let b = store.verify(&sk, "acme", None, 0).unwrap();
        assert!(Arc::ptr_eq(&a, &b));

        // The identity holds the spec the store was updated with, not a copy of it.
        let (sk2, h2) = generate(KeyKind::Secret, true, "acme").unwrap();
        let given = Arc::new(spec("k2", "acme", KeyKind::Secret, h2));
        let store = store.update([(None, Some(&given))]).unwrap();
        assert!(Arc::ptr_eq(
            &store.verify(&sk2, "acme", None, 0).unwrap().spec,
            &given
        ));
    }

    #[test]
    fn a_change_copies_only_its_shard() {
        let keys: Vec<(String, Arc<ApiKeySpec>)> = (0..2_000)
            .map(|i| {
                let (sk, h) = generate(KeyKind::Secret, true, "acme").unwrap();
                (
                    sk,
                    Arc::new(spec(&format!("k{i}"), "acme", KeyKind::Secret, h)),
                )
            })
            .collect();
        let store = KeyStore::empty()
            .update(keys.iter().map(|(_, k)| (None, Some(k))))
            .unwrap();
        assert_eq!(store.len(), 2_000);
        let revoked = &keys[7].1;
        let next = store.update([(Some(revoked), None)]).unwrap();
        assert_eq!(next.len(), 1_999);
        let changed: Vec<usize> = (0..SHARDS)
            .filter(|&i| !Arc::ptr_eq(&store.shards[i], &next.shards[i]))
            .collect();
        let digest = decode_sha256_hex(&revoked.sha256).unwrap();
        assert_eq!(changed, vec![next.shard_of(&digest)]);
        for (i, (sk, _)) in keys.iter().enumerate() {
            assert_eq!(next.verify(sk, "acme", None, 0).is_ok(), i != 7, "key {i}");
            assert!(store.verify(sk, "acme", None, 0).is_ok(), "key {i} before");
        }
    }

    #[test]
    fn crafted_hashes_do_not_pile_into_one_shard() {
        // Hashes that share all but their last bytes, as a tenant could upload.
        let keys: Vec<Arc<ApiKeySpec>> = (0..2_000u32)
            .map(|i| {
                let hash = format!("{:064x}", i);
                Arc::new(spec(&format!("k{i}"), "acme", KeyKind::Secret, hash))
            })
            .collect();
        let store = KeyStore::empty()
            .update(keys.iter().map(|k| (None, Some(k))))
            .unwrap();
        // About 8 per shard; 64 would take a broken shard hash.
        let largest = store.shards.iter().map(|s| s.len()).max().unwrap();
        assert!(largest < 64, "a shard holds {largest} of 2,000 keys");
    }

    #[test]
    fn expiry_is_inclusive_of_the_expiry_second() {
        let (sk, h) = generate(KeyKind::Secret, true, "acme").unwrap();
        let mut s = spec("k1", "acme", KeyKind::Secret, h);
        s.expires_at = Some(1_000);
        let store = KeyStore::build(&[s]).unwrap();
        assert!(store.verify(&sk, "acme", None, 999).is_ok());
        assert_eq!(
            store.verify(&sk, "acme", None, 1_000),
            Err(KeyError::Expired)
        );
    }

    #[test]
    fn empty_store_knows_nothing() {
        let (sk, _) = generate(KeyKind::Secret, true, "acme").unwrap();
        let store = KeyStore::empty();
        assert!(store.is_empty());
        assert_eq!(store.verify(&sk, "acme", None, 0), Err(KeyError::Unknown));
        assert_eq!(format!("{store:?}"), "KeyStore { keys: 0 }");
    }

    #[test]
    fn has_scopes_requires_all() {
        let mut id = spec("k", "a", KeyKind::Secret, String::new());
        id.scopes = vec!["read".into(), "write".into()];
        assert!(has_scopes(&id, &[]));
        assert!(has_scopes(&id, &["read".into()]));
        assert!(has_scopes(&id, &["write".into(), "read".into()]));
        assert!(!has_scopes(&id, &["admin".into()]));
        assert!(!has_scopes(&id, &["read".into(), "admin".into()]));
        assert!(!has_scopes(&id, &["READ".into()]));
    }

    #[test]
    fn origin_syntax() {
        for ok in [
            "https://example.com",
            "http://localhost:3000",
            "https://a.b.c:443",
            "http://[::1]:8080",
            "http://[::1]",
            "chrome-extension://abcdefghijklmnop",
            "HTTPS://Example.COM",
        ] {
            assert!(valid_origin(ok), "{ok}");
        }
        for bad in [
            "",
            "null",
            "*",
            "https://*.example.com",
            "example.com",
            "https://",
            "https://example.com/",
            "https://example.com/path",
            "https://user@example.com",
            "https://example.com?x",
            "https://example.com:",
            "https://example.com:123456",
            "https://example.com:80:80",
            "https://exa mple.com",
            "https://[::1",
            "https://[]:80",
            "https://[::1]x",
            "1http://example.com",
        ] {
            assert!(!valid_origin(bad), "{bad}");
        }
    }
}
