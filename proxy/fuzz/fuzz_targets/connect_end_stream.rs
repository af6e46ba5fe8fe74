//! What a gRPC upstream ends a call with, as the proxy reads it and hands it to a
//! gRPC-Web or Connect client: the gRPC-Web trailer block
//! (`filters/src/rpc/grpc_web.rs`), the status trailers (`grpc-status`, percent-encoded
//! `grpc-message`, base64 `grpc-status-details-bin` holding a `google.rpc.Status`,
//! `filters/src/rpc/status.rs`), and the Connect end-of-stream and error JSON built from
//! them (`filters/src/rpc/connect.rs`).
//!
//! The proxy never parses Connect end-of-stream JSON (it only writes it, the upstream
//! side is always gRPC), so the JSON is checked as output: whatever the upstream sends,
//! it is valid JSON that says what the trailers said.
//!
//! Input: 1 mode byte, then the payload.
//!
//! Properties:
//! - mode 0 (trailer block): no panic; a block that parses, framed again with
//!   `trailer_frame`, is one trailers envelope whose payload parses to the same map; the
//!   status read from it survives `write_trailers`/`from_trailers`; `end_stream_json` is a
//!   JSON object whose `error.code`/`error.message` are the status's and whose `metadata`
//!   is exactly the unreserved trailers; `error_json` is a JSON object with the code;
//! - mode 1 (status built from raw bytes: code, message, `details` as undecoded protobuf):
//!   the same JSON checks, each detail a `{type, value}` pair of strings with `value`
//!   unpadded base64;
//! - `percent_decode_message` never panics, and inverts `percent_encode_message`, whose
//!   output is visible ASCII.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use bytes::Bytes;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_filters::rpc::connect::{end_stream_json, error_json, is_reserved_metadata};
use tollgate_filters::rpc::envelope::FLAG_TRAILERS;
use tollgate_filters::rpc::grpc_web::{parse_trailer_block, trailer_frame};
use tollgate_filters::rpc::status::{percent_decode_message, percent_encode_message};
use tollgate_filters::rpc::{Code, EnvelopeDecoder, RpcStatus};

fn check_error_object(err: &Value, status: &RpcStatus) {
    let err = err.as_object().expect("error is an object");
    assert_eq!(
        err.get("code").and_then(Value::as_str),
        Some(status.code.connect_name())
    );
    assert_eq!(
        Code::from_connect_name(status.code.connect_name()),
        Some(status.code)
    );
    match err.get("message") {
        None => assert!(status.message.is_empty()),
        Some(m) => assert_eq!(m.as_str(), Some(status.message.as_str())),
    }
    if let Some(details) = err.get("details") {
        let details = details.as_array().expect("details is an array");
        assert!(!details.is_empty());
        for d in details {
            let d = d.as_object().expect("detail is an object");
            assert!(d.get("type").is_some_and(Value::is_string));
            let value = d.get("value").and_then(Value::as_str).expect("value");
            assert!(STANDARD_NO_PAD.decode(value).is_ok());
        }
    }
}

fn check_json(status: &RpcStatus, trailers: &HeaderMap) {
    let unary: Value = serde_json::from_slice(&error_json(status)).expect("error_json is JSON");
    check_error_object(&unary, status);

    let end: Value = serde_json::from_slice(&end_stream_json(status, trailers))
        .expect("end_stream_json is JSON");
    let end = end.as_object().expect("end-of-stream is an object");
    match end.get("error") {
        None => assert_eq!(status.code, Code::Ok),
        Some(e) => {
            assert_ne!(status.code, Code::Ok);
            check_error_object(e, status);
        }
    }
    let expected: Vec<&str> = {
        let mut k: Vec<&str> = trailers
            .keys()
            .filter(|k| !is_reserved_metadata(k))
            .map(|k| k.as_str())
            .collect();
        k.sort_unstable();
        k
    };
    match end.get("metadata") {
        None => assert!(expected.is_empty()),
        Some(m) => {
            let m = m.as_object().expect("metadata is an object");
            let keys: Vec<&str> = m.keys().map(String::as_str).collect();
            assert_eq!(keys, expected);
            for (k, v) in m {
                let got: Vec<&str> = v
                    .as_array()
                    .expect("metadata values are an array")
                    .iter()
                    .map(|s| s.as_str().expect("metadata value is a string"))
                    .collect();
                let want: Vec<String> = trailers
                    .get_all(k.as_str())
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                assert_eq!(got, want);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let _ = percent_decode_message(payload);
    let text = String::from_utf8_lossy(payload);
    let encoded = percent_encode_message(&text);
    assert!(encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)));
    assert_eq!(percent_decode_message(encoded.as_bytes()), text);

    if mode & 1 == 0 {
        let Ok(trailers) = parse_trailer_block(payload) else {
            return;
        };
        // Framed again, it is one trailers envelope that parses to the same map.
        let frame = trailer_frame(&trailers);
        let mut d = EnvelopeDecoder::new(u64::MAX);
        d.push(frame);
        let env = d.next_envelope().expect("own frame").expect("whole frame");
        assert_eq!(env.flags, FLAG_TRAILERS);
        assert_eq!(d.finish(), Ok(()));
        assert_eq!(
            parse_trailer_block(&env.data).expect("own block parses"),
            trailers
        );

        let Some(status) = RpcStatus::from_trailers(&trailers) else {
            assert!(!trailers.contains_key("grpc-status"));
            return;
        };
        let mut written = HeaderMap::new();
        status.write_trailers(&mut written);
        assert_eq!(RpcStatus::from_trailers(&written), Some(status.clone()));
        check_json(&status, &trailers);
    } else {
        // A status as it would be after reading: any code, any message, details that
        // are whatever bytes the upstream base64-encoded.
        let (code, rest) = payload.split_first().map_or((0, &[][..]), |(c, r)| (*c, r));
        let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let status = RpcStatus {
            code: Code::from_i32(i32::from(code % 20)),
            message: String::from_utf8_lossy(&rest[..cut]).into_owned(),
            details: (cut < rest.len()).then(|| Bytes::copy_from_slice(&rest[cut + 1..])),
        };
        check_json(&status, &HeaderMap::new());
        let mut written = HeaderMap::new();
        status.write_trailers(&mut written);
        let read = RpcStatus::from_trailers(&written).expect("grpc-status written");
        assert_eq!(read.code, status.code);
        assert_eq!(read.message, status.message);
        // Empty details are written as an empty header, read back as empty.
        assert_eq!(
            read.details.as_deref().unwrap_or_default(),
            status.details.as_deref().unwrap_or_default()
        );
    }
});
