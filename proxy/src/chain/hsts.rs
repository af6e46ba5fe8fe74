//! HSTS: `Strict-Transport-Security` on every answer to a TLS request, the proxy's own
//! included, and never on one sent in clear text (RFC 6797 §7.2).

use super::{HeadFilter, ResponseCx};
use http::HeaderMap;
use tollgate_filters::secure;
use tollgate_routing::{Matched, Switch};

#[derive(Debug)]
pub struct Hsts {
    hsts: secure::Hsts,
}

/// The route's filter: its own `hsts`, else its app's; `None` when off.
pub fn compile(m: &Matched<'_>) -> Option<Box<dyn HeadFilter>> {
    let spec = m
        .source
        .and_then(|r| r.hsts.as_ref())
        .or(m.app.hsts.as_ref())
        .and_then(Switch::on)?;
    Some(Box::new(Hsts {
        hsts: secure::Hsts::new(spec),
    }))
}

impl HeadFilter for Hsts {
    fn on_response(&self, cx: &ResponseCx<'_>, headers: &mut HeaderMap) {
        self.hsts.apply(cx.conn.tls, headers);
    }
}
