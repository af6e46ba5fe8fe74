//! HTTP-01 (RFC 8555 §8.3): `GET`/`HEAD /.well-known/acme-challenge/<token>` for a
//! host with a published HTTP-01 challenge is answered here, before routing,
//! redirects, auth and limits. Any other request falls through untouched.

use super::{AcmeMetrics, AcmeTable};
use crate::http::body::ResponseBody;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tollgate_routing::{ChallengeKind, host};

/// The path prefix the CA fetches the key authorization from.
pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// The answer to `req` if it asks for an HTTP-01 challenge of its host: 200 with the
/// key authorization for the right token, 404 for another. `None` (fall through)
/// for every other request; that check allocates nothing.
pub fn answer<B>(
    table: &AcmeTable,
    metrics: &AcmeMetrics,
    req: &Request<B>,
) -> Option<Response<ResponseBody>> {
    if !table.has_http01() {
        return None;
    }
    let token = req.uri().path().strip_prefix(PREFIX)?;
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return None,
    };
    let authority = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    let challenge = table
        .get(&host::normalize(authority))
        .filter(|c| c.kind == ChallengeKind::Http01)?;
    let Some(body) = challenge.key_authorization_for(token) else {
        return Some(plain(StatusCode::NOT_FOUND, ResponseBody::empty(), 0));
    };
    metrics.answered(ChallengeKind::Http01);
    let len = body.len();
    let body = if head {
        ResponseBody::empty()
    } else {
        ResponseBody::full(body.clone())
    };
    Some(plain(StatusCode::OK, body, len))
}

fn plain(status: StatusCode, body: ResponseBody, len: usize) -> Response<ResponseBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tollgate_routing::{AcmeChallenge, OrdMap};

    fn table() -> AcmeTable {
        let mut m = OrdMap::new();
        for (h, kind) in [
            ("web.example", ChallengeKind::Http01),
            ("alpn.example", ChallengeKind::TlsAlpn01),
        ] {
            m.insert(
                h.to_string(),
                AcmeChallenge {
                    hostname: h.into(),
                    kind,
                    token: "tok".into(),
                    key_authorization: "tok.thumb".into(),
                },
            );
        }
        AcmeTable::build(&m, None)
    }

    fn metrics() -> AcmeMetrics {
        AcmeMetrics::register(&prometheus::Registry::new()).expect("metrics")
    }

    fn req(method: Method, host: &str, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .body(())
            .expect("request")
    }

    async fn body(resp: Response<ResponseBody>) -> Vec<u8> {
        resp.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn answers_the_token_of_the_host() {
        let (t, m) = (table(), metrics());
        let path = "/.well-known/acme-challenge/tok";
        let r = answer(&t, &m, &req(Method::GET, "WEB.example.:80", path)).expect("answered");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain");
        assert_eq!(body(r).await, b"tok.thumb");
        let r = answer(&t, &m, &req(Method::HEAD, "web.example", path)).expect("head");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "9");
        let r = answer(
            &t,
            &m,
            &req(
                Method::GET,
                "web.example",
                "/.well-known/acme-challenge/nope",
            ),
        )
        .expect("answered");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(m.answered_count(ChallengeKind::Http01), 2);
    }

    #[test]
    fn everything_else_falls_through() {
        let (t, m) = (table(), metrics());
        let path = "/.well-known/acme-challenge/tok";
        assert!(answer(&t, &m, &req(Method::GET, "web.example", "/")).is_none());
        assert!(answer(&t, &m, &req(Method::POST, "web.example", path)).is_none());
        assert!(answer(&t, &m, &req(Method::GET, "other.example", path)).is_none());
        // A TLS-ALPN-01 challenge is not served over HTTP.
        assert!(answer(&t, &m, &req(Method::GET, "alpn.example", path)).is_none());
        let empty = AcmeTable::default();
        assert!(answer(&empty, &m, &req(Method::GET, "web.example", path)).is_none());
    }
}
