//! App commands (aggregate `app/<app_id>`): create, suspend, resume, auth policy,
//! scheduled deletion, upstream clusters and their instances, limits.
//!
//! Deletion is two-step: [`Commands::delete_app`] appends `app_deletion_scheduled`
//! (the app is suspended: its routes answer 503 and its keys stop working, since
//! [`EdgeConfig::routing_spec`] leaves them out) and the service's grace task
//! ([`crate::grace`]) appends `app_removed` once the grace period has passed,
//! through [`Commands::finish_deletion`]. Resuming the app during the grace period
//! cancels the deletion. A grace period of 0 removes the app at once.

use super::{CommandError, Commands, Ctx, Plan, Target, Written, check_id, now_unix};
use serde::{Deserialize, Serialize};
use tollgate_routing::{
    AppStatus, AuthPolicy, ClusterSpec, EdgeApp, EdgeConfig, EdgeEvent, EndpointSpec,
};

const KIND: &str = "app";

/// `POST /api/v1/apps`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    pub id: String,
    #[serde(default)]
    pub auth: Option<AuthPolicy>,
}

/// An app as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppView {
    pub id: String,
    pub status: AppStatus,
    /// Unix seconds at which a scheduled deletion completes.
    pub deleting_until: Option<i64>,
    pub upstreams: std::sync::Arc<tollgate_routing::Clusters>,
    pub auth: Option<AuthPolicy>,
    pub hostnames: Vec<String>,
    pub routes: Vec<String>,
    pub api_keys: Vec<String>,
    pub limits: Option<serde_json::Value>,
}

/// The view of one app of `config`.
pub fn app_view(config: &EdgeConfig, app: &EdgeApp) -> AppView {
    AppView {
        id: app.id.clone(),
        status: app.status,
        deleting_until: app.deleting_until,
        upstreams: app.upstreams.clone(),
        auth: app.auth.clone(),
        hostnames: config.hostnames_of(&app.id),
        routes: config.routes_of(&app.id),
        api_keys: config.keys_of(&app.id),
        limits: config.limits.get(&app.id).cloned(),
    }
}

fn existing<'a>(config: &'a EdgeConfig, id: &str) -> Result<&'a EdgeApp, CommandError> {
    config
        .apps
        .get(id)
        .ok_or_else(|| CommandError::NotFound(format!("no app `{id}`")))
}

/// The view after `events`, for answers (the events were checked already). The
/// config is made of persistent maps: the copy shares everything the events leave.
fn view_after(config: &EdgeConfig, events: &[EdgeEvent], id: &str) -> Option<AppView> {
    let mut next = config.clone();
    for e in events {
        next.apply(e).ok()?;
    }
    next.apps.get(id).map(|a| app_view(&next, a))
}

impl Commands {
    /// Runs an app command whose events are decided from the app; answers with the
    /// app as it is afterwards.
    async fn app_command(
        &self,
        ctx: &Ctx,
        id: &str,
        decide: impl FnOnce(&EdgeConfig, &EdgeApp) -> Result<Vec<EdgeEvent>, CommandError>,
    ) -> Result<Written<AppView>, CommandError> {
        let w = self
            .execute(ctx, Target::new(KIND, id), |config| {
                let app = existing(config, id)?;
                let events = decide(config, app)?;
                let view = view_after(config, &events, id)
                    .ok_or_else(|| CommandError::NotFound(format!("no app `{id}`")))?;
                Ok(Plan::new(events, view))
            })
            .await?;
        Ok(w)
    }

    /// Creates an app with a `default` upstream (no instances yet).
    pub async fn create_app(
        &self,
        ctx: &Ctx,
        req: CreateApp,
    ) -> Result<Written<AppView>, CommandError> {
        if req.id.is_empty() {
            return Err(CommandError::BadRequest("an app needs an id".into()));
        }
        let id = req.id.clone();
        self.execute(ctx, Target::new(KIND, &id), |config| {
            if config.apps.contains_key(&id) {
                return Err(CommandError::Conflict(format!("app `{id}` already exists")));
            }
            let events = vec![EdgeEvent::AppCreated {
                app_id: id.clone(),
                auth: req.auth,
            }];
            let view = view_after(config, &events, &id)
                .ok_or_else(|| CommandError::Conflict(format!("app `{id}` already exists")))?;
            Ok(Plan::new(events, view))
        })
        .await
    }

    /// Suspends an app: its routes answer 503. A no-op when already suspended.
    pub async fn suspend_app(&self, ctx: &Ctx, id: &str) -> Result<Written<AppView>, CommandError> {
        self.app_command(ctx, id, |_, app| {
            Ok(match app.status {
                AppStatus::Suspended => Vec::new(),
                AppStatus::Active => vec![EdgeEvent::AppSuspended {
                    app_id: app.id.clone(),
                }],
            })
        })
        .await
    }

    /// Resumes an app; also cancels a scheduled deletion. A no-op when active.
    pub async fn resume_app(&self, ctx: &Ctx, id: &str) -> Result<Written<AppView>, CommandError> {
        self.app_command(ctx, id, |_, app| {
            Ok(
                if app.status == AppStatus::Active && app.deleting_until.is_none() {
                    Vec::new()
                } else {
                    vec![EdgeEvent::AppResumed {
                        app_id: app.id.clone(),
                    }]
                },
            )
        })
        .await
    }

    /// Replaces (or with `None` removes) the app's auth policy.
    pub async fn set_app_auth(
        &self,
        ctx: &Ctx,
        id: &str,
        auth: Option<AuthPolicy>,
    ) -> Result<Written<AppView>, CommandError> {
        self.app_command(ctx, id, |_, app| {
            Ok(if app.auth == auth {
                Vec::new()
            } else {
                vec![EdgeEvent::AppAuthChanged {
                    app_id: app.id.clone(),
                    auth,
                }]
            })
        })
        .await
    }

    /// Schedules the app's removal `grace_seconds` from now (0: removes it now).
    /// Scheduling again replaces the deadline. The answer is the app as it is
    /// afterwards, or `None` when it was removed.
    pub async fn delete_app(
        &self,
        ctx: &Ctx,
        id: &str,
        grace_seconds: u64,
    ) -> Result<Written<Option<AppView>>, CommandError> {
        let grace = i64::try_from(grace_seconds)
            .ok()
            .filter(|g| *g <= 10 * 365 * 86_400)
            .ok_or_else(|| CommandError::BadRequest("grace_seconds is too large".into()))?;
        self.execute(ctx, Target::new(KIND, id), |config| {
            let app = existing(config, id)?;
            let event = if grace == 0 {
                EdgeEvent::AppRemoved {
                    app_id: app.id.clone(),
                }
            } else {
                EdgeEvent::AppDeletionScheduled {
                    app_id: app.id.clone(),
                    until_unix: now_unix() + grace,
                }
            };
            let events = vec![event];
            let view = view_after(config, &events, id);
            Ok(Plan::new(events, view))
        })
        .await
    }

    /// Removes an app whose deletion deadline has passed at `now_unix`; a no-op
    /// (`changed == false`) when it is gone, was resumed, or is not due yet.
    pub async fn finish_deletion(
        &self,
        ctx: &Ctx,
        id: &str,
        now_unix: i64,
    ) -> Result<Written<()>, CommandError> {
        self.execute(ctx, Target::new(KIND, id), |config| {
            let due = config
                .apps
                .get(id)
                .and_then(|a| a.deleting_until)
                .is_some_and(|until| until <= now_unix);
            Ok(if due {
                Plan::new(
                    vec![EdgeEvent::AppRemoved {
                        app_id: id.to_string(),
                    }],
                    (),
                )
            } else {
                Plan::noop(())
            })
        })
        .await
    }

    /// Creates or replaces the settings of an upstream cluster; its instances are
    /// kept (manage them with [`Self::add_instance`]). `cluster.endpoints` must be
    /// empty.
    pub async fn configure_upstream(
        &self,
        ctx: &Ctx,
        id: &str,
        name: &str,
        cluster: ClusterSpec,
    ) -> Result<Written<AppView>, CommandError> {
        check_id("upstream name", name)?;
        if !cluster.endpoints.is_empty() {
            return Err(CommandError::BadRequest(
                "endpoints are managed as instances (POST .../instances); leave `endpoints` out"
                    .into(),
            ));
        }
        self.app_command(ctx, id, |_, app| {
            let mut current = app.upstreams.get(name).cloned();
            if let Some(c) = &mut current {
                c.endpoints.clear();
            }
            Ok(if current.as_ref() == Some(&cluster) {
                Vec::new()
            } else {
                vec![EdgeEvent::UpstreamConfigured {
                    app_id: app.id.clone(),
                    name: name.to_string(),
                    cluster,
                }]
            })
        })
        .await
    }

    /// Adds an instance to an upstream, replacing one with the same address.
    pub async fn add_instance(
        &self,
        ctx: &Ctx,
        id: &str,
        upstream: &str,
        endpoint: EndpointSpec,
    ) -> Result<Written<AppView>, CommandError> {
        self.app_command(ctx, id, |_, app| {
            let cluster = app.upstreams.get(upstream).ok_or_else(|| {
                CommandError::NotFound(format!("app `{}` has no upstream `{upstream}`", app.id))
            })?;
            Ok(if cluster.endpoints.contains(&endpoint) {
                Vec::new()
            } else {
                vec![EdgeEvent::InstanceAdded {
                    app_id: app.id.clone(),
                    upstream: upstream.to_string(),
                    endpoint,
                }]
            })
        })
        .await
    }

    /// Removes the instance with `address` from an upstream.
    pub async fn remove_instance(
        &self,
        ctx: &Ctx,
        id: &str,
        upstream: &str,
        address: &str,
    ) -> Result<Written<AppView>, CommandError> {
        self.app_command(ctx, id, |_, app| {
            let cluster = app.upstreams.get(upstream).ok_or_else(|| {
                CommandError::NotFound(format!("app `{}` has no upstream `{upstream}`", app.id))
            })?;
            if !cluster.endpoints.iter().any(|e| e.address == address) {
                return Err(CommandError::NotFound(format!(
                    "upstream `{upstream}` of app `{}` has no instance `{address}`",
                    app.id
                )));
            }
            Ok(vec![EdgeEvent::InstanceRemoved {
                app_id: app.id.clone(),
                upstream: upstream.to_string(),
                address: address.to_string(),
            }])
        })
        .await
    }

    /// Sets the app's rate limits, quotas and budget (`routing::LimitsSpec` as JSON).
    pub async fn set_limits(
        &self,
        ctx: &Ctx,
        id: &str,
        limits: serde_json::Value,
    ) -> Result<Written<AppView>, CommandError> {
        tollgate_routing::LimitsSpec::from_json(&limits).map_err(CommandError::invalid)?;
        self.app_command(ctx, id, |config, app| {
            Ok(if config.limits.get(&app.id) == Some(&limits) {
                Vec::new()
            } else {
                vec![EdgeEvent::LimitsSet {
                    app_id: app.id.clone(),
                    limits,
                }]
            })
        })
        .await
    }
}
