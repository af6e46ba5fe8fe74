//! The end-to-end suite, one test binary: each module is one area of the proxy, driven
//! through real processes on ephemeral ports. One binary links once instead of once per
//! file, which keeps the build's disk use and link time small.

mod acme;
mod acme_edge;
mod auth_keys;
mod auth_oidc;
mod budgets;
mod client_faults;
mod connect;
mod connect_browser;
mod connections;
mod control_e2e;
mod control_restore;
mod fleet_scale;
mod forwarding;
mod gateway_filters;
mod grpc;
mod grpc_upstreams;
mod header_hygiene;
mod isolation;
mod l4;
mod limits;
mod metrics_cardinality;
mod oidc_provider;
mod operations;
mod paths;
mod pebble_harness;
mod reload;
mod resume;
mod resume_sse;
mod smoke;
mod stream_metrics;
mod tls;
mod tls_upstream;
mod traces;
mod upstreams;
