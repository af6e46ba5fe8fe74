//! Refuses a request whose declared body (`content-length`) is over the route's limit
//! (413) before anything is sent; a streamed body is cut where it crosses the limit
//! by the request body itself.

use super::{HeadFilter, RequestCx, Step};
use crate::http::errors::ProxyError;

#[derive(Debug)]
pub struct BodyLimit {
    limit: u64,
}

impl BodyLimit {
    pub fn new(limit: u64) -> Self {
        BodyLimit { limit }
    }
}

impl HeadFilter for BodyLimit {
    fn on_request<'a>(
        &'a self,
        _head: &'a mut http::request::Parts,
        cx: &'a mut RequestCx<'_>,
    ) -> Step<'a> {
        if cx.body_hint > self.limit {
            return Step::refuse(ProxyError::BodyTooLarge(self.limit));
        }
        Step::NEXT
    }
}
