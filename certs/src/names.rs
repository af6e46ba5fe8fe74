//! Hostname normalisation and wildcard matching rules.
//!
//! Names are compared lowercase with any trailing dot removed. A wildcard
//! `*.<parent>` covers exactly one extra label: `a.t.example` but neither
//! `t.example` nor `a.b.t.example`.

use std::borrow::Cow;

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Normalises a hostname or `*.` wildcard; `None` if it is not one.
pub(crate) fn normalize(name: &str) -> Option<String> {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    is_valid(&name).then_some(name)
}

fn is_valid(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let rest = match name.strip_prefix("*.") {
        Some(rest) => rest,
        None => name,
    };
    !rest.is_empty()
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// The parent of a wildcard pattern: `*.t.example` gives `t.example`.
pub(crate) fn wildcard_parent(pattern: &str) -> Option<&str> {
    pattern.strip_prefix("*.").filter(|p| !p.is_empty())
}

/// The parent a wildcard needs in order to cover `name`: `a.t.example` gives `t.example`.
///
/// `None` when `name` has a single label or its first label is empty or a wildcard.
pub(crate) fn parent_for_wildcard(name: &str) -> Option<&str> {
    let (first, parent) = name.split_once('.')?;
    if first.is_empty() || first.contains('*') || parent.is_empty() {
        return None;
    }
    Some(parent)
}

/// Whether certificate name `pattern` covers `name` (both normalised).
pub(crate) fn covers(pattern: &str, name: &str) -> bool {
    if pattern == name {
        return true;
    }
    match (wildcard_parent(pattern), parent_for_wildcard(name)) {
        (Some(want), Some(have)) => want == have,
        _ => false,
    }
}

/// Lookup key for an SNI value: lowercase, trailing dot dropped.
///
/// Borrows when the value is already lowercase, so the common case does not allocate.
pub(crate) fn sni_key(sni: &str) -> Cow<'_, str> {
    let sni = sni.strip_suffix('.').unwrap_or(sni);
    if sni.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(sni.to_ascii_lowercase())
    } else {
        Cow::Borrowed(sni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases_and_drops_trailing_dot() {
        assert_eq!(normalize("A.Example.").as_deref(), Some("a.example"));
        assert_eq!(normalize(" *.T.example ").as_deref(), Some("*.t.example"));
        assert_eq!(normalize("localhost").as_deref(), Some("localhost"));
    }

    #[test]
    fn normalize_rejects_non_hostnames() {
        for bad in [
            "",
            ".",
            "*",
            "*.",
            "a..b",
            ".a",
            "a b",
            "a*.example",
            "*.*.example",
            "a.*.example",
            "ex@mple.com",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
        assert_eq!(normalize(&"a".repeat(64)), None);
    }

    #[test]
    fn wildcard_covers_exactly_one_label() {
        assert!(covers("*.tenant.example", "a.tenant.example"));
        assert!(!covers("*.tenant.example", "a.b.tenant.example"));
        assert!(!covers("*.tenant.example", "tenant.example"));
        assert!(!covers("*.tenant.example", "a.other.example"));
    }

    #[test]
    fn exact_covers_only_itself() {
        assert!(covers("a.example", "a.example"));
        assert!(!covers("a.example", "b.example"));
        assert!(covers("*.t.example", "*.t.example"));
        assert!(!covers("a.t.example", "*.t.example"));
    }

    #[test]
    fn wildcard_name_is_not_covered_by_broader_wildcard() {
        assert!(!covers("*.example", "*.t.example"));
    }

    #[test]
    fn parent_for_wildcard_needs_two_labels() {
        assert_eq!(parent_for_wildcard("a.t.example"), Some("t.example"));
        assert_eq!(parent_for_wildcard("localhost"), None);
        assert_eq!(parent_for_wildcard(".example"), None);
        assert_eq!(parent_for_wildcard("*.example"), None);
    }

    #[test]
    fn sni_key_borrows_when_lowercase() {
        assert!(matches!(sni_key("a.example"), Cow::Borrowed("a.example")));
        assert!(matches!(sni_key("a.example."), Cow::Borrowed("a.example")));
        assert_eq!(sni_key("A.Example."), "a.example");
        assert!(matches!(sni_key("A.Example"), Cow::Owned(_)));
    }
}
