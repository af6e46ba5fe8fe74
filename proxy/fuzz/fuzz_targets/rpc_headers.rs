//! The small RPC parsers a client or upstream reaches with one header or query:
//! Connect GET queries (`filters/src/rpc/protocol.rs`), `grpc-timeout` and
//! `connect-timeout-ms` (`timeout.rs`), encoding headers and gzip with its output cap
//! (`compression.rs`), protocol detection from `content-type`, and the JSON field
//! metering reads from Connect bodies (`field_path.rs`).
//!
//! Input: 1 mode byte, then the payload.
//!
//! Properties (each mode also: no panic):
//! - 0: a Connect GET query that parses is detected as Connect unary GET with its codec;
//! - 1: a `connect-timeout-ms` converts to a `grpc-timeout` iff it parses, and the
//!   converted deadline is never shorter and less than one of its units longer;
//! - 3: `gunzip` never returns more than its cap; `gunzip(gzip(x))` is `x`, and with a cap
//!   one byte short it is `TooLarge`;
//! - 2, 4, 5: encoding headers, `json_field_u64`, `detect` on POST: no panic.
#![no_main]

use http::{HeaderMap, HeaderValue, Method, header};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tollgate_filters::rpc::RpcProtocol;
use tollgate_filters::rpc::compression::{CompressionError, Encoding, accepts_gzip, gunzip, gzip};
use tollgate_filters::rpc::field_path::json_field_u64;
use tollgate_filters::rpc::protocol::parse_connect_get;
use tollgate_filters::rpc::timeout::{
    connect_to_grpc_timeout, parse_connect_timeout, parse_grpc_timeout,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    match mode % 6 {
        0 => {
            let query = String::from_utf8_lossy(payload);
            if let Ok(q) = parse_connect_get(&query) {
                let detected = RpcProtocol::detect(&Method::GET, &HeaderMap::new(), Some(&query));
                assert_eq!(
                    detected,
                    Some(RpcProtocol::ConnectUnary {
                        codec: q.codec,
                        get: true
                    })
                );
            }
        }
        1 => {
            let Ok(v) = HeaderValue::from_bytes(payload) else {
                return;
            };
            let _ = parse_grpc_timeout(&v);
            let connect = parse_connect_timeout(&v);
            match connect_to_grpc_timeout(&v) {
                Ok(g) => {
                    let asked = connect.expect("converted value parses as connect-timeout-ms");
                    let given = parse_grpc_timeout(&g).expect("converted value parses");
                    let unit = match g.as_bytes().last() {
                        Some(b'm') => Duration::from_millis(1),
                        Some(b'S') => Duration::from_secs(1),
                        Some(b'M') => Duration::from_secs(60),
                        Some(b'H') => Duration::from_secs(3600),
                        other => panic!("unexpected unit {other:?} in {g:?}"),
                    };
                    assert!(given >= asked, "{v:?} -> {g:?} gives less time");
                    assert!(
                        given - asked < unit,
                        "{v:?} -> {g:?} rounds up more than a unit"
                    );
                }
                Err(_) => assert_eq!(connect, None),
            }
        }
        2 => {
            if let Ok(v) = HeaderValue::from_bytes(payload) {
                let _ = Encoding::from_header(Some(&v));
                let _ = accepts_gzip(Some(&v));
            }
        }
        3 => {
            let (limit, body) = match payload {
                [a, b, rest @ ..] => (u64::from(u16::from_be_bytes([*a, *b])), rest),
                _ => return,
            };
            if let Ok(out) = gunzip(body, limit) {
                assert!(out.len() as u64 <= limit);
            }
            let packed = gzip(body);
            let len = body.len() as u64;
            assert_eq!(&gunzip(&packed, len).expect("own gzip")[..], body);
            if len > 0 {
                assert!(matches!(
                    gunzip(&packed, len - 1),
                    Err(CompressionError::TooLarge(l)) if l == len - 1
                ));
            }
        }
        4 => {
            let cut = payload.iter().position(|&b| b == 0).unwrap_or(0);
            let path = String::from_utf8_lossy(&payload[..cut]);
            let json = payload.get(cut + 1..).unwrap_or_default();
            let _ = json_field_u64(json, &path);
        }
        _ => {
            let Ok(v) = HeaderValue::from_bytes(payload) else {
                return;
            };
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v);
            if let Some(p) = RpcProtocol::detect(&Method::POST, &h, None) {
                let _ = p.response_content_type();
                let _ = p.codec();
            }
        }
    }
});
