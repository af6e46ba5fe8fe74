//! A cluster: the endpoints of one named upstream of an app, its pooled client,
//! balancer and retry budget, and the health-check task bound to its lifetime.

use super::balance::Balancer;
use super::client::{self, ClientError, UpstreamClient};
use super::endpoint::{Endpoint, Member};
use super::retry::RetryBudget;
use crate::metric_scope::MetricScope;
use crate::metrics::Metrics;
use http::uri::{Authority, Scheme};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::AbortHandle;
use tollgate_routing::ClusterSpec;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("upstream {app}/{name}: endpoint `{address}` is not a valid authority")]
    Address {
        app: String,
        name: String,
        address: String,
    },
    #[error("upstream {app}/{name}: {source}")]
    Client {
        app: String,
        name: String,
        source: ClientError,
    },
}

#[derive(Debug)]
pub struct Cluster {
    pub app: Arc<str>,
    /// The `app` label of the cluster's metrics: the app id when detailed, else `_other`.
    pub metrics_app: Arc<str>,
    pub name: Arc<str>,
    pub spec: ClusterSpec,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub balancer: Balancer,
    pub client: UpstreamClient,
    pub retry: RetryBudget,
    pub scheme: Scheme,
    pub response_header_timeout: Duration,
    pub idle_timeout: Duration,
    pub(super) health_task: Mutex<Option<AbortHandle>>,
}

impl Cluster {
    pub fn new(
        app: &str,
        name: &str,
        spec: &ClusterSpec,
        metrics: &Metrics,
        scope: &MetricScope,
        max_response_header_bytes: usize,
    ) -> Result<Self, ClusterError> {
        let metrics_app = scope.app_label(app, metrics);
        let mut members = Vec::with_capacity(spec.endpoints.len());
        for e in &spec.endpoints {
            let authority: Authority = e.address.parse().map_err(|_| ClusterError::Address {
                app: app.into(),
                name: name.into(),
                address: e.address.clone(),
            })?;
            let gauge = scope.endpoint_gauge(app, name, &e.address, metrics);
            members.push(Member {
                address: &e.address,
                authority,
                weight: e.weight,
                gauge,
            });
        }
        let endpoints = Endpoint::group(members);
        // Shown at zero from the start: with the ejection ceiling, many clusters never eject.
        metrics
            .upstream_ejections
            .with_label_values(&[&metrics_app, name]);
        let client = client::build(spec, max_response_header_bytes).map_err(|source| {
            ClusterError::Client {
                app: app.into(),
                name: name.into(),
                source,
            }
        })?;
        Ok(Cluster {
            app: app.into(),
            metrics_app,
            name: name.into(),
            balancer: Balancer::new(spec.balance.clone(), &endpoints),
            endpoints,
            client,
            retry: RetryBudget::new(spec.retry.budget_percent, spec.retry.min_retries_per_sec),
            scheme: if spec.protocol.is_tls() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            response_header_timeout: Duration::from_millis(spec.response_header_timeout_ms),
            idle_timeout: Duration::from_millis(spec.idle_timeout_ms),
            health_task: Mutex::new(None),
            spec: spec.clone(),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Ok(mut task) = self.health_task.lock()
            && let Some(t) = task.take()
        {
            t.abort();
        }
    }
}
