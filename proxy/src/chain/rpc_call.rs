//! gRPC services: reads the call from the request head (protocol allowed on the route,
//! method, deadline, codec, the method's schema for JSON and GET) and refuses what the
//! route cannot serve, in the client's protocol. The call it records drives the body
//! translation and the response shaping later.

use super::{HeadFilter, RequestCx, Step};
use crate::rpc;
use tollgate_filters::rpc::Schema;
use tollgate_routing::RpcSpec;

#[derive(Debug)]
pub struct RpcCallHead {
    spec: RpcSpec,
    schema: Option<Schema>,
}

impl RpcCallHead {
    pub fn new(spec: RpcSpec, schema: Option<Schema>) -> Self {
        RpcCallHead { spec, schema }
    }
}

impl HeadFilter for RpcCallHead {
    fn on_request<'a>(
        &'a self,
        head: &'a mut http::request::Parts,
        cx: &'a mut RequestCx<'_>,
    ) -> Step<'a> {
        let call = rpc::begin(
            &self.spec,
            self.schema.as_ref(),
            cx.protocol,
            &head.method,
            &head.headers,
            cx.upstream_path,
        );
        match call {
            Ok(call) => {
                cx.rpc = Some(call);
                Step::NEXT
            }
            Err(err) => Step::refuse(err),
        }
    }
}
