//! Redirects answered at the edge, sans I/O: the plaintext → HTTPS redirect
//! ([`HttpsRedirect`]) and a route's host and path redirect ([`RouteRedirect`]).
//!
//! Everything fixed by config (status, scheme and authority, the new prefix, a
//! fallback Location) is compiled once; a request costs one buffer, which becomes the
//! `Location` value without a copy. The request's path and query are copied as the
//! client sent them (already percent-encoded), so nothing is escaped twice, and every
//! Location is parsed as an [`http::Uri`] before it is sent.

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, StatusCode, Uri};
use tollgate_routing::gateway::REDIRECT_STATUSES;
use tollgate_routing::{HttpsRedirectSpec, RedirectSpec};

/// Why a redirect's config cannot be compiled (validation refuses all of these first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("{0} is not a redirect status (301, 302, 307 or 308)")]
    Status(u16),
    #[error("`{0}` is not a valid redirect target")]
    Target(String),
}

fn status(code: u16) -> Result<StatusCode, RedirectError> {
    StatusCode::from_u16(code)
        .ok()
        .filter(|_| REDIRECT_STATUSES.contains(&code))
        .ok_or(RedirectError::Status(code))
}

/// `bytes` as a Location value, when it parses as a URI reference we can send.
fn location(bytes: Bytes) -> Option<HeaderValue> {
    Uri::from_maybe_shared(bytes.clone()).ok()?;
    HeaderValue::from_maybe_shared(bytes).ok()
}

/// Plaintext requests sent to the same host, path and query over HTTPS.
#[derive(Debug, Clone)]
pub struct HttpsRedirect {
    status: StatusCode,
    /// `:<port>`, or empty for 443.
    port: Box<str>,
}

impl HttpsRedirect {
    pub fn new(spec: &HttpsRedirectSpec) -> Result<Self, RedirectError> {
        let port = match spec.https_port {
            None | Some(443) => String::new(),
            Some(port) => format!(":{port}"),
        };
        Ok(HttpsRedirect {
            status: status(spec.status)?,
            port: port.into(),
        })
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The Location for a request to `authority` (the client's `Host`: its port is
    /// replaced) for `path_and_query`; `None` when the host is not a plain name or
    /// address, which could turn the redirect into one to another site.
    pub fn location(&self, authority: &str, path_and_query: &str) -> Option<HeaderValue> {
        let host = tollgate_routing::host::normalize(authority);
        let plain = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !plain {
            return None;
        }
        let path = if path_and_query.starts_with('/') {
            path_and_query
        } else {
            "/"
        };
        const SCHEME: &str = "https://";
        let mut out =
            String::with_capacity(SCHEME.len() + host.len() + self.port.len() + path.len());
        out.push_str(SCHEME);
        out.push_str(&host);
        out.push_str(&self.port);
        out.push_str(path);
        location(Bytes::from(out))
    }
}

/// A route answered with a redirect: its prefix replaced, its host changed, or both.
#[derive(Debug, Clone)]
pub struct RouteRedirect {
    status: StatusCode,
    /// `http://authority` and `https://authority`, chosen by the request's scheme;
    /// `None` keeps the request's host (the Location is then a path).
    origins: Option<[Box<str>; 2]>,
    /// The route's prefix, which `prefix` replaces.
    route_prefix: Box<str>,
    prefix: Option<Box<str>>,
    keep_query: bool,
    /// Sent when a request's Location would not parse: the target with no path of
    /// its own, per scheme.
    fallback: [HeaderValue; 2],
}

impl RouteRedirect {
    /// Compiles `spec` for a route matched on `route_prefix`.
    pub fn new(spec: &RedirectSpec, route_prefix: &str) -> Result<Self, RedirectError> {
        let target = |what: &str| RedirectError::Target(what.to_string());
        let origins: Option<[Box<str>; 2]> = match &spec.host {
            Some(host) => {
                let authority = Authority::try_from(host.as_str()).map_err(|_| target(host))?;
                if authority.as_str().contains('@') {
                    return Err(target(host));
                }
                Some([
                    format!("http://{authority}").into(),
                    format!("https://{authority}").into(),
                ])
            }
            None => None,
        };
        if let Some(p) = &spec.path_prefix {
            let parsed = PathAndQuery::try_from(p.as_str()).map_err(|_| target(p))?;
            if !p.starts_with('/') || parsed.query().is_some() {
                return Err(target(p));
            }
        }
        let prefix: Option<Box<str>> = spec.path_prefix.as_deref().map(Into::into);
        let fallback_path = prefix.as_deref().unwrap_or("/");
        let fallback = |origin: Option<&str>| {
            let text = format!("{}{fallback_path}", origin.unwrap_or(""));
            location(Bytes::from(text.clone())).ok_or_else(|| target(&text))
        };
        let fallback = match &origins {
            Some([http, https]) => [fallback(Some(http))?, fallback(Some(https))?],
            None => {
                let v = fallback(None)?;
                [v.clone(), v]
            }
        };
        Ok(RouteRedirect {
            status: status(spec.status)?,
            origins,
            route_prefix: route_prefix.into(),
            prefix,
            keep_query: spec.keep_query,
            fallback,
        })
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The Location for a request on the route: `path` is the normalised request path
    /// the route matched (no query), `query` the client's.
    pub fn location(&self, tls: bool, path: &str, query: Option<&str>) -> HeaderValue {
        let origin = self.origins.as_ref().map_or("", |o| &o[usize::from(tls)]);
        let query = query.filter(|q| self.keep_query && !q.is_empty());
        let query_len = query.map_or(0, |q| q.len() + 1);
        let prefix = self.prefix.as_deref().unwrap_or("");
        let mut out =
            String::with_capacity(origin.len() + prefix.len() + path.len() + query_len + 1);
        out.push_str(origin);
        match (&self.prefix, path.strip_prefix(&*self.route_prefix)) {
            (Some(prefix), Some(rest)) => join(&mut out, prefix, rest),
            (Some(prefix), None) => out.push_str(prefix),
            (None, _) => out.push_str(path),
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        location(Bytes::from(out)).unwrap_or_else(|| self.fallback[usize::from(tls)].clone())
    }
}

/// `prefix` then `rest` with exactly one `/` between them when both have a part
/// (as the route's own `rewrite_prefix` joins them).
fn join(out: &mut String, prefix: &str, rest: &str) {
    out.push_str(prefix);
    match (prefix.ends_with('/'), rest.starts_with('/')) {
        (true, true) => out.push_str(&rest[1..]),
        (false, false) if !rest.is_empty() => {
            out.push('/');
            out.push_str(rest);
        }
        _ => out.push_str(rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn https(status: u16, port: Option<u16>) -> HttpsRedirect {
        HttpsRedirect::new(&HttpsRedirectSpec {
            status,
            https_port: port,
        })
        .unwrap()
    }

    fn route(host: Option<&str>, prefix: Option<&str>, keep_query: bool) -> RedirectSpec {
        RedirectSpec {
            host: host.map(String::from),
            path_prefix: prefix.map(String::from),
            status: 301,
            keep_query,
        }
    }

    #[test]
    fn https_keeps_host_path_and_query_and_replaces_the_port() {
        let r = https(308, None);
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        let cases = [
            (
                "web.test",
                "/a/b?x=1&y=%20",
                "https://web.test/a/b?x=1&y=%20",
            ),
            ("Web.Test:8080", "/", "https://web.test/"),
            ("web.test.", "/%7Euser", "https://web.test/%7Euser"),
            ("web.test", "", "https://web.test/"),
        ];
        for (host, pq, want) in cases {
            assert_eq!(r.location(host, pq).unwrap(), want, "{host} {pq}");
        }
        let r = https(301, Some(8443));
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            r.location("web.test:80", "/x").unwrap(),
            "https://web.test:8443/x"
        );
        assert_eq!(
            https(308, Some(443)).location("a.test", "/").unwrap(),
            "https://a.test/"
        );
    }

    #[test]
    fn https_refuses_hosts_that_are_not_plain_names() {
        let r = https(308, None);
        for host in [
            "evil.test/x?.web.test",
            "a@evil.test",
            "",
            "[::1]:80",
            "a b.test",
        ] {
            assert_eq!(r.location(host, "/"), None, "{host}");
        }
        assert!(
            HttpsRedirect::new(&HttpsRedirectSpec {
                status: 200,
                https_port: None
            })
            .is_err()
        );
    }

    #[test]
    fn route_redirect_replaces_the_prefix_like_a_rewrite() {
        let r =
            RouteRedirect::new(&route(Some("example.test"), Some("/new"), true), "/old").unwrap();
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        let cases = [
            (false, "/old", None, "http://example.test/new"),
            (
                true,
                "/old/a/b",
                Some("q=1"),
                "https://example.test/new/a/b?q=1",
            ),
            (false, "/old/", Some(""), "http://example.test/new/"),
            (false, "/old/%2F", None, "http://example.test/new/%2F"),
        ];
        for (tls, path, query, want) in cases {
            assert_eq!(r.location(tls, path, query), want, "{path}");
        }
        let slash = RouteRedirect::new(&route(None, Some("/v2/"), true), "/").unwrap();
        assert_eq!(slash.location(false, "/x", Some("a=b")), "/v2/x?a=b");
        assert_eq!(slash.location(true, "/", None), "/v2/");
    }

    #[test]
    fn host_only_redirect_keeps_the_path_and_may_drop_the_query() {
        let r = RouteRedirect::new(&route(Some("example.test:8443"), None, false), "/").unwrap();
        assert_eq!(
            r.location(true, "/a%20b/c", Some("secret=1")),
            "https://example.test:8443/a%20b/c"
        );
        let keep = RouteRedirect::new(&route(Some("example.test"), None, true), "/").unwrap();
        assert_eq!(
            keep.location(false, "/", Some("x")),
            "http://example.test/?x"
        );
    }

    #[test]
    fn a_location_that_does_not_parse_falls_back_to_the_target() {
        let r =
            RouteRedirect::new(&route(Some("example.test"), Some("/new"), true), "/old").unwrap();
        // A path the proxy would never hand over (not a URI path): the target itself.
        assert_eq!(
            r.location(true, "/old/a b", None),
            "https://example.test/new"
        );
    }

    #[test]
    fn bad_targets_do_not_compile() {
        for (host, prefix) in [
            (Some("user@example.test"), None),
            (Some("exa mple.test"), None),
            (None, Some("no-slash")),
            (None, Some("/a?b")),
            (None, Some("/a b")),
        ] {
            assert!(
                RouteRedirect::new(&route(host, prefix, true), "/").is_err(),
                "{host:?} {prefix:?}"
            );
        }
    }
}
