//! `grpc.health.v1.Health/Check` as an active health check, without I/O: the request a
//! probe sends and the verdict on the response it reads (`health.rs` does the sending,
//! on the cluster's own HTTP/2 client).
//!
//! `SERVING` is healthy. `NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN`, a gRPC error
//! (`NOT_FOUND` for a service the server does not know, `UNIMPLEMENTED` for a server
//! without the health service), an HTTP status other than 200 or a malformed answer
//! are not (https://github.com/grpc/grpc/blob/master/doc/health-checking.md).

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use prost::Message;
use std::time::Duration;
use tollgate_proto::grpc::health::v1::health_check_response::ServingStatus;
use tollgate_proto::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};

/// The method's path.
pub const PATH: &str = "/grpc.health.v1.Health/Check";
/// Most response body read: one small message (a status enum) and its prefix.
pub const MAX_RESPONSE_BYTES: usize = 1024;

/// Why a check found the endpoint unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    #[error("grpc-status {0}")]
    GrpcStatus(String),
    #[error("no grpc-status")]
    NoGrpcStatus,
    #[error("the response message is malformed")]
    Malformed,
    #[error("serving status {0}")]
    NotServing(&'static str),
}

/// The length-prefixed `HealthCheckRequest` asking about `service`.
pub fn request_body(service: &str) -> Bytes {
    let msg = HealthCheckRequest {
        service: service.to_string(),
    };
    let len = msg.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    msg.encode_raw(&mut out);
    out.freeze()
}

/// The request headers: a gRPC call with the check's timeout as its deadline.
pub fn request_headers(timeout: Duration) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(4);
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("te", HeaderValue::from_static("trailers"));
    h.insert(
        "user-agent",
        HeaderValue::from_static("tollgate-health-check"),
    );
    // At most 8 digits (gRPC's limit): milliseconds up to about 27 hours.
    let ms = timeout.as_millis().min(99_999_999);
    if let Ok(v) = HeaderValue::from_str(&format!("{ms}m")) {
        h.insert("grpc-timeout", v);
    }
    h
}

/// The verdict on a whole response: its status and headers, its body and its trailers
/// (none for a trailers-only response, whose `grpc-status` is in the headers).
pub fn verdict(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    trailers: Option<&HeaderMap>,
) -> Result<(), Unhealthy> {
    if status != StatusCode::OK {
        return Err(Unhealthy::HttpStatus(status.as_u16()));
    }
    let grpc_status = trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .ok_or(Unhealthy::NoGrpcStatus)?;
    if grpc_status != "0" {
        let code = String::from_utf8_lossy(grpc_status.as_bytes()).into_owned();
        return Err(Unhealthy::GrpcStatus(code));
    }
    let serving = decode(body).ok_or(Unhealthy::Malformed)?;
    match serving {
        ServingStatus::Serving => Ok(()),
        other => Err(Unhealthy::NotServing(other.as_str_name())),
    }
}

/// The serving status in exactly one uncompressed message (the request sent no
/// `grpc-accept-encoding`, so a compressed one is malformed).
fn decode(body: &[u8]) -> Option<ServingStatus> {
    let (&flag, rest) = body.split_first()?;
    let (len, msg) = rest.split_first_chunk::<4>()?;
    if flag != 0 || u32::from_be_bytes(*len) as usize != msg.len() {
        return None;
    }
    let resp = HealthCheckResponse::decode(msg).ok()?;
    // An enum value this proto does not know is no SERVING either.
    Some(ServingStatus::try_from(resp.status).unwrap_or(ServingStatus::Unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(status: i32) -> Vec<u8> {
        let msg = HealthCheckResponse { status }.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        out.extend_from_slice(&msg);
        out
    }

    fn grpc_status(code: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_str(code).expect("value"));
        h
    }

    #[test]
    fn the_request_is_one_length_prefixed_message() {
        let body = request_body("pkg.Svc");
        assert_eq!(body[0], 0);
        assert_eq!(u32::from_be_bytes([body[1], body[2], body[3], body[4]]), 9);
        let req = HealthCheckRequest::decode(&body[5..]).expect("decodes");
        assert_eq!(req.service, "pkg.Svc");
        assert_eq!(&request_body("")[..], &[0, 0, 0, 0, 0]);
        let h = request_headers(Duration::from_millis(1500));
        assert_eq!(h["grpc-timeout"], "1500m");
        assert_eq!(h["content-type"], "application/grpc");
    }

    /// Status, headers, body and trailers of a response, and the verdict on it.
    type Case = (
        StatusCode,
        HeaderMap,
        Vec<u8>,
        Option<HeaderMap>,
        Result<(), Unhealthy>,
    );

    #[test]
    fn only_serving_with_status_ok_is_healthy() {
        let ok = StatusCode::OK;
        let none = HeaderMap::new();
        let serving = framed(ServingStatus::Serving as i32);
        let trailers_ok = grpc_status("0");
        let table: Vec<Case> = vec![
            (
                ok,
                none.clone(),
                serving.clone(),
                Some(trailers_ok.clone()),
                Ok(()),
            ),
            (
                ok,
                none.clone(),
                framed(ServingStatus::NotServing as i32),
                Some(trailers_ok.clone()),
                Err(Unhealthy::NotServing("NOT_SERVING")),
            ),
            (
                ok,
                none.clone(),
                framed(ServingStatus::ServiceUnknown as i32),
                Some(trailers_ok.clone()),
                Err(Unhealthy::NotServing("SERVICE_UNKNOWN")),
            ),
            (
                ok,
                none.clone(),
                framed(ServingStatus::Unknown as i32),
                Some(trailers_ok.clone()),
                Err(Unhealthy::NotServing("UNKNOWN")),
            ),
            (
                ok,
                none.clone(),
                framed(42),
                Some(trailers_ok.clone()),
                Err(Unhealthy::NotServing("UNKNOWN")),
            ),
            // Trailers-only: NOT_FOUND for an unknown service, UNIMPLEMENTED without the service.
            (
                ok,
                grpc_status("5"),
                Vec::new(),
                None,
                Err(Unhealthy::GrpcStatus("5".into())),
            ),
            (
                ok,
                grpc_status("12"),
                Vec::new(),
                None,
                Err(Unhealthy::GrpcStatus("12".into())),
            ),
            (
                ok,
                none.clone(),
                serving.clone(),
                Some(grpc_status("14")),
                Err(Unhealthy::GrpcStatus("14".into())),
            ),
            (
                ok,
                none.clone(),
                serving.clone(),
                None,
                Err(Unhealthy::NoGrpcStatus),
            ),
            (
                StatusCode::NOT_FOUND,
                none.clone(),
                serving.clone(),
                Some(trailers_ok.clone()),
                Err(Unhealthy::HttpStatus(404)),
            ),
            (
                ok,
                none.clone(),
                Vec::new(),
                Some(trailers_ok.clone()),
                Err(Unhealthy::Malformed),
            ),
            (
                ok,
                none.clone(),
                serving[..serving.len() - 1].to_vec(),
                Some(trailers_ok.clone()),
                Err(Unhealthy::Malformed),
            ),
            (
                ok,
                none.clone(),
                [serving.clone(), serving.clone()].concat(),
                Some(trailers_ok.clone()),
                Err(Unhealthy::Malformed),
            ),
            (
                ok,
                none.clone(),
                [&[1u8][..], &serving[1..]].concat(),
                Some(trailers_ok.clone()),
                Err(Unhealthy::Malformed),
            ),
        ];
        for (i, (status, headers, body, trailers, want)) in table.into_iter().enumerate() {
            assert_eq!(
                verdict(status, &headers, &body, trailers.as_ref()),
                want,
                "case {i}"
            );
        }
    }
}
