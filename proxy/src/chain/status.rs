//! Refuses every request of an app that is suspended (403) or whose config cannot be
//! served (503). Compiled only into the routes of such apps.

use super::{HeadFilter, RequestCx, Step};
use crate::http::errors::ProxyError;
use tollgate_routing::AppSpec;

#[derive(Debug)]
pub struct AppStatus {
    app: String,
    suspended: bool,
}

impl AppStatus {
    /// The filter for `app`, or `None` when the app serves normally.
    pub fn new(app: &AppSpec) -> Option<Self> {
        let suspended = app.status == tollgate_routing::AppStatus::Suspended;
        (suspended || app.degraded.is_some()).then(|| AppStatus {
            app: app.id.clone(),
            suspended,
        })
    }

    /// Refuses every request of a route whose compiled filter could not be built
    /// (503, as a degraded app): serving without it would fail open.
    pub fn unservable(app: &AppSpec) -> Self {
        AppStatus {
            app: app.id.clone(),
            suspended: false,
        }
    }
}

impl HeadFilter for AppStatus {
    fn on_request<'a>(
        &'a self,
        _head: &'a mut http::request::Parts,
        _cx: &'a mut RequestCx<'_>,
    ) -> Step<'a> {
        Step::refuse(if self.suspended {
            ProxyError::Suspended(self.app.clone())
        } else {
            ProxyError::Degraded(self.app.clone())
        })
    }
}
