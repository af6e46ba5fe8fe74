//! Private keys at rest: AES-256-GCM sealing of named string fields in event
//! payloads.
//!
//! [`AnyStore`](super::AnyStore) seals every JSON string field named in
//! [`SEALED_FIELDS`] (at any depth) in the payloads of [`SEALED_EVENT_TYPES`]
//! before they reach the database, and unseals them when reading, so the rest of
//! the service only ever sees plaintext. A sealed value is the string
//! `tg-sealed:v1:<key_id>:<base64(nonce || ciphertext || tag)>`, with a random
//! 96-bit nonce and the field name and key id as associated data (a sealed value
//! cannot be moved to another field or relabelled with another key id).
//!
//! A [`Keyring`] holds one or more keys: the first seals, every key unseals, so a
//! key is rotated by listing a new one first. Values that are not sealed (logs
//! written before sealing existed) read as they are.
//!
//! This module must not log or format key material or plaintext.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

/// The JSON string fields sealed at rest, wherever they occur in a payload.
pub const SEALED_FIELDS: &[&str] = &["key_pem", "account_credentials"];

/// The event types whose payloads can carry a [`SEALED_FIELDS`] field; only
/// these are walked, on append and on read.
pub const SEALED_EVENT_TYPES: &[&str] = &[
    "certificate_uploaded",
    "certificate_rotated",
    "tls_issued",
    "acme_account_registered",
];

/// What every sealed value starts with.
pub const SEALED_PREFIX: &str = "tg-sealed:v1:";

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MAX_ID_LEN: usize = 64;

/// True if payloads of `event_type` may carry sealed fields.
pub fn is_sealed_event_type(event_type: &str) -> bool {
    SEALED_EVENT_TYPES.contains(&event_type)
}

/// Why a keyring specification was refused. Messages name key ids and
/// positions, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("no sealing keys (want `id:base64-of-32-bytes`, comma separated)")]
    Empty,
    #[error("sealing key entry {index} is not `id:base64-of-32-bytes`")]
    NoSeparator { index: usize },
    #[error(
        "sealing key id {id:?} is not 1-{MAX_ID_LEN} characters of letters, digits, `-`, `_`, `.`"
    )]
    BadId { id: String },
    #[error("sealing key `{id}` is not valid base64")]
    BadBase64 { id: String },
    #[error("sealing key `{id}` is {len} bytes; AES-256 needs {KEY_LEN}")]
    WrongLength { id: String, len: usize },
    #[error("sealing key id `{id}` is listed twice")]
    DuplicateId { id: String },
}

/// Why a value could not be sealed or unsealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "field `{field}` is sealed with key `{key_id}`, which is not in the keyring ({known}); \
         list that key again in the sealing keys"
    )]
    UnknownKey {
        field: String,
        key_id: String,
        known: String,
    },
    #[error("field `{field}` is sealed with key `{key_id}`, but no sealing keys are configured")]
    NoKeyring { field: String, key_id: String },
    #[error(
        "field `{field}` sealed with key `{key_id}` fails authentication (tampered, or another key with that id)"
    )]
    Authentication { field: String, key_id: String },
    #[error("field `{field}` holds a malformed sealed value: {reason}")]
    Malformed { field: String, reason: &'static str },
    #[error("sealing field `{field}` failed: {reason}")]
    Seal { field: String, reason: &'static str },
}

struct SealingKey {
    id: String,
    cipher: Aes256Gcm,
}

/// Sealing keys: the first seals, all unseal.
pub struct Keyring {
    keys: Vec<SealingKey>,
    rng: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Keyring {
    /// Parses `id:base64(32 bytes)` entries separated by commas or newlines
    /// (blank entries and lines starting with `#` are skipped); the first seals.
    pub fn parse(spec: &str) -> Result<Keyring, KeyringError> {
        let mut keys: Vec<SealingKey> = Vec::new();
        let entries = spec
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (index, entry) in entries.enumerate() {
            let (id, b64) = entry
                .split_once(':')
                .ok_or(KeyringError::NoSeparator { index: index + 1 })?;
            let id = id.trim();
            if !valid_id(id) {
                return Err(KeyringError::BadId { id: id.to_string() });
            }
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|_| KeyringError::BadBase64 { id: id.to_string() })?;
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyringError::DuplicateId { id: id.to_string() });
            }
            keys.push(Self::key(id, &bytes)?);
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring {
            keys,
            rng: SystemRandom::new(),
        })
    }

    fn key(id: &str, bytes: &[u8]) -> Result<SealingKey, KeyringError> {
        let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| KeyringError::WrongLength {
            id: id.to_string(),
            len: bytes.len(),
        })?;
        Ok(SealingKey {
            id: id.to_string(),
            cipher,
        })
    }

    /// A new random key as one `id:base64` entry (for a generated key file).
    pub fn generate_entry(id: &str) -> Result<String, KeyringError> {
        if !valid_id(id) {
            return Err(KeyringError::BadId { id: id.to_string() });
        }
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyringError::Empty)?;
        Ok(format!("{id}:{}", STANDARD.encode(bytes)))
    }

    /// Key ids, sealing key first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// The id of the key that seals.
    pub fn sealing_id(&self) -> &str {
        self.keys.first().map_or("", |k| k.id.as_str())
    }

    fn aad(field: &str, key_id: &str) -> Vec<u8> {
        format!("{SEALED_PREFIX}{field}\0{key_id}").into_bytes()
    }

    /// Seals `plaintext` as the value of `field` with the first key.
    pub fn seal(&self, field: &str, plaintext: &str) -> Result<String, SealError> {
        let fail = |reason| SealError::Seal {
            field: field.to_string(),
            reason,
        };
        let key = self.keys.first().ok_or(fail("no sealing key"))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| fail("no randomness for the nonce"))?;
        let aad = Self::aad(field, &key.id);
        let sealed = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| fail("encryption failed"))?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED_PREFIX}{}:{}",
            key.id,
            STANDARD.encode(blob)
        ))
    }

    /// Opens a value [`Self::seal`] produced for `field`.
    pub fn unseal(&self, field: &str, sealed: &str) -> Result<String, SealError> {
        let (key_id, b64) = split_sealed(field, sealed)?;
        let key =
            self.keys
                .iter()
                .find(|k| k.id == key_id)
                .ok_or_else(|| SealError::UnknownKey {
                    field: field.to_string(),
                    key_id: key_id.to_string(),
                    known: format!("keys: {}", self.ids().collect::<Vec<_>>().join(", ")),
                })?;
        let malformed = |reason| SealError::Malformed {
            field: field.to_string(),
            reason,
        };
        let blob = STANDARD.decode(b64).map_err(|_| malformed("not base64"))?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(malformed("too short"));
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| malformed("too short"))?;
        let aad = Self::aad(field, key_id);
        let plain = key
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Authentication {
                field: field.to_string(),
                key_id: key_id.to_string(),
            })?;
        String::from_utf8(plain).map_err(|_| malformed("plaintext is not UTF-8"))
    }

    /// Seals every [`SEALED_FIELDS`] string in `payload`, at any depth. Values
    /// are sealed even if they already look sealed, so unsealing always returns
    /// exactly what was written.
    pub fn seal_payload(&self, payload: &mut Value) -> Result<(), SealError> {
        walk(payload, &mut |field, text| {
            *text = self.seal(field, text)?;
            Ok(())
        })
    }
}

/// `(key_id, base64)` of a sealed value.
fn split_sealed<'a>(field: &str, sealed: &'a str) -> Result<(&'a str, &'a str), SealError> {
    sealed
        .strip_prefix(SEALED_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| SealError::Malformed {
            field: field.to_string(),
            reason: "no key id",
        })
}

/// Unseals every sealed [`SEALED_FIELDS`] string in `payload`; unsealed
/// (legacy) strings stay as they are. Without a keyring, a sealed value is an
/// error naming its key id.
pub fn unseal_payload(keyring: Option<&Keyring>, payload: &mut Value) -> Result<(), SealError> {
    walk(payload, &mut |field, text| {
        if !text.starts_with(SEALED_PREFIX) {
            return Ok(());
        }
        *text = match keyring {
            Some(k) => k.unseal(field, text)?,
            None => {
                let (key_id, _) = split_sealed(field, text)?;
                return Err(SealError::NoKeyring {
                    field: field.to_string(),
                    key_id: key_id.to_string(),
                });
            }
        };
        Ok(())
    })
}

/// Calls `f(field, text)` for every string value of a [`SEALED_FIELDS`] field.
fn walk(
    value: &mut Value,
    f: &mut dyn FnMut(&str, &mut String) -> Result<(), SealError>,
) -> Result<(), SealError> {
    match value {
        Value::Object(map) => {
            for (name, child) in map.iter_mut() {
                match child {
                    Value::String(text) if SEALED_FIELDS.contains(&name.as_str()) => f(name, text)?,
                    _ => walk(child, f)?,
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| walk(v, f)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use serde_json::json;

    fn entry(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; KEY_LEN]))
    }

    #[test]
    fn parses_lists_and_files() {
        let k = Keyring::parse(&format!(" {} , {} ", entry("b", 2), entry("a", 1))).unwrap();
        assert_eq!(k.ids().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(k.sealing_id(), "b");
        let file = format!(
            "# rotated, 2026\n{}\n\n{}\n",
            entry("new", 3),
            entry("old", 4)
        );
        let k = Keyring::parse(&file).unwrap();
        assert_eq!(k.ids().collect::<Vec<_>>(), ["new", "old"]);
        // Debug names ids only.
        assert!(!format!("{k:?}").contains(&STANDARD.encode([3u8; KEY_LEN])));
    }

    #[test]
    fn refuses_bad_specs() {
        assert_eq!(Keyring::parse(" , ").unwrap_err(), KeyringError::Empty);
        assert_eq!(
            Keyring::parse(&format!("{},nocolon", entry("a", 1))).unwrap_err(),
            KeyringError::NoSeparator { index: 2 }
        );
        assert_eq!(
            Keyring::parse("a:not*base64").unwrap_err(),
            KeyringError::BadBase64 { id: "a".into() }
        );
        assert_eq!(
            Keyring::parse(&format!("a:{}", STANDARD.encode([1u8; 16]))).unwrap_err(),
            KeyringError::WrongLength {
                id: "a".into(),
                len: 16
            }
        );
        assert_eq!(
            Keyring::parse(&format!("{},{}", entry("a", 1), entry("a", 2))).unwrap_err(),
            KeyringError::DuplicateId { id: "a".into() }
        );
        assert_eq!(
            Keyring::parse(&entry("a b", 1)).unwrap_err(),
            KeyringError::BadId { id: "a b".into() }
        );
        assert_eq!(
            Keyring::parse(&entry("", 1)).unwrap_err(),
            KeyringError::BadId { id: String::new() }
        );
        // Messages never carry the key.
        let err = Keyring::parse(&format!("a:{}", STANDARD.encode([9u8; 31]))).unwrap_err();
        assert!(
            !err.to_string().contains(&STANDARD.encode([9u8; 31])),
            "{err}"
        );
    }

    #[test]
    fn generated_entries_parse() {
        let e = Keyring::generate_entry("local-1").unwrap();
        assert_eq!(Keyring::parse(&e).unwrap().sealing_id(), "local-1");
        assert_ne!(e, Keyring::generate_entry("local-1").unwrap());
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let k = Keyring::parse(&entry("a", 1)).unwrap();
        let s1 = k.seal("key_pem", "-----BEGIN PRIVATE KEY-----").unwrap();
        let s2 = k.seal("key_pem", "-----BEGIN PRIVATE KEY-----").unwrap();
        assert!(s1.starts_with("tg-sealed:v1:a:"), "{s1}");
        assert_ne!(s1, s2);
        assert!(!s1.contains("PRIVATE"));
        assert_eq!(
            k.unseal("key_pem", &s1).unwrap(),
            "-----BEGIN PRIVATE KEY-----"
        );
    }

    #[test]
    fn sealed_values_are_bound_to_field_and_key() {
        let k = Keyring::parse(&entry("a", 1)).unwrap();
        let sealed = k.seal("key_pem", "secret").unwrap();
        // Moved to another field.
        assert!(matches!(
            k.unseal("account_credentials", &sealed),
            Err(SealError::Authentication { .. })
        ));
        // Relabelled with another id whose key is the same bytes.
        let both = Keyring::parse(&format!("{},{}", entry("a", 1), entry("b", 1))).unwrap();
        let relabelled = sealed.replacen(":a:", ":b:", 1);
        assert!(matches!(
            both.unseal("key_pem", &relabelled),
            Err(SealError::Authentication { .. })
        ));
        // Tampered ciphertext.
        let (head, b64) = sealed.rsplit_once(':').unwrap();
        let mut blob = STANDARD.decode(b64).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        let tampered = format!("{head}:{}", STANDARD.encode(blob));
        let err = k.unseal("key_pem", &tampered).unwrap_err();
        assert!(err.to_string().contains("`a`"), "{err}");
        assert!(matches!(err, SealError::Authentication { .. }));
        // Truncated or garbled.
        assert!(matches!(
            k.unseal("key_pem", "tg-sealed:v1:a:AAAA"),
            Err(SealError::Malformed { .. })
        ));
        assert!(matches!(
            k.unseal("key_pem", "tg-sealed:v1:a:***"),
            Err(SealError::Malformed { .. })
        ));
    }

    #[test]
    fn rotation() {
        let a = Keyring::parse(&entry("a", 1)).unwrap();
        let ba = Keyring::parse(&format!("{},{}", entry("b", 2), entry("a", 1))).unwrap();
        let b = Keyring::parse(&entry("b", 2)).unwrap();
        let old = a.seal("key_pem", "old").unwrap();
        assert_eq!(ba.unseal("key_pem", &old).unwrap(), "old");
        assert!(
            ba.seal("key_pem", "new")
                .unwrap()
                .starts_with("tg-sealed:v1:b:")
        );
        let err = b.unseal("key_pem", &old).unwrap_err();
        assert_eq!(
            err,
            SealError::UnknownKey {
                field: "key_pem".into(),
                key_id: "a".into(),
                known: "keys: b".into()
            }
        );
        assert!(err.to_string().contains("key `a`"), "{err}");
    }

    #[test]
    fn payload_walk_seals_named_strings_at_any_depth() {
        let k = Keyring::parse(&entry("a", 1)).unwrap();
        let original = json!({
            "type": "certificate_uploaded",
            "cert": {"id": "c1", "cert_pem": "CERT", "key_pem": "KEY", "names": ["a.example"]},
            "list": [{"account_credentials": "{\"k\":1}"}, {"key_pem": null}],
            "key_pem_other": "stays",
        });
        let mut v = original.clone();
        k.seal_payload(&mut v).unwrap();
        assert!(
            v["cert"]["key_pem"]
                .as_str()
                .unwrap()
                .starts_with(SEALED_PREFIX)
        );
        assert!(
            v["list"][0]["account_credentials"]
                .as_str()
                .unwrap()
                .starts_with(SEALED_PREFIX)
        );
        assert_eq!(v["cert"]["cert_pem"], "CERT");
        assert_eq!(v["list"][1]["key_pem"], Value::Null);
        assert_eq!(v["key_pem_other"], "stays");
        unseal_payload(Some(&k), &mut v).unwrap();
        assert_eq!(v, original);
    }

    #[test]
    fn legacy_plaintext_reads_unchanged_and_sealed_needs_a_keyring() {
        let mut legacy = json!({"cert": {"key_pem": "-----BEGIN PRIVATE KEY-----"}});
        let before = legacy.clone();
        unseal_payload(None, &mut legacy).unwrap();
        assert_eq!(legacy, before);
        let k = Keyring::parse(&entry("a", 1)).unwrap();
        unseal_payload(Some(&k), &mut legacy).unwrap();
        assert_eq!(legacy, before);

        let mut sealed = json!({"key_pem": k.seal("key_pem", "x").unwrap()});
        let err = unseal_payload(None, &mut sealed).unwrap_err();
        assert_eq!(
            err,
            SealError::NoKeyring {
                field: "key_pem".into(),
                key_id: "a".into()
            }
        );
    }

    #[test]
    fn values_that_look_sealed_are_sealed_again() {
        let k = Keyring::parse(&entry("a", 1)).unwrap();
        let literal = "tg-sealed:v1:zz:literal";
        let mut v = json!({"key_pem": literal});
        k.seal_payload(&mut v).unwrap();
        unseal_payload(Some(&k), &mut v).unwrap();
        assert_eq!(v["key_pem"], literal);
    }
}
