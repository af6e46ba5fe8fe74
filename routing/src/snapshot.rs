//! The immutable config a proxy serves from; built off the hot path, swapped whole.

use crate::auth::{ApiKeySpec, OidcIssuerSpec};
use crate::l4::L4Table;
use crate::matcher::RouteTable;
use crate::model::{PortPolicy, RoutingSpec};
use crate::table_build::{AppChange, TableDelta};
use crate::validate::{ValidationError, validate};
use std::sync::Arc;

/// A validated, compiled routing config with its version.
///
/// A request holds one `Arc<Snapshot>` from start to end, so a swap never changes
/// the routes under a request in flight. The apps and routes live in the table's
/// persistent maps; [`Snapshot::spec`] gives them back as a spec.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    pub api_hosts: Vec<String>,
    pub port_policy: PortPolicy,
    pub oidc_issuers: Arc<[OidcIssuerSpec]>,
    /// The keys of a config file's spec; a proxy following the control service keeps
    /// its keys in a store of their own and has none here.
    pub api_keys: Arc<[ApiKeySpec]>,
    pub table: RouteTable,
    pub l4: Arc<L4Table>,
}

impl Snapshot {
    /// Validates and compiles `spec`; nothing is built when any part is invalid.
    pub fn build(spec: RoutingSpec, version: u64) -> Result<Self, ValidationError> {
        Self::compile(&spec, version)
    }

    /// [`Snapshot::build`] for a spec the caller keeps.
    pub fn compile(spec: &RoutingSpec, version: u64) -> Result<Self, ValidationError> {
        validate(spec)?;
        let table = RouteTable::compile(spec);
        let l4 = Arc::new(L4Table::compile(&table));
        Ok(Snapshot {
            version,
            api_hosts: spec.api_hosts.clone(),
            port_policy: spec.port_policy.clone(),
            oidc_issuers: spec.oidc_issuers.clone().into(),
            api_keys: spec.api_keys.clone().into(),
            table,
            l4,
        })
    }

    /// This snapshot with the apps `changes` name replaced or removed, which the
    /// caller validated with what they relate to (see [`crate::edge_scope`]). The
    /// cost follows those apps: the L4 routes are compiled again only when one of
    /// them had or has one.
    pub fn updated(&self, changes: Vec<AppChange>, version: u64) -> (Snapshot, TableDelta) {
        let l4_touched = changes.iter().any(|c| {
            c.routes.iter().any(|r| r.is_l4())
                || self.table.routes_of(&c.id).iter().any(|r| r.is_l4())
        });
        let (table, delta) = self.table.updated(changes);
        let l4 = if l4_touched {
            Arc::new(L4Table::compile(&table))
        } else {
            self.l4.clone()
        };
        let snapshot = Snapshot {
            version,
            api_hosts: self.api_hosts.clone(),
            port_policy: self.port_policy.clone(),
            oidc_issuers: self.oidc_issuers.clone(),
            api_keys: self.api_keys.clone(),
            table,
            l4,
        };
        (snapshot, delta)
    }

    /// The spec this snapshot serves: apps by id, each app's routes in the order
    /// given. A copy of everything, for display.
    pub fn spec(&self) -> RoutingSpec {
        let mut apps: Vec<_> = self.table.apps().collect();
        apps.sort_by(|a, b| a.id.cmp(&b.id));
        RoutingSpec {
            api_hosts: self.api_hosts.clone(),
            routes: apps
                .iter()
                .flat_map(|a| self.table.routes_of(&a.id))
                .cloned()
                .collect(),
            apps: apps.into_iter().map(|a| (**a).clone()).collect(),
            port_policy: self.port_policy.clone(),
            api_keys: self.api_keys.to_vec(),
            oidc_issuers: self.oidc_issuers.to_vec(),
        }
    }

    /// An empty snapshot that routes nothing.
    pub fn empty() -> Self {
        Snapshot {
            version: 0,
            api_hosts: Vec::new(),
            port_policy: PortPolicy::default(),
            oidc_issuers: Arc::new([]),
            api_keys: Arc::new([]),
            table: RouteTable::default(),
            l4: Arc::default(),
        }
    }
}
