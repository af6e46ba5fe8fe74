//! Hostname normalisation and checks shared by routes and certificates.

use std::borrow::Cow;

/// Strips a port and a trailing dot and lowercases, allocating only when needed.
pub fn normalize(authority: &str) -> Cow<'_, str> {
    let host = strip_port(authority);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: "[::1]:443" -> "::1"
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The wildcard name that would cover `host` (`a.b.example` -> `*.b.example`), if any.
pub fn wildcard_parent(host: &str) -> Option<&str> {
    let dot = host.find('.')?;
    let parent = &host[dot + 1..];
    parent.contains('.').then_some(parent)
}

/// Checks a configured hostname: DNS labels, optionally one leading `*.` label.
pub fn check_pattern(name: &str) -> Result<(), String> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    if bare.is_empty() || bare.len() > 253 {
        return Err("hostname must be 1 to 253 characters".into());
    }
    if name.starts_with("*.") && !bare.contains('.') {
        return Err("a wildcard needs at least two labels after `*.`".into());
    }
    for label in bare.split('.') {
        let ok_len = !label.is_empty() && label.len() <= 63;
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_len || !ok_chars || label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "invalid label `{label}` (lowercase letters, digits and inner hyphens only)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_ports_case_and_dots() {
        assert_eq!(normalize("API.Example.com:443"), "api.example.com");
        assert_eq!(normalize("api.example.com."), "api.example.com");
        assert_eq!(normalize("[::1]:8443"), "::1");
        assert!(matches!(normalize("a.example"), Cow::Borrowed(_)));
    }

    #[test]
    fn wildcard_parent_needs_two_labels() {
        assert_eq!(wildcard_parent("a.tenant.example"), Some("tenant.example"));
        assert_eq!(wildcard_parent("tenant.example"), None);
        assert_eq!(wildcard_parent("localhost"), None);
    }

    #[test]
    fn patterns_are_checked() {
        assert!(check_pattern("*.tenant.example").is_ok());
        assert!(check_pattern("api.example.com").is_ok());
        assert!(check_pattern("*.com").is_err());
        assert!(check_pattern("Bad.example").is_err());
        assert!(check_pattern("a..b").is_err());
        assert!(check_pattern("-a.example").is_err());
        assert!(check_pattern("a.*.example").is_err());
    }
}
