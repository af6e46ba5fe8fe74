//! Request path normalisation before matching and forwarding
//! (`routing/src/path.rs`, `tollgate_routing::path::normalize`) on any path and policy.
//!
//! Input: 1 policy byte (bit 0 `merge_slashes`, bits 1–2 the `%2F`/`%5C` policy), then
//! the path (lossy UTF-8).
//!
//! Properties of an Ok result (besides no panic):
//! - it is `*` (only for `*`), or starts with `/`;
//! - no segment is `.` or `..` (so no `/./`, `/../`, trailing `/.` or `/..`);
//! - no `//` when `merge_slashes`;
//! - every escape left is `%XX` with upper-case hex, not of an unreserved character nor
//!   NUL, and not of `/` or `\` unless the policy is `keep`;
//! - normalising it again returns it unchanged (idempotent);
//! - an input returned borrowed is returned as is;
//! - a path the `reject` policy accepts normalises the same under `keep` and `decode`.
//!
//! Errors: a path not starting with `/` (other than `*`) is `NotAbsolute`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;
use tollgate_routing::path::normalize;
use tollgate_routing::{EscapedSlashes, PathError, PathPolicy};

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check_output(input: &str, out: &str, policy: PathPolicy) {
    if out == "*" {
        assert_eq!(input, "*");
        return;
    }
    assert!(out.starts_with('/'), "{input:?} -> {out:?}");
    for seg in out.split('/').skip(1) {
        assert!(
            seg != "." && seg != "..",
            "{input:?} -> {out:?} keeps a dot segment"
        );
    }
    if policy.merge_slashes {
        assert!(!out.contains("//"), "{input:?} -> {out:?} keeps `//`");
    }
    assert!(!out.contains('\\'), "{input:?} -> {out:?} keeps a backslash");
    let b = out.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                panic!("{input:?} -> {out:?}: bad or lower-case escape at {i}");
            };
            let c = hi << 4 | lo;
            assert_ne!(c, 0, "{input:?} -> {out:?}: encoded NUL");
            assert!(
                !(c.is_ascii_alphanumeric() || b"-._~".contains(&c)),
                "{input:?} -> {out:?}: escaped unreserved {c:#x}"
            );
            if c == b'/' || c == b'\\' {
                assert_eq!(
                    policy.escaped_slashes,
                    EscapedSlashes::Keep,
                    "{input:?} -> {out:?}"
                );
            }
            i += 3;
        } else {
            i += 1;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&bits, rest)) = data.split_first() else {
        return;
    };
    let policy = PathPolicy {
        merge_slashes: bits & 1 != 0,
        escaped_slashes: match (bits >> 1) % 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Keep,
            _ => EscapedSlashes::Decode,
        },
    };
    let path = String::from_utf8_lossy(rest);
    let result = normalize(&path, policy);
    match &result {
        Ok(out) => {
            if let Cow::Borrowed(b) = out {
                assert_eq!(*b, &*path);
            }
            check_output(&path, out, policy);
            let again = normalize(out, policy);
            assert_eq!(
                again.as_deref(),
                Ok(&**out),
                "not idempotent: {path:?} -> {out:?}"
            );
        }
        Err(PathError::NotAbsolute) => assert!(path != "*" && !path.starts_with('/')),
        Err(_) => assert!(path.starts_with('/')),
    }
    if policy.escaped_slashes == EscapedSlashes::Reject
        && let Ok(out) = &result
    {
        for other in [EscapedSlashes::Keep, EscapedSlashes::Decode] {
            let p = PathPolicy {
                escaped_slashes: other,
                ..policy
            };
            assert_eq!(
                normalize(&path, p).as_deref(),
                Ok(&**out),
                "{path:?} under {other:?}"
            );
        }
    }
});
