//! Header rules at the proxy boundary: hop-by-hop removal, `x-forwarded-*`, request ids,
//! and the head checks the HTTP parsers leave to us.

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_APP_ID: HeaderName = HeaderName::from_static("x-tollgate-app-id");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers that describe one connection and never cross the proxy (RFC 9110 §7.6.1),
/// with `http2-settings`, which belongs to an h2c upgrade we never pass on.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Removes hop-by-hop headers and those the `Connection` header lists.
///
/// `te: trailers` survives because gRPC needs it end to end; an upgrade keeps
/// `connection` and `upgrade` so the upstream sees the handshake. One pass over the
/// names finds which hop-by-hop headers are there, and only those are removed: most
/// messages carry none, and most of the rest only `connection` (an HTTP/1.1 upstream's
/// `Connection: keep-alive`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let present = hop_by_hop_present(headers);
    if present == 0 {
        return;
    }
    // Bits of the fixed names the `Connection` header lists: removed whatever else holds.
    let mut listed_fixed = 0u16;
    let mut listed: Vec<HeaderName> = Vec::new();
    if present & bit(&header::CONNECTION) != 0 {
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|t| !(t.is_empty() || upgrade && t.eq_ignore_ascii_case("upgrade")))
        {
            match hop_by_hop_index_any_case(token) {
                Some(i) => listed_fixed |= 1 << i,
                // A name the message does not carry (`close` above all) costs no lookup.
                None if headers
                    .keys()
                    .any(|k| k.as_str().eq_ignore_ascii_case(token)) =>
                {
                    listed.extend(HeaderName::from_bytes(token.as_bytes()).ok());
                }
                None => {}
            }
        }
    }
    for name in listed {
        headers.remove(name);
    }
    let keep_te = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) == 0 {
            continue;
        }
        let keep = listed_fixed & (1 << i) == 0
            && ((keep_te && name == header::TE)
                || (upgrade && (name == header::CONNECTION || name == header::UPGRADE)));
        if !keep {
            headers.remove(name);
        }
    }
}

/// Which of [`HOP_BY_HOP`] the message carries, as bits by index.
fn hop_by_hop_present(headers: &HeaderMap) -> u16 {
    headers
        .keys()
        .filter_map(|k| hop_by_hop_index(k.as_str()))
        .fold(0, |bits, i| bits | 1 << i)
}

/// The index in [`HOP_BY_HOP`] of a lowercase name: a match on the string, which
/// compiles to a switch on its length, not a comparison with each name.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "transfer-encoding" => 6,
        "upgrade" => 7,
        "http2-settings" => 8,
        _ => return None,
    })
}

/// [`hop_by_hop_index`] of a name in any case (a `Connection` token), lowered on the
/// stack: no name longer than the longest hop-by-hop one can match.
fn hop_by_hop_index_any_case(token: &str) -> Option<usize> {
    let mut buf = [0u8; 24];
    let lower = buf.get_mut(..token.len())?;
    lower.copy_from_slice(token.as_bytes());
    lower.make_ascii_lowercase();
    hop_by_hop_index(std::str::from_utf8(lower).ok()?)
}

/// The bit of one of [`HOP_BY_HOP`].
fn bit(name: &HeaderName) -> u16 {
    hop_by_hop_index(name.as_str()).map_or(0, |i| 1 << i)
}

/// Sets `x-forwarded-for/-proto/-host`; client-sent values are replaced unless trusted.
/// The client's `forwarded` (RFC 7239) and `x-real-ip` are removed unless trusted.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    tls: bool,
    host: Option<&HeaderValue>,
    trust_client: bool,
) {
    // A scan of the names is cheaper than two hashed removes of what is rarely there.
    if !trust_client
        && headers
            .keys()
            .any(|k| matches!(k.as_str(), "forwarded" | "x-real-ip"))
    {
        headers.remove(&FORWARDED);
        headers.remove(&X_REAL_IP);
    }
    let ip = client_ip.clone();
    let prior = trust_client
        .then(|| headers.get(&X_FORWARDED_FOR).cloned())
        .flatten();
    let xff = match prior {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or(ip)
        }
        None => ip,
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    if !trust_client || !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if let Some(host) = host
        && (!trust_client || !headers.contains_key(&X_FORWARDED_HOST))
    {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
}

/// The client's request id when it is sane (1-128 visible ASCII), else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    new_request_id()
}

/// 128 random bits as 32 lowercase hex digits, marked never-indexed for HPACK.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut out = [0u8; 32];
    for slot in out.iter_mut().rev() {
        *slot = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    let mut id = HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"));
    // Never repeats, so HTTP/2 should not spend HPACK table space indexing it.
    id.set_sensitive(true);
    id
}

/// Bytes of all header names and values, as counted against the header limit.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum()
}

/// Whether the request is a WebSocket upgrade, the only HTTP/1.1 upgrade passed on.
///
/// Any other `Upgrade` (`h2c` above all: a 101 would tunnel past routing and auth) makes
/// no upgrade: the request goes on as a plain one, its upgrade headers stripped.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let mut upgrade = headers.get_all(header::UPGRADE).iter();
    let websocket = upgrade
        .next()
        .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
        && upgrade.next().is_none();
    websocket
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// A request head the HTTP parsers accept but the RFCs call malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// More than one `Host` field (RFC 9112 §3.2).
    DuplicateHost,
    /// An HTTP/2 field value starting or ending with SP or HTAB (RFC 9113 §8.2.1).
    Whitespace,
}

impl Malformed {
    /// Metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            Malformed::DuplicateHost => "duplicate_host",
            Malformed::Whitespace => "header_whitespace",
        }
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Malformed::DuplicateHost => "more than one Host header",
            Malformed::Whitespace => "header value with leading or trailing whitespace",
        }
    }
}

/// Checks a request head for what [`Malformed`] lists.
pub fn malformed(version: Version, headers: &HeaderMap) -> Option<Malformed> {
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Some(Malformed::DuplicateHost);
    }
    let padded = |v: &HeaderValue| {
        let b = v.as_bytes();
        let ws = |c: Option<&u8>| matches!(c, Some(b' ' | b'\t'));
        ws(b.first()) || ws(b.last())
    };
    (version == Version::HTTP_2 && headers.values().any(padded)).then_some(Malformed::Whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_listed_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn the_index_of_each_hop_by_hop_name_is_its_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index("x-kept"), None);
        assert_eq!(hop_by_hop_index_any_case("Keep-Alive"), Some(1));
        assert_eq!(hop_by_hop_index_any_case(&"x".repeat(40)), None);
    }

    #[test]
    fn a_listed_name_goes_even_when_it_is_one_that_may_stay() {
        // `te: trailers` stays unless `Connection` lists it; `close` names no header.
        let mut h = map(&[
            ("connection", "close, TE, X-Listed"),
            ("te", "trailers"),
            ("x-listed", "1"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
        let mut plain = map(&[("connection", "keep-alive"), ("x-kept", "1")]);
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(plain.len(), 1, "{plain:?}");
    }

    /// What RFC 9110 §7.6.1 asks of `strip_hop_by_hop`, written from the rule rather
    /// than the code: a header survives unless `Connection` lists it (an upgrade's
    /// `upgrade` token aside) or it is hop-by-hop, where `te: trailers` (the first TE
    /// line) and an upgrade's `connection` and `upgrade` may stay.
    fn hop_by_hop_model(h: &HeaderMap, upgrade: bool) -> Vec<(String, Vec<Vec<u8>>)> {
        let listed: Vec<String> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !(t.is_empty() || upgrade && t == "upgrade"))
            .collect();
        let te_trailers = h
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        let stays = |name: &str| {
            if listed.iter().any(|l| l == name) {
                return false;
            }
            match name {
                "te" => te_trailers,
                "connection" | "upgrade" => upgrade,
                "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "transfer-encoding"
                | "http2-settings" => false,
                _ => true,
            }
        };
        let mut out: Vec<_> = h
            .keys()
            .filter(|k| stays(k.as_str()))
            .map(|k| {
                let values = h.get_all(k).iter().map(|v| v.as_bytes().to_vec()).collect();
                (k.as_str().to_string(), values)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn random_heads_are_stripped_as_the_rule_says() {
        const NAMES: [&str; 12] = [
            "connection",
            "keep-alive",
            "te",
            "upgrade",
            "transfer-encoding",
            "proxy-connection",
            "proxy-authorization",
            "http2-settings",
            "x-a",
            "x-b",
            "close",
            "host",
        ];
        const TOKENS: [&str; 11] = [
            "Connection",
            "close",
            "Keep-Alive",
            "TE",
            "upgrade",
            "x-a",
            "X-B",
            "",
            " x-a ",
            "bad name",
            "http2-settings",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut h = HeaderMap::new();
            for _ in 0..rng.usize(0..7) {
                let name = NAMES[rng.usize(..NAMES.len())];
                let value = match name {
                    "connection" => (0..rng.usize(1..4))
                        .map(|_| TOKENS[rng.usize(..TOKENS.len())])
                        .collect::<Vec<_>>()
                        .join(","),
                    "te" if rng.bool() => "trailers".to_string(),
                    _ => format!("v{}", rng.u8(..)),
                };
                h.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_str(&value).unwrap(),
                );
            }
            let upgrade = rng.bool();
            let want = hop_by_hop_model(&h, upgrade);
            let mut got = h.clone();
            strip_hop_by_hop(&mut got, upgrade);
            let mut got_pairs: Vec<_> = got
                .keys()
                .map(|k| {
                    let v = got
                        .get_all(k)
                        .iter()
                        .map(|v| v.as_bytes().to_vec())
                        .collect();
                    (k.as_str().to_string(), v)
                })
                .collect();
            got_pairs.sort();
            assert_eq!(got_pairs, want, "{h:?}, upgrade {upgrade}");
        }
    }

    #[test]
    fn te_trailers_and_upgrades_survive() {
        let mut h = map(&[
            ("te", "trailers"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert!(h.contains_key("connection"));
    }

    #[test]
    fn only_websocket_upgrades_pass() {
        let ws = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert!(is_upgrade(&ws));
        for other in ["h2c", "websocket, h2c", "h2c, websocket", "tls/1.2"] {
            assert!(!is_upgrade(&map(&[
                ("connection", "upgrade"),
                ("upgrade", other)
            ])));
        }
        let twice = map(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("upgrade", "h2c"),
        ]);
        assert!(!is_upgrade(&twice));
        let mut h2c = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ("x-kept", "1"),
        ]);
        let upgrade = is_upgrade(&h2c);
        strip_hop_by_hop(&mut h2c, upgrade);
        assert_eq!(h2c.len(), 1, "{h2c:?}");
    }

    #[test]
    fn every_connection_line_is_honoured() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn forwarded_headers_replace_spoofed_values() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
        ]);
        let host = HeaderValue::from_static("a.example");
        let ip = HeaderValue::from_static("10.0.0.1");
        set_forwarded(&mut h, &ip, false, Some(&host), false);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "a.example");
        assert!(!h.contains_key("forwarded") && !h.contains_key("x-real-ip"));
        let mut t = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        set_forwarded(&mut t, &ip, true, None, true);
        assert_eq!(t.get("x-forwarded-for").unwrap(), "1.2.3.4, 10.0.0.1");
        assert_eq!(t.get("forwarded").unwrap(), "for=1.2.3.4");
        assert_eq!(t.get("x-real-ip").unwrap(), "1.2.3.4");
    }

    #[test]
    fn malformed_heads_are_named() {
        let two_hosts = map(&[("host", "a.example"), ("host", "b.example")]);
        assert_eq!(
            malformed(Version::HTTP_11, &two_hosts),
            Some(Malformed::DuplicateHost)
        );
        for v in [" x", "x\t", "\tx", "x "] {
            let h = map(&[("x-v", v)]);
            assert_eq!(malformed(Version::HTTP_2, &h), Some(Malformed::Whitespace));
            assert_eq!(malformed(Version::HTTP_11, &h), None);
        }
        let fine = map(&[("host", "a.example"), ("x-v", "a b"), ("x-e", "")]);
        assert_eq!(malformed(Version::HTTP_2, &fine), None);
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_generated_otherwise() {
        assert_eq!(request_id(&map(&[("x-request-id", "abc-1")])), "abc-1");
        let fresh = request_id(&map(&[("x-request-id", "has space")]));
        assert_eq!(fresh.len(), 32);
        assert_ne!(new_request_id(), new_request_id());
    }
}
