//! Method schemas from a protobuf descriptor set, and Connect JSON transcoding.
//!
//! Connect JSON is the canonical proto3 JSON mapping: lowerCamelCase names on
//! output (either name accepted on input), 64-bit integers as strings, bytes as
//! base64, enums by name, unpopulated fields omitted; unknown JSON fields are
//! refused. A [`Schema`] is built once per descriptor set, off the request path,
//! and indexes every method by its gRPC path for O(1) lookup. A method's protobuf
//! → JSON is written straight from the wire (`super::wire_json`) with tables built
//! along with the schema; `DynamicMessage` writes what that module leaves to it.
//! [`proto_to_json`] is the `DynamicMessage` path alone, the reference output.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor,
    SerializeOptions,
};

pub use super::field_path::{FieldPath, json_field_u64, proto_field_u64};
use super::wire_json::{self, JsonPlan, MessageId, PlanBuilder};

/// A descriptor set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("invalid file descriptor set: {0}")]
    Descriptor(#[from] prost_reflect::DescriptorError),
}

/// A message could not be transcoded.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("invalid JSON for {message}: {reason}")]
    Json { message: String, reason: String },
    #[error("invalid protobuf for {message}: {source}")]
    Proto {
        message: String,
        source: prost::DecodeError,
    },
    #[error("cannot write {message} as JSON: {reason}")]
    Serialize { message: String, reason: String },
}

/// All services of a descriptor set, indexed by gRPC path. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Schema {
    inner: Arc<SchemaInner>,
}

#[derive(Debug)]
struct SchemaInner {
    pool: DescriptorPool,
    methods: HashMap<String, MethodSchema>,
}

impl Schema {
    /// Loads an encoded `google.protobuf.FileDescriptorSet` (imports included).
    pub fn from_bytes(file_descriptor_set: &[u8]) -> Result<Schema, SchemaError> {
        let pool = DescriptorPool::decode(file_descriptor_set)?;
        let mut plans = PlanBuilder::default();
        let found: Vec<_> = pool
            .services()
            .flat_map(|s| s.methods().collect::<Vec<_>>())
            .map(|m| {
                let ids = (plans.add(&m.input()), plans.add(&m.output()));
                (m, ids)
            })
            .collect();
        let plan = Arc::new(plans.finish());
        let methods = found
            .into_iter()
            .map(|(m, ids)| {
                let path = format!("/{}/{}", m.parent_service().full_name(), m.name());
                (path, MethodSchema::new(m, Arc::clone(&plan), ids))
            })
            .collect();
        Ok(Schema {
            inner: Arc::new(SchemaInner { pool, methods }),
        })
    }

    /// The method for a gRPC path `/pkg.Service/Method`; `None` if unknown.
    pub fn method(&self, path: &str) -> Option<MethodSchema> {
        self.inner.methods.get(path).cloned()
    }

    /// Every method's gRPC path, in no particular order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.inner.methods.keys().map(String::as_str)
    }

    /// The underlying descriptor pool.
    pub fn pool(&self) -> &DescriptorPool {
        &self.inner.pool
    }
}

/// One RPC method: its message types, streaming shape and idempotency.
#[derive(Debug, Clone)]
pub struct MethodSchema {
    method: MethodDescriptor,
    input: MessageDescriptor,
    output: MessageDescriptor,
    no_side_effects: bool,
    /// JSON tables of the schema, shared by all its methods.
    json: Arc<JsonPlan>,
    /// The input and output types in `json`.
    json_ids: (MessageId, MessageId),
}

impl MethodSchema {
    fn new(
        method: MethodDescriptor,
        json: Arc<JsonPlan>,
        json_ids: (MessageId, MessageId),
    ) -> Self {
        let no_side_effects = method
            .method_descriptor_proto()
            .options
            .as_ref()
            .is_some_and(|o| o.idempotency_level().as_str_name() == "NO_SIDE_EFFECTS");
        MethodSchema {
            input: method.input(),
            output: method.output(),
            method,
            no_side_effects,
            json,
            json_ids,
        }
    }

    /// The method's descriptor.
    pub fn descriptor(&self) -> &MethodDescriptor {
        &self.method
    }

    /// Fully qualified name, `pkg.Service.Method`.
    pub fn full_name(&self) -> &str {
        self.method.full_name()
    }

    /// Request message type.
    pub fn input(&self) -> &MessageDescriptor {
        &self.input
    }

    /// Response message type.
    pub fn output(&self) -> &MessageDescriptor {
        &self.output
    }

    /// `idempotency_level = NO_SIDE_EFFECTS`: Connect GET is allowed.
    pub fn no_side_effects(&self) -> bool {
        self.no_side_effects
    }

    /// The client sends a stream of messages.
    pub fn client_streaming(&self) -> bool {
        self.method.is_client_streaming()
    }

    /// The server sends a stream of messages.
    pub fn server_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }

    /// Connect JSON request → protobuf.
    pub fn request_json_to_proto(&self, json: &[u8]) -> Result<Bytes, TranscodeError> {
        json_to_proto(&self.input, json)
    }

    /// Protobuf response → Connect JSON.
    pub fn response_proto_to_json(&self, proto: &[u8]) -> Result<Bytes, TranscodeError> {
        transcode_or_fall_back(&self.json, self.json_ids.1, &self.output, proto)
    }

    /// Protobuf request → JSON (clients and tests).
    pub fn request_proto_to_json(&self, proto: &[u8]) -> Result<Bytes, TranscodeError> {
        transcode_or_fall_back(&self.json, self.json_ids.0, &self.input, proto)
    }

    /// JSON response → protobuf (clients and tests).
    pub fn response_json_to_proto(&self, json: &[u8]) -> Result<Bytes, TranscodeError> {
        json_to_proto(&self.output, json)
    }
}

/// Parses canonical JSON for `desc` (unknown fields and trailing data refused)
/// and encodes it as protobuf.
pub fn json_to_proto(desc: &MessageDescriptor, json: &[u8]) -> Result<Bytes, TranscodeError> {
    let err = |e: serde_json::Error| TranscodeError::Json {
        message: desc.full_name().to_owned(),
        reason: e.to_string(),
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let msg =
        DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &DeserializeOptions::new())
            .map_err(err)?;
    de.end().map_err(err)?;
    Ok(Bytes::from(msg.encode_to_vec()))
}

/// Decodes protobuf for `desc` into a `DynamicMessage` and writes canonical JSON:
/// the reference output. [`MethodSchema`]'s methods write the same JSON straight
/// from the wire, with the schema's tables.
pub fn proto_to_json(desc: &MessageDescriptor, proto: &[u8]) -> Result<Bytes, TranscodeError> {
    let msg =
        DynamicMessage::decode(desc.clone(), proto).map_err(|source| TranscodeError::Proto {
            message: desc.full_name().to_owned(),
            source,
        })?;
    let mut ser = serde_json::Serializer::new(Vec::with_capacity(proto.len() * 2 + 2));
    msg.serialize_with_options(&mut ser, &SerializeOptions::new())
        .map_err(|e| TranscodeError::Serialize {
            message: desc.full_name().to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Bytes::from(ser.into_inner()))
}

/// Writes JSON straight from the wire with `plan`'s tables for `root` (`desc`);
/// what that path refuses or leaves aside goes through [`proto_to_json`], which
/// has the exact error or the output.
pub(super) fn transcode_or_fall_back(
    plan: &JsonPlan,
    root: MessageId,
    desc: &MessageDescriptor,
    proto: &[u8],
) -> Result<Bytes, TranscodeError> {
    match wire_json::transcode(plan, root, proto) {
        Ok(json) => Ok(Bytes::from(json)),
        Err(_) => proto_to_json(desc, proto),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use tollgate_proto::FILE_DESCRIPTOR_SET;
    use tollgate_proto::test::v1::{EchoRequest, StreamResponse};

    const SVC: &str = "/tollgate.test.v1.TestService";

    fn schema() -> Schema {
        Schema::from_bytes(FILE_DESCRIPTOR_SET).unwrap()
    }

    fn json(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn indexes_methods_by_path() {
        let s = schema();
        let echo = s.method(&format!("{SVC}/Echo")).unwrap();
        assert_eq!(echo.full_name(), "tollgate.test.v1.TestService.Echo");
        assert_eq!(echo.input().full_name(), "tollgate.test.v1.EchoRequest");
        assert_eq!(echo.output().full_name(), "tollgate.test.v1.EchoResponse");
        assert!(echo.no_side_effects());
        assert!(!echo.client_streaming() && !echo.server_streaming());

        let shapes = [
            ("ServerStream", false, true),
            ("ClientStream", true, false),
            ("BidiStream", true, true),
            ("Fail", false, false),
        ];
        for (name, client, server) in shapes {
            let m = s.method(&format!("{SVC}/{name}")).unwrap();
            assert_eq!(
                (m.client_streaming(), m.server_streaming()),
                (client, server),
                "{name}"
            );
            assert!(!m.no_side_effects(), "{name}");
        }
        for unknown in [
            "/tollgate.test.v1.TestService/Nope",
            "/tollgate.test.v1.Nope/Echo",
            "tollgate.test.v1.TestService/Echo",
            "/TestService/Echo",
            "",
        ] {
            assert!(s.method(unknown).is_none(), "{unknown}");
        }
        assert!(s.paths().any(|p| p == "/tollgate.test.v1.TestService/Slow"));
    }

    #[test]
    fn bad_descriptor_set_is_refused() {
        assert!(Schema::from_bytes(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn echo_request_round_trip() {
        let echo = schema().method(&format!("{SVC}/Echo")).unwrap();
        let proto = echo
            .request_json_to_proto(r#"{"message":"hi ✓","payloadBytes":42}"#.as_bytes())
            .unwrap();
        let decoded = EchoRequest::decode(&proto[..]).unwrap();
        assert_eq!(
            decoded,
            EchoRequest {
                message: "hi ✓".into(),
                payload_bytes: 42
            }
        );
        // The proto field name is accepted on input too.
        let same = echo
            .request_json_to_proto(r#"{"message":"hi ✓","payload_bytes":42}"#.as_bytes())
            .unwrap();
        assert_eq!(same, proto);
        // And back: camelCase names.
        assert_eq!(
            json(&echo.request_proto_to_json(&proto).unwrap()),
            json!({"message": "hi ✓", "payloadBytes": 42})
        );
        // Empty object is the empty message.
        assert!(echo.request_json_to_proto(b"{}").unwrap().is_empty());
    }

    #[test]
    fn stream_response_int64_as_string_and_camel_case() {
        let m = schema().method(&format!("{SVC}/ServerStream")).unwrap();
        let msg = StreamResponse {
            seq: 3,
            payload: vec![0, 1, 0xff],
            usage_tokens: 9_007_199_254_740_993, // 2^53 + 1: not exact as a double
        };
        let out = m.response_proto_to_json(&msg.encode_to_vec()).unwrap();
        assert_eq!(
            json(&out),
            json!({"seq": 3, "payload": "AAH/", "usageTokens": "9007199254740993"})
        );
        let back = m.response_json_to_proto(&out).unwrap();
        assert_eq!(StreamResponse::decode(&back[..]).unwrap(), msg);
        // Unpopulated fields are omitted.
        assert_eq!(&m.response_proto_to_json(b"").unwrap()[..], b"{}");
        // Numbers are accepted for int64 on input.
        let p = m.response_json_to_proto(br#"{"usageTokens": 7}"#).unwrap();
        assert_eq!(StreamResponse::decode(&p[..]).unwrap().usage_tokens, 7);
    }

    #[test]
    fn invalid_input_is_refused() {
        let echo = schema().method(&format!("{SVC}/Echo")).unwrap();
        for bad in [
            &br#"{"message":"x","bogus":1}"#[..],
            br#"{"payloadBytes":"not a number"}"#,
            br#"{"message":1}"#,
            br#"{"message":"x"} trailing"#,
            b"",
            b"[]",
        ] {
            let err = echo.request_json_to_proto(bad).unwrap_err();
            assert!(matches!(err, TranscodeError::Json { .. }), "{err}");
            assert!(
                err.to_string().contains("tollgate.test.v1.EchoRequest"),
                "{err}"
            );
        }
        let err = echo.response_proto_to_json(b"\x0a\x05ab").unwrap_err();
        assert!(matches!(err, TranscodeError::Proto { .. }), "{err}");
    }

    #[test]
    fn schema_is_cheap_to_share() {
        let s = schema();
        let t = s.clone();
        assert!(Arc::ptr_eq(&s.inner, &t.inner));
    }
}
