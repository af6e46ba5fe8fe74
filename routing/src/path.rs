//! Request path normalisation, done once before a path is matched or forwarded.
//!
//! A route that guards `/admin` must see every spelling an upstream would read as
//! `/admin`: `/x/../admin`, `/x/%2e%2e/admin`, `/./admin`, `//admin`. Following
//! RFC 3986 (§6.2.2 and §5.2.4) and Envoy's `normalize_path`, `merge_slashes` and
//! `path_with_escaped_slashes_action`, [`normalize`]:
//! - checks every `%XX` escape (a bad one, or an encoded NUL, is refused);
//! - decodes escapes of unreserved characters (`%2e` is `.`, `%41` is `A`) and
//!   upper-cases the hex of the others;
//! - refuses a raw `\` (browsers never send one; Windows-minded upstreams read it
//!   as `/`) and applies the [`EscapedSlashes`] policy to `%2F` and `%5C`;
//! - merges repeated slashes when asked;
//! - removes `.` and `..` segments, refusing a path that climbs above the root.
//!
//! Pure and allocation-free for paths that are already normal, which is nearly all.

use std::borrow::Cow;

/// What to do with `%2F` and `%5C` (encoded `/` and `\`) in a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Refuse the request (400): a segment that hides a separator is ambiguous.
    #[default]
    Reject,
    /// Forward unchanged; the escape stays part of its segment.
    Keep,
    /// Decode both to `/` before the other steps, so they separate segments.
    Decode,
}

/// How paths are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    /// Collapse `//` into `/`.
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// Why a path cannot be normalised; the client gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with `/`")]
    NotAbsolute,
    #[error("malformed percent-encoding in path")]
    BadEscape,
    #[error("encoded NUL in path")]
    EncodedNul,
    #[error("encoded slash in path")]
    EscapedSlash,
    #[error("backslash in path")]
    Backslash,
    #[error("path climbs above the root")]
    AboveRoot,
}

impl PathError {
    /// A short, bounded label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::BadEscape => "path_bad_escape",
            PathError::EncodedNul => "path_encoded_nul",
            PathError::EscapedSlash => "path_escaped_slash",
            PathError::Backslash => "path_backslash",
            PathError::AboveRoot => "path_above_root",
        }
    }
}

/// The normalised form of `path` (no query), borrowed when it is already normal.
///
/// `*` (the `OPTIONS *` target) is returned unchanged.
pub fn normalize(path: &str, policy: PathPolicy) -> Result<Cow<'_, str>, PathError> {
    if path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path.as_bytes(), policy) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path.as_bytes(), policy.escaped_slashes)?;
    let mut out = String::with_capacity(decoded.len());
    // Where each kept segment starts in `out`, for `..` to cut back to.
    let mut segments: Vec<usize> = Vec::new();
    let body = decoded.strip_prefix('/').unwrap_or(&decoded);
    let mut parts = body.split('/').peekable();
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match seg {
            "." => {
                if last {
                    out.push('/');
                }
            }
            ".." => {
                let Some(start) = segments.pop() else {
                    return Err(PathError::AboveRoot);
                };
                out.truncate(start);
                if last {
                    out.push('/');
                }
            }
            "" if policy.merge_slashes && !last => {}
            _ => {
                segments.push(out.len());
                out.push('/');
                out.push_str(seg);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// True when no step would change `path`: the fast path for ordinary requests.
fn is_normal(path: &[u8], policy: PathPolicy) -> bool {
    let mut prev_slash = false;
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' | b'\\' => return false,
            b'/' => {
                if prev_slash && policy.merge_slashes {
                    return false;
                }
                prev_slash = true;
            }
            b'.' if prev_slash => {
                // `/.` followed by end, `/` or `.` may be a dot segment.
                match path.get(i + 1) {
                    None | Some(b'/') | Some(b'.') => return false,
                    _ => prev_slash = false,
                }
            }
            _ => prev_slash = false,
        }
        i += 1;
    }
    true
}

/// Checks and decodes escapes: unreserved characters decoded, slashes by policy,
/// everything else kept with upper-case hex.
fn decode(path: &[u8], slashes: EscapedSlashes) -> Result<String, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'\\' {
            return Err(PathError::Backslash);
        }
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (hi, lo) = match (
            path.get(i + 1).copied().and_then(hex),
            path.get(i + 2).copied().and_then(hex),
        ) {
            (Some(hi), Some(lo)) => (hi, lo),
            _ => return Err(PathError::BadEscape),
        };
        let byte = hi << 4 | lo;
        match byte {
            0 => return Err(PathError::EncodedNul),
            b'/' | b'\\' => match slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => out.push(b'/'),
                EscapedSlashes::Keep => push_escape(&mut out, byte),
            },
            _ if is_unreserved(byte) => out.push(byte),
            _ => push_escape(&mut out, byte),
        }
        i += 3;
    }
    // Input was a `&str` and only ASCII bytes were added or removed.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

fn push_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'%');
    out.push(HEX[usize::from(byte >> 4)]);
    out.push(HEX[usize::from(byte & 0x0f)]);
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize(p, PathPolicy::default()).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b/", "/a.b/c..d/.e", "/v1/app/x?y", "*"] {
            assert!(
                matches!(normalize(p, PathPolicy::default()), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(norm("/x/../admin").unwrap(), "/admin");
        assert_eq!(norm("/./admin").unwrap(), "/admin");
        assert_eq!(norm("/a/b/./../c").unwrap(), "/a/c");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/..a/b.").unwrap(), "/..a/b.");
    }

    #[test]
    fn encoded_dots_are_dots() {
        assert_eq!(norm("/x/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/x/%2E./admin").unwrap(), "/admin");
        assert_eq!(norm("/%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/%61dmin").unwrap(), "/admin");
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(norm("//admin").unwrap(), "/admin");
        assert_eq!(norm("/a///b//").unwrap(), "/a/b/");
        let keep = PathPolicy {
            merge_slashes: false,
            ..PathPolicy::default()
        };
        assert_eq!(normalize("//admin", keep).unwrap(), "//admin");
    }

    #[test]
    fn climbing_above_root_is_refused() {
        assert_eq!(norm("/.."), Err(PathError::AboveRoot));
        assert_eq!(norm("/v1/alpha/../../../admin"), Err(PathError::AboveRoot));
        assert_eq!(norm("/%2e%2e/x"), Err(PathError::AboveRoot));
        assert_eq!(norm("/v1/alpha/../../admin").unwrap(), "/admin");
    }

    #[test]
    fn escapes_are_checked_and_canonical() {
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%2"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%00b"), Err(PathError::EncodedNul));
        assert_eq!(norm("/a%3fb%c3%a9").unwrap(), "/a%3Fb%C3%A9");
        assert_eq!(norm("x"), Err(PathError::NotAbsolute));
        for policy in [
            EscapedSlashes::Reject,
            EscapedSlashes::Keep,
            EscapedSlashes::Decode,
        ] {
            let p = PathPolicy {
                merge_slashes: true,
                escaped_slashes: policy,
            };
            assert_eq!(normalize("/x/..\\admin", p), Err(PathError::Backslash));
        }
    }

    #[test]
    fn escaped_slashes_follow_the_policy() {
        assert_eq!(norm("/a%2Fb"), Err(PathError::EscapedSlash));
        assert_eq!(norm("/a%5cb"), Err(PathError::EscapedSlash));
        let with = |escaped_slashes| PathPolicy {
            merge_slashes: true,
            escaped_slashes,
        };
        let keep = with(EscapedSlashes::Keep);
        assert_eq!(normalize("/x/..%2fadmin", keep).unwrap(), "/x/..%2Fadmin");
        let decode = with(EscapedSlashes::Decode);
        assert_eq!(normalize("/x/..%2fadmin", decode).unwrap(), "/admin");
        assert_eq!(
            normalize("/x%2f..%2f..%2fadmin", decode),
            Err(PathError::AboveRoot)
        );
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in [
            "/x/../a//b/./c/..",
            "/%2e%2e%2fx",
            "/a%2fb/../c",
            "/a/%7e/b%20",
        ] {
            for slashes in [EscapedSlashes::Keep, EscapedSlashes::Decode] {
                let policy = PathPolicy {
                    merge_slashes: true,
                    escaped_slashes: slashes,
                };
                if let Ok(once) = normalize(p, policy) {
                    let twice = normalize(&once, policy).unwrap();
                    assert_eq!(once, twice, "{p} {slashes:?}");
                }
            }
        }
    }
}
