//! Protobuf → Connect JSON as the proxy writes it for a JSON client
//! (`filters/src/rpc/wire_json/`, straight from the wire), against the reference
//! path (`DynamicMessage` + serde) on whatever bytes an upstream sends.
//!
//! Input: 1 byte picking a method of the test service's descriptor set (and whether
//! its request or response type), then the message bytes.
//!
//! Properties: no panic; the wire path refuses exactly what the reference refuses;
//! when both write JSON, it is the same JSON value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::OnceLock;
use tollgate_filters::rpc::schema::{MethodSchema, Schema, proto_to_json};

fn methods() -> &'static [MethodSchema] {
    static METHODS: OnceLock<Vec<MethodSchema>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let schema = Schema::from_bytes(tollgate_proto::FILE_DESCRIPTOR_SET).expect("schema");
        let mut paths: Vec<&str> = schema.paths().collect();
        paths.sort_unstable();
        paths
            .into_iter()
            .filter_map(|p| schema.method(p))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, proto)) = data.split_first() else {
        return;
    };
    let methods = methods();
    let Some(method) = methods.get(usize::from(pick >> 1) % methods.len().max(1)) else {
        return;
    };
    let (fast, reference) = if pick & 1 == 0 {
        (
            method.response_proto_to_json(proto),
            proto_to_json(method.output(), proto),
        )
    } else {
        (
            method.request_proto_to_json(proto),
            proto_to_json(method.input(), proto),
        )
    };
    match (fast, reference) {
        (Ok(fast), Ok(reference)) => {
            let fast: Value = serde_json::from_slice(&fast).expect("wire path writes JSON");
            let reference: Value = serde_json::from_slice(&reference).expect("reference JSON");
            assert_eq!(fast, reference);
        }
        (Err(_), Err(_)) => {}
        (fast, reference) => panic!(
            "the paths disagree: wire {:?}, reference {:?}",
            fast.map(|_| ()),
            reference.map(|_| ())
        ),
    }
});
