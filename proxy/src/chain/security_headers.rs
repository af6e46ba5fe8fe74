//! Response security headers (`X-Content-Type-Options`, `X-Frame-Options`,
//! `Referrer-Policy`, `Content-Security-Policy`), each added where the answer has none.

use super::{HeadFilter, ResponseCx, status};
use http::HeaderMap;
use tollgate_filters::secure::SecurityHeaders as Compiled;
use tollgate_routing::{Matched, Switch};

#[derive(Debug)]
pub struct SecurityHeaders {
    headers: Compiled,
}

/// The route's filter: its own `security_headers`, else its app's; `None` when off.
pub fn compile(m: &Matched<'_>) -> Option<Box<dyn HeadFilter>> {
    let spec = m
        .source
        .and_then(|r| r.security_headers.as_ref())
        .or(m.app.security_headers.as_ref())
        .and_then(Switch::on)?;
    match Compiled::new(spec) {
        Ok(headers) if headers.is_empty() => None,
        Ok(headers) => Some(Box::new(SecurityHeaders { headers })),
        Err(e) => {
            tracing::error!(route = %m.route_id, error = %e, "security_headers cannot be compiled; the route answers 503");
            Some(Box::new(status::AppStatus::unservable(m.app)))
        }
    }
}

impl HeadFilter for SecurityHeaders {
    fn on_response(&self, _cx: &ResponseCx<'_>, headers: &mut HeaderMap) {
        self.headers.apply(headers);
    }
}
