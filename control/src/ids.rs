//! Identifiers: generated ids for routes, certificates and keys, and the checks
//! applied to ids a client chooses.
//!
//! Generated ids are a prefix and 16 base62 characters from the OS CSPRNG (the
//! API-key generator's secret alphabet), about 95 bits: collisions are not a concern
//! and the store's optimistic concurrency would refuse one anyway.

use crate::commands::CommandError;
use tollgate_filters::apikey;

/// Characters of randomness in a generated id.
const RANDOM_LEN: usize = 16;
/// Longest id a client may choose.
pub const MAX_ID_LEN: usize = 64;

/// A fresh id such as `r_4fQ9…`; `prefix` includes the underscore.
///
/// Fails only when the operating system's random number generator does.
pub fn generate(prefix: &str) -> Result<String, CommandError> {
    let random = apikey::random_base62(RANDOM_LEN)
        .map_err(|e| CommandError::Store(format!("generating an id: {e:?}")))?;
    Ok(format!("{prefix}{random}"))
}

/// Checks an id chosen by a client (route, certificate, key, upstream, issuer):
/// 1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit, so it is safe in
/// URLs, logs and metric labels.
pub fn check(kind: &str, id: &str) -> Result<(), String> {
    let b = id.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_ID_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} `{id}`: must be 1-{MAX_ID_LEN} of letters, digits, `.`, `_`, `-`, starting with a letter or digit"
        ))
    }
}

/// A hostname as stored: trimmed, lowercase, without a trailing dot.
pub fn normalize_hostname(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_valid() {
        let a = generate("r_").unwrap();
        let b = generate("r_").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("r_") && a.len() == 2 + RANDOM_LEN);
        check("route id", &a).unwrap();
    }

    #[test]
    fn client_ids_are_checked() {
        check("x", "a.b-c_1").unwrap();
        for bad in ["", "-a", "a/b", "a b", &"a".repeat(65)] {
            assert!(check("x", bad).is_err(), "{bad:?}");
        }
    }
}
