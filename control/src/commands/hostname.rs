//! Hostname commands (aggregate `hostname/<hostname>`): bind, rebind, unbind.
//!
//! A hostname belongs to one app at a time. Binding a hostname that is bound to
//! another app is a 409; moving it is the explicit rebind from one app to another
//! (409 when it is not bound to `from`). Binding it again to the same app changes
//! nothing. Hostnames are stored lowercase without a trailing dot; the result must
//! validate (422: pattern, API hosts, clashes with `/` routes on the same host,
//! routes of another app on the name).

use super::{CommandError, Commands, Ctx, Plan, Target, Written};
use crate::ids;
use serde::Serialize;
use tollgate_routing::EdgeEvent;

const KIND: &str = "hostname";

/// A binding as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostnameView {
    pub hostname: String,
    pub app: String,
}

fn checked(hostname: &str) -> Result<String, CommandError> {
    let h = ids::normalize_hostname(hostname);
    if h.is_empty() {
        return Err(CommandError::BadRequest("a hostname is required".into()));
    }
    Ok(h)
}

impl Commands {
    /// Binds `hostname` to `app`.
    pub async fn bind_hostname(
        &self,
        ctx: &Ctx,
        hostname: &str,
        app: &str,
    ) -> Result<Written<HostnameView>, CommandError> {
        let hostname = checked(hostname)?;
        let view = HostnameView {
            hostname: hostname.clone(),
            app: app.to_string(),
        };
        self.execute(ctx, Target::new(KIND, &hostname), |config| {
            if !config.apps.contains_key(app) {
                return Err(CommandError::NotFound(format!("no app `{app}`")));
            }
            if !config.hostnames.contains_key(&hostname) && !self.ownership.may_bind(&hostname) {
                return Err(CommandError::Conflict(format!(
                    "`{hostname}` is outside the platform's domains: claim it \
                     (POST /api/v1/hostnames/{hostname}/claim) and publish the TXT record"
                )));
            }
            match config.hostnames.get(&hostname) {
                Some(current) if current == app => Ok(Plan::noop(view)),
                Some(current) => Err(CommandError::Conflict(format!(
                    "hostname `{hostname}` is bound to app `{current}`; rebind it explicitly"
                ))),
                None => Ok(Plan::new(
                    vec![EdgeEvent::HostnameBound {
                        hostname: hostname.clone(),
                        app_id: app.to_string(),
                    }],
                    view,
                )),
            }
        })
        .await
    }

    /// Moves `hostname` from app `from` to app `to`.
    pub async fn rebind_hostname(
        &self,
        ctx: &Ctx,
        hostname: &str,
        from: &str,
        to: &str,
    ) -> Result<Written<HostnameView>, CommandError> {
        let hostname = checked(hostname)?;
        let view = HostnameView {
            hostname: hostname.clone(),
            app: to.to_string(),
        };
        self.execute(ctx, Target::new(KIND, &hostname), |config| {
            match config.hostnames.get(&hostname) {
                None => {
                    return Err(CommandError::NotFound(format!(
                        "hostname `{hostname}` is not bound"
                    )));
                }
                Some(current) if current != from => {
                    return Err(CommandError::Conflict(format!(
                        "hostname `{hostname}` is bound to app `{current}`, not `{from}`"
                    )));
                }
                Some(_) => {}
            }
            if !config.apps.contains_key(to) {
                return Err(CommandError::NotFound(format!("no app `{to}`")));
            }
            if from == to {
                return Ok(Plan::noop(view));
            }
            Ok(Plan::new(
                vec![EdgeEvent::HostnameRebound {
                    hostname: hostname.clone(),
                    from_app: from.to_string(),
                    to_app: to.to_string(),
                }],
                view,
            ))
        })
        .await
    }

    /// Unbinds `hostname`; answers with the binding as it was.
    pub async fn unbind_hostname(
        &self,
        ctx: &Ctx,
        hostname: &str,
    ) -> Result<Written<HostnameView>, CommandError> {
        let hostname = checked(hostname)?;
        self.execute(ctx, Target::new(KIND, &hostname), |config| {
            let app = config.hostnames.get(&hostname).cloned().ok_or_else(|| {
                CommandError::NotFound(format!("hostname `{hostname}` is not bound"))
            })?;
            Ok(Plan::new(
                vec![EdgeEvent::HostnameUnbound {
                    hostname: hostname.clone(),
                }],
                HostnameView { hostname, app },
            ))
        })
        .await
    }
}
