//! API keys as a client presents them: the strict format parser
//! (`filters/src/apikey/format.rs`), extraction from `Authorization: Bearer` and
//! `x-api-key` (`apikey/headers.rs`), and the key store's verification (`apikey/store.rs`).
//!
//! Input: 1 mode byte, then the payload.
//!
//! Properties (all: no panic):
//! - a string that parses starts with `pk_` or `sk_` (its kind), is 42–53 bytes, and is
//!   exactly `{kind}_{live|test}_{prefix}_{secret}` of the parts returned, with a 1–12
//!   `[a-z0-9]` prefix and a 32-character base62 secret;
//! - a store holding one generated key accepts only that exact key;
//! - `generate` with a prefix taken from the input succeeds iff the prefix is valid, and
//!   what it returns parses back to the same kind, environment and prefix, with its hash;
//! - `from_headers` on the payload as `Authorization` and/or `x-api-key` never panics; a
//!   key it returns from `Authorization` alone looks like a key;
//! - a connection's credential memo (`proxy/src/credential_memo.rs`, one memo kept across
//!   inputs, so each is a repeat or a change) reads every `Authorization` value exactly
//!   as the bearer parser does, asked once or twice, with the token's SHA-256.
#![no_main]

use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use tollgate_filters::apikey::{
    API_KEY_HEADER, KeyKind, KeyStore, MAX_KEY_LEN, MIN_KEY_LEN, SECRET_LEN, from_headers,
    generate, looks_like_key, parse, sha256, sha256_hex,
};
use tollgate_filters::bearer;
use tollgate_proxy::fuzzing::CredentialMemo;
use tollgate_routing::ApiKeySpec;

const NOW: i64 = 1_800_000_000;

static MEMO: LazyLock<CredentialMemo> = LazyLock::new(CredentialMemo::default);

static STORE: LazyLock<(String, KeyStore)> = LazyLock::new(|| {
    let (key, sha256) = generate(KeyKind::Secret, true, "fuzz").expect("generate");
    let spec = ApiKeySpec {
        key_id: "k1".into(),
        app: "app".into(),
        kind: KeyKind::Secret,
        sha256,
        scopes: Vec::new(),
        expires_at: None,
        allowed_origins: Vec::new(),
    };
    let store = KeyStore::build(&[spec]).expect("store");
    assert!(store.verify(&key, "app", None, NOW).is_ok());
    (key, store)
});

fn valid_prefix(p: &str) -> bool {
    (1..=12).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(payload);

    if let Ok(p) = parse(&text) {
        let tag = match p.kind {
            KeyKind::Secret => "sk",
            KeyKind::Public => "pk",
        };
        assert!(text.starts_with("sk_") || text.starts_with("pk_"));
        assert!(text.starts_with(tag));
        assert!((MIN_KEY_LEN..=MAX_KEY_LEN).contains(&text.len()));
        let env = if p.live { "live" } else { "test" };
        assert_eq!(format!("{tag}_{env}_{}_{}", p.app_prefix, p.secret), text);
        assert!(valid_prefix(p.app_prefix));
        assert_eq!(p.secret.len(), SECRET_LEN);
        assert!(p.secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(looks_like_key(&text));
    }

    let (key, store) = &*STORE;
    if store.verify(&text, "app", None, NOW).is_ok() {
        assert_eq!(&text, key);
    }

    match mode % 3 {
        0 => {
            let prefix: String = text.chars().take(13).collect();
            let kind = if mode & 4 == 0 {
                KeyKind::Secret
            } else {
                KeyKind::Public
            };
            let live = mode & 8 == 0;
            match generate(kind, live, &prefix) {
                Ok((k, hash)) => {
                    assert!(valid_prefix(&prefix));
                    let p = parse(&k).expect("generated key parses");
                    assert_eq!(
                        (p.kind, p.live, p.app_prefix),
                        (kind, live, prefix.as_str())
                    );
                    assert_eq!(hash, sha256_hex(&k));
                }
                Err(_) => assert!(!valid_prefix(&prefix)),
            }
        }
        1 => {
            let Ok(v) = HeaderValue::from_bytes(payload) else {
                return;
            };
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, v);
            if let Ok(Some(k)) = from_headers(&h) {
                assert!(looks_like_key(k));
                assert!(k.bytes().all(|b| b.is_ascii_graphic()));
            }
            let parsed = bearer::from_headers(&h);
            for _ in 0..2 {
                let memo = MEMO.bearer(&h);
                assert_eq!(
                    memo.as_ref().map(|b| b.as_ref().map(|b| b.token)),
                    parsed.as_ref().map(|t| *t)
                );
                if let Ok(Some(b)) = memo
                    && let Some(d) = b.digest
                {
                    assert_eq!(d, sha256(b.token));
                }
            }
        }
        _ => {
            // Both headers, the payload cut in two at its first NUL byte.
            let cut = payload
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(payload.len());
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&payload[..cut]) {
                h.append(AUTHORIZATION, v);
            }
            if let Ok(v) = HeaderValue::from_bytes(payload.get(cut + 1..).unwrap_or_default()) {
                h.append(API_KEY_HEADER, v);
            }
            if let Ok(Some(k)) = from_headers(&h) {
                let _ = store.verify(k, "app", Some("https://a.test"), NOW);
            }
        }
    }
});
