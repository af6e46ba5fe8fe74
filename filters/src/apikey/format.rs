//! The key format: strict parsing, generation and hashing.

use super::KeyError;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use tollgate_routing::KeyKind;

/// Longest app prefix.
pub const APP_PREFIX_MAX: usize = 12;
/// Exact length of the secret part.
pub const SECRET_LEN: usize = 32;
/// Shortest well-formed key: `sk_live_a_` + secret.
pub const MIN_KEY_LEN: usize = 3 + 5 + 1 + 1 + SECRET_LEN;
/// Longest well-formed key: `sk_live_` + 12-char prefix + `_` + secret.
pub const MAX_KEY_LEN: usize = 3 + 5 + APP_PREFIX_MAX + 1 + SECRET_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Largest multiple of 62 that fits a byte: bytes at or above it are rejected.
const BASE62_LIMIT: u8 = 62 * 4;

/// A well-formed key's parts, borrowed from the key string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub kind: KeyKind,
    /// `live` rather than `test`.
    pub live: bool,
    pub app_prefix: &'a str,
    pub secret: &'a str,
}

/// Parses `{pk|sk}_{live|test}_{appprefix}_{secret}` strictly.
///
/// The length is checked first, so oversized input is refused without being scanned.
pub fn parse(key: &str) -> Result<ParsedKey<'_>, KeyError> {
    if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
        return Err(KeyError::Malformed);
    }
    // `<kind>_<env>_<app prefix>_<secret>`: kind and env have fixed lengths, and
    // neither the prefix nor the secret may hold `_` (their charsets leave it out).
    let kind = match key.get(..3) {
        Some("sk_") => KeyKind::Secret,
        Some("pk_") => KeyKind::Public,
        _ => return Err(KeyError::Malformed),
    };
    let live = match key.get(3..8) {
        Some("live_") => true,
        Some("test_") => false,
        _ => return Err(KeyError::Malformed),
    };
    let (app_prefix, secret) = key
        .get(8..)
        .and_then(|rest| rest.split_once('_'))
        .ok_or(KeyError::Malformed)?;
    if !valid_app_prefix(app_prefix) || !valid_secret(secret) {
        return Err(KeyError::Malformed);
    }
    Ok(ParsedKey {
        kind,
        live,
        app_prefix,
        secret,
    })
}

fn valid_app_prefix(p: &str) -> bool {
    (1..=APP_PREFIX_MAX).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn valid_secret(s: &str) -> bool {
    s.len() == SECRET_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The string a kind's keys start with (`sk` or `pk`).
pub(crate) fn kind_tag(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Secret => "sk",
        KeyKind::Public => "pk",
    }
}

/// Generates a new key and its SHA-256 (lowercase hex), for the control plane and
/// tests. The secret is 32 uniform base62 characters from the OS CSPRNG, drawn by
/// rejection sampling so there is no modulo bias.
pub fn generate(kind: KeyKind, live: bool, app_prefix: &str) -> Result<(String, String), KeyError> {
    if !valid_app_prefix(app_prefix) {
        return Err(KeyError::Malformed);
    }
    let rng = SystemRandom::new();
    let mut key = String::with_capacity(MAX_KEY_LEN);
    key.push_str(kind_tag(kind));
    key.push_str(if live { "_live_" } else { "_test_" });
    key.push_str(app_prefix);
    key.push('_');
    fill_base62(&rng, SECRET_LEN, &mut key)?;
    let hash = sha256_hex(&key);
    debug_assert!(parse(&key).is_ok());
    Ok((key, hash))
}

/// `len` uniform base62 characters from the OS CSPRNG (ids, tokens), sampled as key
/// secrets are.
pub fn random_base62(len: usize) -> Result<String, KeyError> {
    let mut out = String::with_capacity(len);
    fill_base62(&SystemRandom::new(), len, &mut out)?;
    Ok(out)
}

/// Appends `len` uniform base62 characters drawn from `rng` to `out`.
fn fill_base62(rng: &SystemRandom, len: usize, out: &mut String) -> Result<(), KeyError> {
    let mut need = len;
    // 64 bytes almost always suffice: each byte is rejected with probability 8/256.
    let mut buf = [0u8; 64];
    while need > 0 {
        rng.fill(&mut buf).map_err(|_| KeyError::Rng)?;
        need -= push_base62(&buf, need, out);
    }
    buf.fill(0);
    Ok(())
}

/// Appends up to `need` base62 characters drawn from `random`, skipping bytes at or
/// above [`BASE62_LIMIT`] so each character is uniform; returns how many it appended.
fn push_base62(random: &[u8], need: usize, out: &mut String) -> usize {
    let mut pushed = 0;
    for &b in random.iter().filter(|&&b| b < BASE62_LIMIT).take(need) {
        out.push(char::from(BASE62[usize::from(b % 62)]));
        pushed += 1;
    }
    pushed
}

/// SHA-256 of the whole key string, as stored in the config (lowercase hex).
pub fn sha256_hex(key: &str) -> String {
    hex_lower(&sha256(key))
}

/// SHA-256 of the whole key string: what [`KeyStore`](super::KeyStore) indexes keys by.
pub fn sha256(key: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// Decodes exactly 64 lowercase hex digits, as the config requires.
pub(crate) fn decode_sha256_hex(s: &str) -> Option<[u8; 32]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdefghijABCDEFGHIJzZ";

    fn key(kind: &str, env: &str, prefix: &str, secret: &str) -> String {
        format!("{kind}_{env}_{prefix}_{secret}")
    }

    #[test]
    fn parses_well_formed_keys() {
        let k = key("sk", "live", "acme", SECRET);
        let p = parse(&k).unwrap();
        assert_eq!(p.kind, KeyKind::Secret);
        assert!(p.live);
        assert_eq!(p.app_prefix, "acme");
        assert_eq!(p.secret, SECRET);

        let k = key("pk", "test", "a1", SECRET);
        let p = parse(&k).unwrap();
        assert_eq!(p.kind, KeyKind::Public);
        assert!(!p.live);
        assert_eq!(p.app_prefix, "a1");
    }

    #[test]
    fn length_bounds_match_the_format() {
        let shortest = key("sk", "live", "a", SECRET);
        assert_eq!(shortest.len(), MIN_KEY_LEN);
        assert!(parse(&shortest).is_ok());
        let longest = key("pk", "test", "abcdefghij12", SECRET);
        assert_eq!(longest.len(), MAX_KEY_LEN);
        assert!(parse(&longest).is_ok());
    }

    #[test]
    fn rejects_malformed_keys() {
        let long_secret = format!("{SECRET}A");
        let bad = [
            String::new(),
            "sk".into(),
            "sk_live_acme_".into(),
            key("ak", "live", "acme", SECRET),
            key("SK", "live", "acme", SECRET),
            key("sk", "prod", "acme", SECRET),
            key("sk", "LIVE", "acme", SECRET),
            key("sk", "live", "", SECRET),
            key("sk", "live", "Acme", SECRET),
            key("sk", "live", "ac-me", SECRET),
            key("sk", "live", "abcdefghij123", SECRET),
            key("sk", "live", "acme", &SECRET[1..]),
            key("sk", "live", "acme", &long_secret),
            key("sk", "live", "acme", "0123456789abcdefghijABCDEFGHIJz-"),
            key("sk", "live", "acme", "0123456789abcdefghijABCDEFGHIJz "),
            key("sk", "live", "ac_me", SECRET),
            format!("sk_live_acme_{SECRET}_"),
            format!("_sk_live_acme_{SECRET}"),
            format!("sk__live_acme_{SECRET}"),
            format!("sk_live_acme__{}", &SECRET[1..]),
            key("sk", "live", "acmé", &SECRET[1..]),
            key("sk", "live", "acme", "0123456789abcdefghijABCDEFGHIJé"),
            format!(" sk_live_acme_{}", &SECRET[1..]),
            "x".repeat(1 << 20),
        ];
        for k in &bad {
            assert_eq!(parse(k), Err(KeyError::Malformed), "{k:?}");
        }
    }

    #[test]
    fn generated_keys_parse_and_hash() {
        for kind in [KeyKind::Secret, KeyKind::Public] {
            for live in [true, false] {
                let (k, h) = generate(kind, live, "acme42").unwrap();
                let p = parse(&k).unwrap();
                assert_eq!((p.kind, p.live, p.app_prefix), (kind, live, "acme42"));
                assert_eq!(h, sha256_hex(&k));
                assert_eq!(decode_sha256_hex(&h), Some(sha256(&k)));
            }
        }
    }

    #[test]
    fn generate_rejects_bad_prefixes() {
        for p in ["", "ABC", "a_b", "abcdefghij123", "é"] {
            assert_eq!(
                generate(KeyKind::Secret, true, p),
                Err(KeyError::Malformed),
                "{p:?}"
            );
        }
    }

    #[test]
    fn base62_sampling_rejects_biased_bytes() {
        // Bytes 248..=255 would map to 0..=7 under a plain `% 62` and favour those
        // symbols; they must be skipped, not reduced.
        let mut out = String::new();
        assert_eq!(
            push_base62(&[248, 0, 255, 61, 62, 247, 250], 10, &mut out),
            4
        );
        assert_eq!(out, "0z0z");
        let mut out = String::new();
        assert_eq!(push_base62(&[1, 2, 3], 2, &mut out), 2);
        assert_eq!(out, "12");
        let mut out = String::new();
        assert_eq!(push_base62(&[248; 64], 32, &mut out), 0);
        // Every accepted byte value maps to each symbol exactly four times.
        let all: Vec<u8> = (0..=255).collect();
        let mut out = String::new();
        assert_eq!(push_base62(&all, usize::MAX, &mut out), 248);
        for &c in BASE62 {
            assert_eq!(out.bytes().filter(|&b| b == c).count(), 4);
        }
    }

    #[test]
    fn generated_secrets_cover_the_alphabet() {
        // 200 secrets × 32 chars = 6400 draws over 62 symbols (≈103 each): a coverage
        // and gross-skew check; uniformity itself is the test above.
        let mut counts = [0u32; 62];
        for _ in 0..200 {
            let (k, _) = generate(KeyKind::Secret, false, "t").unwrap();
            for b in parse(&k).unwrap().secret.bytes() {
                let i = BASE62.iter().position(|&c| c == b).unwrap();
                counts[i] += 1;
            }
        }
        assert!(
            counts.iter().all(|&c| (40..=200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn sha256_hex_known_answer() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn decodes_only_lowercase_hex_of_the_right_length() {
        let h = sha256_hex("abc");
        assert!(decode_sha256_hex(&h).is_some());
        assert!(decode_sha256_hex(&h.to_uppercase()).is_none());
        assert!(decode_sha256_hex(&h[1..]).is_none());
        assert!(decode_sha256_hex(&format!("{h}0")).is_none());
        assert!(decode_sha256_hex(&h.replacen('b', "g", 1)).is_none());
        assert!(decode_sha256_hex("").is_none());
    }
}
