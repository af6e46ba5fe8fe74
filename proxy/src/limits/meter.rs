//! The budget as a stream filter: every response message is paid for before it is
//! forwarded; the first one the budget cannot pay for ends the stream with
//! `CANCELLED` and a `BUDGET_EXCEEDED` error detail, and the upstream stream is reset.

use bytes::Bytes;
use prometheus::IntCounter;
use prost::Message;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use tollgate_filters::budget::{BudgetError, Meter, Verdict as Paid};
use tollgate_filters::filter::{StreamFilter, Verdict};
use tollgate_filters::rpc::schema::FieldPath;
use tollgate_filters::rpc::{Code, RpcStatus};

/// How many budget units a message costs.
#[derive(Debug)]
pub enum Units {
    /// One per message.
    Messages,
    /// Its encoded size.
    Bytes,
    /// A numeric field of the message (absent: 0).
    Field(FieldPath),
}

impl Units {
    fn of(&self, message: &[u8]) -> u64 {
        match self {
            Units::Messages => 1,
            Units::Bytes => message.len() as u64,
            Units::Field(path) => path.read_u64(message).unwrap_or(0),
        }
    }
}

type Paying = Pin<Box<dyn Future<Output = (Meter, Result<Paid, BudgetError>)> + Send>>;

/// Meters one response stream.
pub struct BudgetFilter {
    meter: Option<Meter>,
    paying: Option<Paying>,
    units: Units,
    app: Arc<str>,
    /// `tollgate_budget_exhausted_total{app, when="mid_stream"}` of the app.
    exhausted: IntCounter,
    /// Units paid so far, read by the request's usage record.
    pub spent: Arc<AtomicU64>,
    /// Forward messages unmetered when the budget store fails (`on_backend_error = allow`).
    fail_open: bool,
}

impl BudgetFilter {
    pub fn new(
        meter: Meter,
        units: Units,
        app: Arc<str>,
        exhausted: IntCounter,
        fail_open: bool,
    ) -> Self {
        BudgetFilter {
            meter: Some(meter),
            paying: None,
            units,
            app,
            exhausted,
            spent: Arc::new(AtomicU64::new(0)),
            fail_open,
        }
    }

    fn verdict(&mut self, paid: Result<Paid, BudgetError>, units: u64) -> Verdict {
        match paid {
            Ok(Paid::Continue) => {
                self.spent.fetch_add(units, Relaxed);
                Verdict::Continue
            }
            Ok(Paid::Exhausted) => {
                self.exhausted.inc();
                tracing::info!(app = %self.app, "budget spent: stream cut");
                Verdict::Stop(budget_exceeded(&self.app))
            }
            Err(_) if self.fail_open => Verdict::Continue,
            Err(e) => Verdict::Stop(RpcStatus::new(
                Code::Unavailable,
                format!("budget store unavailable: {e}"),
            )),
        }
    }
}

impl StreamFilter for BudgetFilter {
    fn poll_response_message(&mut self, cx: &mut Context<'_>, message: &[u8]) -> Poll<Verdict> {
        let units = self.units.of(message);
        if self.paying.is_none() {
            let Some(mut meter) = self.meter.take() else {
                return Poll::Ready(Verdict::Stop(budget_exceeded(&self.app)));
            };
            if let Some(paid) = meter.try_consume_held(units) {
                self.meter = Some(meter);
                return Poll::Ready(self.verdict(Ok(paid), units));
            }
            self.paying = Some(Box::pin(async move {
                let paid = meter.consume(units).await;
                (meter, paid)
            }));
        }
        let Some(paying) = self.paying.as_mut() else {
            return Poll::Pending;
        };
        let (meter, paid) = std::task::ready!(paying.as_mut().poll(cx));
        self.paying = None;
        self.meter = Some(meter);
        Poll::Ready(self.verdict(paid, units))
    }
}

/// `CANCELLED`, saying why, with a `google.rpc.ErrorInfo` detail a client can match.
pub fn budget_exceeded(app: &str) -> RpcStatus {
    let message = "BUDGET_EXCEEDED: the app's budget for this period is spent".to_string();
    let info = ErrorInfo {
        reason: "BUDGET_EXCEEDED".into(),
        domain: "tollgate".into(),
        metadata: [("app".to_string(), app.to_string())].into(),
    };
    let status = tollgate_proto::google::rpc::Status {
        code: Code::Canceled as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: info.encode_to_vec(),
        }],
    };
    RpcStatus {
        code: Code::Canceled,
        message,
        details: Some(Bytes::from(status.encode_to_vec())),
    }
}

/// `google.rpc.ErrorInfo` (google/rpc/error_details.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(map = "string, string", tag = "3")]
    metadata: std::collections::HashMap<String, String>,
}
