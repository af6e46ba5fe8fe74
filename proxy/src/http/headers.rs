//! Header rules at the proxy boundary: hop-by-hop removal, `x-forwarded-*`, request ids.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_APP_ID: HeaderName = HeaderName::from_static("x-tollgate-app-id");

/// Headers that describe one connection and never cross the proxy (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers and those the `Connection` header lists.
///
/// `te: trailers` survives because gRPC needs it end to end; an upgrade keeps
/// `connection` and `upgrade` so the upstream sees the handshake. Most messages carry
/// none of these, so one pass over the names decides whether there is work at all.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    if let Some(conn) = headers.get(header::CONNECTION).cloned()
        && let Ok(list) = conn.to_str()
    {
        for name in list.split(',') {
            let name = name.trim();
            if upgrade && name.eq_ignore_ascii_case("upgrade") {
                continue;
            }
            if !name.is_empty() {
                headers.remove(name);
            }
        }
    }
    let keep_te = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in &HOP_BY_HOP {
        let keep = (keep_te && name == header::TE)
            || (upgrade && (name == header::CONNECTION || name == header::UPGRADE));
        if !keep {
            headers.remove(name);
        }
    }
}

/// Sets `x-forwarded-for/-proto/-host`; client-sent values are replaced unless trusted.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    tls: bool,
    host: Option<&HeaderValue>,
    trust_client: bool,
) {
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

/// Whether the request asks for an HTTP/1.1 protocol upgrade (WebSocket and such).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
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
    fn forwarded_headers_replace_spoofed_values() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        let host = HeaderValue::from_static("a.example");
        let ip = HeaderValue::from_static("10.0.0.1");
        set_forwarded(&mut h, &ip, false, Some(&host), false);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "a.example");
        let mut t = map(&[("x-forwarded-for", "1.2.3.4")]);
        set_forwarded(&mut t, &ip, true, None, true);
        assert_eq!(t.get("x-forwarded-for").unwrap(), "1.2.3.4, 10.0.0.1");
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_generated_otherwise() {
        assert_eq!(request_id(&map(&[("x-request-id", "abc-1")])), "abc-1");
        let fresh = request_id(&map(&[("x-request-id", "has space")]));
        assert_eq!(fresh.len(), 32);
        assert_ne!(new_request_id(), new_request_id());
    }
}
