//! A route's host and path redirect (`www` → apex, `/old` → `/new`): every request is
//! answered with the Location, the path past the route's prefix kept. Runs right after
//! the HTTPS redirect, before anything else looks at the request.

use super::{HeadFilter, RequestCx, Step, status};
use crate::http::body::ResponseBody;
use http::{Response, header};
use tollgate_filters::redirect::RouteRedirect;
use tollgate_routing::Matched;

#[derive(Debug)]
pub struct Redirect {
    redirect: RouteRedirect,
}

/// The route's filter, when it is a redirect route (configured routes only).
pub fn compile(m: &Matched<'_>) -> Option<Box<dyn HeadFilter>> {
    let route = m.source?;
    let spec = route.redirect.as_ref()?;
    Some(match RouteRedirect::new(spec, &route.path_prefix) {
        Ok(redirect) => Box::new(Redirect { redirect }),
        Err(e) => {
            tracing::error!(route = %m.route_id, error = %e, "redirect cannot be compiled; the route answers 503");
            Box::new(status::AppStatus::unservable(m.app))
        }
    })
}

impl HeadFilter for Redirect {
    fn on_request<'a>(
        &'a self,
        head: &'a mut http::request::Parts,
        cx: &'a mut RequestCx<'_>,
    ) -> Step<'a> {
        // The normalised path the route matched: a redirect route has no
        // `rewrite_prefix` (validation refuses it), so the upstream path is that path.
        let location = self
            .redirect
            .location(cx.conn.tls, cx.upstream_path, head.uri.query());
        cx.shared
            .metrics
            .http_redirects
            .with_label_values(&["route"])
            .inc();
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = self.redirect.status();
        resp.headers_mut().insert(header::LOCATION, location);
        Step::Ready(Ok(Some(resp)))
    }
}
