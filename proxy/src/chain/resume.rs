//! Resumes of resumable streams: a request carrying a resume token (or, for SSE, a
//! `Last-Event-ID` this edge issued) is answered from the stream's buffer, after auth
//! (the token is bound to the caller) and before admission (a resume starts no new
//! upstream call and bills nothing again). Other requests go on; the handler makes
//! their streams resumable when the answer is one.

use super::{HeadFilter, RequestCx, Step};
use crate::http::errors::ProxyError;
use crate::resume::token::{Owner, ResumeRequest, Wire};
use std::sync::Arc;
use tollgate_filters::rpc::{Code, RpcProtocol};
use tollgate_routing::ResumeSpec;

#[derive(Debug)]
pub struct Resume {
    spec: Arc<ResumeSpec>,
}

impl Resume {
    pub fn new(spec: Arc<ResumeSpec>) -> Self {
        Resume { spec }
    }
}

impl HeadFilter for Resume {
    fn on_request<'a>(
        &'a self,
        head: &'a mut http::request::Parts,
        cx: &'a mut RequestCx<'_>,
    ) -> Step<'a> {
        let wire = match cx.rpc.as_ref().map(|c| c.protocol) {
            None => Wire::Sse,
            Some(p) => Wire::Rpc(p),
        };
        let req = match ResumeRequest::from_headers(&head.headers, wire == Wire::Sse) {
            Ok(Some(req)) => req,
            Ok(None) => return Step::NEXT,
            Err(why) => return Step::refuse(ProxyError::Rpc(Code::InvalidArgument, why.into())),
        };
        if !wire.resumable() || matches!(wire, Wire::Rpc(RpcProtocol::ConnectUnary { .. })) {
            return Step::refuse(ProxyError::Rpc(
                Code::InvalidArgument,
                "only server streams (Connect streaming, gRPC-Web, SSE) can be resumed".into(),
            ));
        }
        let owner = Owner::of(&cx.plan.app.id, cx.identity.as_ref(), cx.upstream_path);
        let resumer = cx.shared.resume.clone();
        let spec = self.spec.clone();
        Step::Wait(Box::pin(async move {
            resumer.resume(&req, &owner, wire, &spec).await.map(Some)
        }))
    }
}
