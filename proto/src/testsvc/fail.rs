//! Builds the error returned by `Fail`.

use prost::{Message, Name};
use tonic::{Code, Status};

use crate::{
    google::rpc,
    test::v1::{ErrorDetail, FailRequest},
};

/// `ErrorDetail.reason` attached by `Fail`.
pub const ERROR_DETAIL_REASON: &str = "REQUESTED_FAILURE";
/// `ErrorDetail.domain` attached by `Fail`.
pub const ERROR_DETAIL_DOMAIN: &str = "test.tollgate";

/// The requested status; code 0 is refused with `INVALID_ARGUMENT` and
/// codes outside 1..=16 become `UNKNOWN`.
pub(super) fn status(req: &FailRequest) -> Status {
    if req.code == 0 {
        return Status::invalid_argument("Fail needs a non-zero code");
    }
    let code = Code::from(req.code);
    if !req.with_details {
        return Status::new(code, req.message.clone());
    }
    let detail = ErrorDetail {
        reason: ERROR_DETAIL_REASON.to_owned(),
        domain: ERROR_DETAIL_DOMAIN.to_owned(),
    };
    let details = rpc::Status {
        code: code as i32,
        message: req.message.clone(),
        details: vec![prost_types::Any {
            type_url: ErrorDetail::type_url(),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(code, req.message.clone(), details.encode_to_vec().into())
}
