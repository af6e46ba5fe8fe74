//! The route model shared by the proxy and the control service.
//!
//! This crate owns what a route *is* ([`model`], its edge settings in [`gateway`]),
//! what makes a set of routes valid ([`validate`]), and the compiled, immutable
//! [`Snapshot`] a proxy serves from ([`matcher`], [`snapshot`]). It does no I/O and
//! holds no runtime state: connection pools, health and counters live in the proxy,
//! keyed by the specs defined here. It also holds the other types both sides speak:
//! the usage batches a proxy reports and the control service stores ([`usage`]), and
//! where a proxy stands in the control service's event log ([`feed`]).

pub mod acme;
pub mod auth;
pub mod clusters;
pub mod edge;
pub mod edge_delta;
mod edge_index;
pub mod edge_scope;
pub mod feed;
pub mod gateway;
pub mod host;
pub mod l4;
pub mod limits;
pub mod matcher;
pub mod model;
pub mod ownership;
pub mod path;
pub mod resume;
pub mod rpc;
pub mod snapshot;
mod table_build;
pub mod usage;
pub mod validate;
mod validate_auth;
mod validate_gateway;

pub use acme::{AcmeChallenge, ChallengeKind, ManagedTls, TlsState, managed_cert_id};
pub use auth::{ApiKeySpec, AuthPolicy, KeyKind, OidcIssuerSpec, SUPPORTED_ALGORITHMS};
pub use clusters::Clusters;
pub use edge::{EdgeApp, EdgeCert, EdgeConfig, EdgeError, EdgeEvent};
pub use edge_delta::{RoutingDelta, changed_ids};
pub use edge_scope::{Related, Scope};
pub use feed::EdgeMarker;
pub use gateway::{
    FrameOptions, HeaderOpsSpec, HeaderRulesSpec, HstsSpec, HttpsRedirectSpec, RedirectSpec,
    SecurityHeadersSpec, Switch,
};
/// The persistent map the edge config is made of: cloning shares it, updates copy a path.
pub use imbl::OrdMap;
/// What [`OrdMap::diff`] yields: an entry added, updated or removed.
pub use imbl::ordmap::DiffItem as OrdMapDiffItem;
pub use l4::{L4Route, L4Table};
pub use limits::{
    BudgetPeriod, BudgetSpec, BudgetUnit, LimitScope, LimitsSpec, OnBackendError, RateKey, RateRule,
};
pub use matcher::{Matched, RouteTable};
pub use model::{
    AppSpec, AppStatus, BalancePolicy, ClusterSpec, EndpointSpec, HealthCheckSpec, MetricsDetail,
    OutlierSpec, PortPolicy, ProtocolHint, RISKY_PORTS, RetrySpec, RouteSpec, RoutingSpec,
    SplitBackend, SplitSpec, UpstreamProtocol,
};
pub use ownership::{ClaimState, HostnameClaim};
pub use path::{EscapedSlashes, PathError, PathPolicy};
pub use resume::ResumeSpec;
pub use rpc::{CorsSpec, RpcSpec};
pub use snapshot::Snapshot;
pub use table_build::{AppChange, TableDelta};
pub use validate::{ValidationError, validate};
