//! Cross-origin access: answers preflights at the edge (204 with the grants, or 403)
//! and adds the grants to every answer to an allowed origin, the proxy's own included.

use super::{HeadFilter, RequestCx, ResponseCx, Step};
use crate::http::body::ResponseBody;
use crate::http::errors::ProxyError;
use http::{HeaderMap, Response, StatusCode};
use tollgate_filters::cors;
use tollgate_routing::CorsSpec;

#[derive(Debug)]
pub struct Cors {
    policy: cors::CorsPolicy,
}

impl Cors {
    pub fn new(spec: CorsSpec) -> Self {
        Cors {
            policy: cors::CorsPolicy::new(spec),
        }
    }
}

impl HeadFilter for Cors {
    fn on_request<'a>(
        &'a self,
        head: &'a mut http::request::Parts,
        _cx: &'a mut RequestCx<'_>,
    ) -> Step<'a> {
        if !cors::is_preflight(&head.method, &head.headers) {
            return Step::NEXT;
        }
        Step::Ready(match self.policy.preflight(&head.headers) {
            Ok(grants) => {
                let mut resp = Response::new(ResponseBody::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                *resp.headers_mut() = grants;
                Ok(Some(resp))
            }
            Err(why) => Err(ProxyError::CorsRefused(why)),
        })
    }

    fn on_response(&self, cx: &ResponseCx<'_>, headers: &mut HeaderMap) {
        if let Some(origin) = cx.origin {
            self.policy.apply(origin, headers);
        }
    }
}
