//! Route commands (aggregate `route/<route_id>`): create and delete.
//!
//! A route without an id gets `r_` and 16 random characters. The route's app must
//! exist (404) and the id be free (409); the result must validate (422: hostname
//! pattern, path prefixes, L4 port policy, clashes with other routes or bound
//! hostnames, a hostname bound to another app, auth policies).

use super::{CommandError, Commands, Ctx, Plan, Target, Written, check_id};
use crate::ids;
use tollgate_routing::{EdgeEvent, RouteSpec};

const KIND: &str = "route";

impl Commands {
    /// Creates a route; answers with it as stored (with its id).
    pub async fn create_route(
        &self,
        ctx: &Ctx,
        mut route: RouteSpec,
    ) -> Result<Written<RouteSpec>, CommandError> {
        let generated = route.id.is_none();
        let id = match route.id.take() {
            Some(id) => {
                check_id("route id", &id)?;
                id
            }
            None => ids::generate("r_")?,
        };
        route.id = Some(id.clone());
        route.hostname = ids::normalize_hostname(&route.hostname);
        self.execute(ctx, Target::with_id(KIND, &id, generated), |config| {
            if config.routes.contains_key(&id) {
                return Err(CommandError::Conflict(format!(
                    "route `{id}` already exists"
                )));
            }
            if !config.apps.contains_key(&route.app) {
                return Err(CommandError::NotFound(format!("no app `{}`", route.app)));
            }
            Ok(Plan::new(
                vec![EdgeEvent::RouteCreated {
                    route: route.clone(),
                }],
                route,
            ))
        })
        .await
    }

    /// Deletes a route; answers with the route as it was.
    pub async fn delete_route(
        &self,
        ctx: &Ctx,
        id: &str,
    ) -> Result<Written<RouteSpec>, CommandError> {
        self.execute(ctx, Target::new(KIND, id), |config| {
            let route = config
                .routes
                .get(id)
                .map(|r| RouteSpec::clone(r))
                .ok_or_else(|| CommandError::NotFound(format!("no route `{id}`")))?;
            Ok(Plan::new(
                vec![EdgeEvent::RouteDeleted {
                    route_id: id.to_string(),
                }],
                route,
            ))
        })
        .await
    }
}
