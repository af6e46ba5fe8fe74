//! Plaintext → HTTPS: a request that came without TLS is answered with a redirect to
//! the same host, path and query over HTTPS. First in the chain, so nothing (CORS,
//! credentials) is exchanged in clear text before it.

use super::{HeadFilter, RequestCx, Step, status};
use crate::http::body::ResponseBody;
use crate::http::errors::ProxyError;
use http::{Response, header};
use tollgate_filters::redirect::HttpsRedirect as Compiled;
use tollgate_routing::{Matched, Switch};

#[derive(Debug)]
pub struct HttpsRedirect {
    redirect: Compiled,
}

/// The route's filter: its own `https_redirect`, else its app's; `None` when off.
pub fn compile(m: &Matched<'_>) -> Option<Box<dyn HeadFilter>> {
    let spec = m
        .source
        .and_then(|r| r.https_redirect.as_ref())
        .or(m.app.https_redirect.as_ref())
        .and_then(Switch::on)?;
    Some(match Compiled::new(spec) {
        Ok(redirect) => Box::new(HttpsRedirect { redirect }),
        Err(e) => {
            tracing::error!(route = %m.route_id, error = %e, "https_redirect cannot be compiled; the route answers 503");
            Box::new(status::AppStatus::unservable(m.app))
        }
    })
}

impl HeadFilter for HttpsRedirect {
    fn on_request<'a>(
        &'a self,
        head: &'a mut http::request::Parts,
        cx: &'a mut RequestCx<'_>,
    ) -> Step<'a> {
        if cx.conn.tls {
            return Step::NEXT;
        }
        let authority = match head.uri.authority() {
            Some(a) => Some(a.as_str()),
            None => head.headers.get(header::HOST).and_then(|h| h.to_str().ok()),
        };
        let path = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let Some(location) = authority.and_then(|a| self.redirect.location(a, path)) else {
            // Only a wildcard route's first label can carry such a host; never forwarded
            // in clear text either.
            return Step::refuse(ProxyError::BadRequest("host cannot be redirected to HTTPS"));
        };
        cx.shared
            .metrics
            .http_redirects
            .with_label_values(&["https"])
            .inc();
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = self.redirect.status();
        resp.headers_mut().insert(header::LOCATION, location);
        Step::Ready(Ok(Some(resp)))
    }
}
