//! Rate limits, the concurrent-stream quota and the budget: admits the request or
//! refuses it (429, or the RPC equivalent) before anything reaches the upstream, and
//! for an admitted request with a budget, starts the stream filter that pays for each
//! response message or byte as it streams.

use super::{HeadFilter, RequestCx, Step};
use crate::limits::AppLimits;
use crate::limits::admit::admit;
use crate::limits::meter::{BudgetFilter, Units};
use prometheus::IntCounter;
use std::sync::{Arc, OnceLock};
use tollgate_filters::budget::Meter;
use tollgate_filters::limit::RequestKeys;
use tollgate_filters::rpc::schema::FieldPath;
use tollgate_filters::rpc::{MethodSchema, Schema};
use tollgate_routing::BudgetUnit;

#[derive(Debug)]
pub struct Admission {
    /// The route's limits, else its app's.
    limits: Arc<AppLimits>,
    /// The route's schema: a field budget reads the response type, even for binary calls.
    schema: Option<Schema>,
    /// The mid-stream budget counter of the route's app, resolved on first use.
    exhausted: OnceLock<IntCounter>,
}

impl Admission {
    pub fn new(limits: Arc<AppLimits>, schema: Option<Schema>) -> Self {
        Admission {
            limits,
            schema,
            exhausted: OnceLock::new(),
        }
    }
}

impl HeadFilter for Admission {
    fn on_request<'a>(
        &'a self,
        head: &'a mut http::request::Parts,
        cx: &'a mut RequestCx<'_>,
    ) -> Step<'a> {
        Step::Wait(Box::pin(async move {
            let app = cx.plan.app.id.as_str();
            let keys = RequestKeys {
                app,
                api_key: cx.identity.as_ref().and_then(|i| i.key_id()),
                subject: cx.identity.as_ref().map(|i| i.subject()),
                client_ip: Some(cx.conn.client.ip()),
                headers: Some(&head.headers),
            };
            let limits = &*self.limits;
            let label = &cx.plan.series.app;
            let metrics = &cx.shared.metrics;
            let mut span = cx.trace.child("admission");
            let admission = admit(limits, &cx.shared.limit_engine, metrics, label, &keys).await;
            match &admission {
                Ok(a) => {
                    span.set("tollgate.admission.result", "admitted");
                    span.set("tollgate.budget.metered", a.meter.is_some());
                }
                Err(e) => span.set("tollgate.admission.result", e.code()),
            }
            drop(span);
            let admission = admission?;
            cx.permit = admission.permit;
            let Some(meter) = admission.meter else {
                return Ok(None);
            };
            let method = match &cx.rpc {
                Some(call) => match (&call.method, &limits.unit) {
                    (None, BudgetUnit::Field(_)) => self
                        .schema
                        .as_ref()
                        .and_then(|s| s.method(cx.upstream_path)),
                    (method, _) => method.clone(),
                },
                // Plain HTTP has no messages: only bytes are metered as they stream.
                None if limits.unit == BudgetUnit::Bytes => None,
                None => return Ok(None),
            };
            let exhausted = self.exhausted.get_or_init(|| {
                metrics
                    .budget_exhausted
                    .with_label_values(&[&**label, "mid_stream"])
            });
            let filter = budget_filter(limits, meter, method.as_ref(), exhausted.clone());
            cx.units = Some(filter.spent.clone());
            cx.meter = Some(Box::new(filter));
            Ok(None)
        }))
    }
}

/// The stream filter paying for each response message from the app's budget.
fn budget_filter(
    limits: &AppLimits,
    meter: Meter,
    method: Option<&MethodSchema>,
    exhausted: IntCounter,
) -> BudgetFilter {
    let units = match &limits.unit {
        BudgetUnit::Bytes => Units::Bytes,
        BudgetUnit::Field(path) => {
            match method.and_then(|m| FieldPath::resolve(m.output(), path)) {
                Some(field) => Units::Field(field),
                None => {
                    tracing::warn!(app = %limits.app, field = %path, "budget field not in the route's schema; metering messages");
                    Units::Messages
                }
            }
        }
        BudgetUnit::Messages | BudgetUnit::Requests => Units::Messages,
    };
    BudgetFilter::new(
        meter,
        units,
        limits.app.clone(),
        exhausted,
        limits.budget_fails_open(),
    )
}
