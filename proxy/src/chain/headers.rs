//! Configured header rules: the request's applied to the head sent upstream (after the
//! proxy's own rewriting, before the verified identity is set), the response's to
//! every answer, the upstream's and the proxy's own.

use super::{HeadFilter, RequestCx, ResponseCx, status};
use http::HeaderMap;
use tollgate_filters::headers::{HeaderRuleError, HeaderRules};
use tollgate_routing::{HeaderRulesSpec, Matched};

#[derive(Debug)]
pub struct Headers {
    request: HeaderRules,
    response: HeaderRules,
}

/// The route's filter: its own `headers`, else its app's; `None` when there are none.
pub fn compile(m: &Matched<'_>) -> Option<Box<dyn HeadFilter>> {
    let spec = m
        .source
        .and_then(|r| r.headers.as_ref())
        .or(m.app.headers.as_ref())?;
    match build(spec) {
        Ok(f) if f.request.is_empty() && f.response.is_empty() => None,
        Ok(f) => Some(Box::new(f)),
        Err(e) => {
            tracing::error!(route = %m.route_id, error = %e, "headers cannot be compiled; the route answers 503");
            Some(Box::new(status::AppStatus::unservable(m.app)))
        }
    }
}

fn build(spec: &HeaderRulesSpec) -> Result<Headers, HeaderRuleError> {
    Ok(Headers {
        request: HeaderRules::new(&spec.request)?,
        response: HeaderRules::new(&spec.response)?,
    })
}

impl HeadFilter for Headers {
    fn on_upstream_request(&self, _cx: &RequestCx<'_>, headers: &mut HeaderMap) {
        self.request.apply(headers);
    }

    fn on_response(&self, _cx: &ResponseCx<'_>, headers: &mut HeaderMap) {
        self.response.apply(headers);
    }
}
