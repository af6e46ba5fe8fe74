//! Reading one numeric field out of a message, for metering (say, a response's
//! `usage.total_tokens`), without decoding the whole message.
//!
//! [`FieldPath`] resolves a dotted path of field names against a descriptor once;
//! [`FieldPath::read_u64`] then walks the protobuf wire format directly, with
//! protobuf's merge rule: when a field occurs more than once, the last
//! occurrence wins (and repeated sub-messages merge). [`json_field_u64`] does the
//! same on Connect JSON.

use prost_reflect::{Kind, MessageDescriptor};

/// The numeric types a path may end at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numeric {
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Float,
    Double,
}

impl Numeric {
    fn of(kind: &Kind) -> Option<Numeric> {
        Some(match kind {
            Kind::Int32 => Numeric::Int32,
            Kind::Int64 => Numeric::Int64,
            Kind::Uint32 => Numeric::Uint32,
            Kind::Uint64 => Numeric::Uint64,
            Kind::Sint32 => Numeric::Sint32,
            Kind::Sint64 => Numeric::Sint64,
            Kind::Fixed32 => Numeric::Fixed32,
            Kind::Fixed64 => Numeric::Fixed64,
            Kind::Sfixed32 => Numeric::Sfixed32,
            Kind::Sfixed64 => Numeric::Sfixed64,
            Kind::Float => Numeric::Float,
            Kind::Double => Numeric::Double,
            _ => return None,
        })
    }
}

/// A resolved path to a singular numeric field through singular message fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    /// Field numbers from the outer message to the numeric field.
    numbers: Vec<u32>,
    leaf: Numeric,
}

impl FieldPath {
    /// Resolves `"usage.total_tokens"` against `desc`; each segment is a proto or
    /// JSON field name. `None` unless every step is a singular message field and
    /// the last a singular numeric one.
    pub fn resolve(desc: &MessageDescriptor, path: &str) -> Option<FieldPath> {
        let mut desc = desc.clone();
        let mut numbers = Vec::new();
        let mut segments = path.split('.').peekable();
        while let Some(seg) = segments.next() {
            let field = desc
                .get_field_by_name(seg)
                .or_else(|| desc.get_field_by_json_name(seg))?;
            if field.is_list() || field.is_map() {
                return None;
            }
            numbers.push(field.number());
            let kind = field.kind();
            if segments.peek().is_none() {
                return Some(FieldPath {
                    numbers,
                    leaf: Numeric::of(&kind)?,
                });
            }
            match kind {
                Kind::Message(m) => desc = m,
                _ => return None,
            }
        }
        None
    }

    /// The field's value in an encoded message: `None` when absent, negative,
    /// not a finite number, or when the message is malformed. Floating-point
    /// values are truncated.
    pub fn read_u64(&self, encoded: &[u8]) -> Option<u64> {
        scan(encoded, &self.numbers, self.leaf)
            .ok()
            .flatten()
            .flatten()
    }
}

/// Reads a numeric field located by a dotted path of field names from an
/// encoded message; `None` when absent or not numeric. Resolve a [`FieldPath`]
/// once instead when reading many messages.
pub fn proto_field_u64(desc: &MessageDescriptor, encoded: &[u8], path: &str) -> Option<u64> {
    FieldPath::resolve(desc, path)?.read_u64(encoded)
}

struct Malformed;

/// The last value of the path in `buf`: `None` if absent, `Some(None)` if present
/// but not a non-negative number of the expected encoding.
fn scan(mut buf: &[u8], numbers: &[u32], leaf: Numeric) -> Result<Option<Option<u64>>, Malformed> {
    let Some((&target, rest)) = numbers.split_first() else {
        return Err(Malformed);
    };
    let mut last = None;
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let hit = key >> 3 == u64::from(target);
        let is_leaf = rest.is_empty();
        match key & 7 {
            0 => {
                let v = varint(&mut buf)?;
                if hit {
                    last = Some(is_leaf.then(|| from_varint(leaf, v)).flatten());
                }
            }
            1 => {
                let b: [u8; 8] = take(&mut buf, 8)?.try_into().map_err(|_| Malformed)?;
                if hit {
                    last = Some(is_leaf.then(|| from_fixed64(leaf, b)).flatten());
                }
            }
            5 => {
                let b: [u8; 4] = take(&mut buf, 4)?.try_into().map_err(|_| Malformed)?;
                if hit {
                    last = Some(is_leaf.then(|| from_fixed32(leaf, b)).flatten());
                }
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| Malformed)?;
                let body = take(&mut buf, len)?;
                if hit {
                    if is_leaf {
                        // A packed or otherwise unexpected encoding of the field.
                        last = Some(None);
                    } else if let Some(v) = scan(body, rest, leaf)? {
                        // Sub-messages merge: only fields present here override.
                        last = Some(v);
                    }
                }
            }
            _ => return Err(Malformed),
        }
    }
    Ok(last)
}

fn varint(buf: &mut &[u8]) -> Result<u64, Malformed> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(Malformed)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Malformed)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], Malformed> {
    if buf.len() < n {
        return Err(Malformed);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn non_negative(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

fn from_float(f: f64) -> Option<u64> {
    // `as` saturates for values beyond u64::MAX.
    (f.is_finite() && f >= 0.0).then(|| f.trunc() as u64)
}

fn from_varint(leaf: Numeric, v: u64) -> Option<u64> {
    match leaf {
        // int32 is sign-extended on the wire; its low 32 bits are the value.
        Numeric::Int32 => non_negative(i64::from(v as u32 as i32)),
        Numeric::Int64 => non_negative(v as i64),
        Numeric::Uint32 => Some(u64::from(v as u32)),
        Numeric::Uint64 => Some(v),
        Numeric::Sint32 => {
            let n = v as u32;
            non_negative(i64::from((n >> 1) as i32 ^ -((n & 1) as i32)))
        }
        Numeric::Sint64 => non_negative((v >> 1) as i64 ^ -((v & 1) as i64)),
        _ => None,
    }
}

fn from_fixed64(leaf: Numeric, b: [u8; 8]) -> Option<u64> {
    match leaf {
        Numeric::Fixed64 => Some(u64::from_le_bytes(b)),
        Numeric::Sfixed64 => non_negative(i64::from_le_bytes(b)),
        Numeric::Double => from_float(f64::from_le_bytes(b)),
        _ => None,
    }
}

fn from_fixed32(leaf: Numeric, b: [u8; 4]) -> Option<u64> {
    match leaf {
        Numeric::Fixed32 => Some(u64::from(u32::from_le_bytes(b))),
        Numeric::Sfixed32 => non_negative(i64::from(i32::from_le_bytes(b))),
        Numeric::Float => from_float(f64::from(f32::from_le_bytes(b))),
        _ => None,
    }
}

/// Reads a numeric field from Connect JSON by a dotted path. Each segment
/// matches its key as written or in lowerCamelCase (`total_tokens` finds
/// `totalTokens`). Numbers and numeric strings (64-bit integers) are read;
/// fractions are truncated; negative or non-numeric values are `None`.
pub fn json_field_u64(json: &[u8], path: &str) -> Option<u64> {
    let root: serde_json::Value = serde_json::from_slice(json).ok()?;
    let mut v = &root;
    for seg in path.split('.') {
        let obj = v.as_object()?;
        v = match obj.get(seg) {
            Some(x) => x,
            None => obj.get(&lower_camel(seg))?,
        };
    }
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| from_float(n.as_f64()?)),
        serde_json::Value::String(s) => s
            .parse::<u64>()
            .ok()
            .or_else(|| from_float(s.parse::<f64>().ok()?)),
        _ => None,
    }
}

/// protoc's JSON name: underscores dropped, the letter after each capitalized.
fn lower_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use prost_reflect::{DescriptorPool, DynamicMessage, Value};
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};

    fn field(
        name: &str,
        number: i32,
        ty: Type,
        label: Label,
        type_name: Option<&str>,
    ) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(ty as i32),
            label: Some(label as i32),
            type_name: type_name.map(Into::into),
            ..Default::default()
        }
    }

    /// `meter.Usage` with one field of every numeric type plus non-numeric ones,
    /// and `meter.Reply { Usage usage = 1; int64 top = 2; repeated Usage many = 3; }`.
    fn pool() -> DescriptorPool {
        let one = Label::Optional;
        let usage = DescriptorProto {
            name: Some("Usage".into()),
            field: vec![
                field("i32", 1, Type::Int32, one, None),
                field("i64", 2, Type::Int64, one, None),
                field("u32", 3, Type::Uint32, one, None),
                field("u64", 4, Type::Uint64, one, None),
                field("s32", 5, Type::Sint32, one, None),
                field("s64", 6, Type::Sint64, one, None),
                field("f32", 7, Type::Fixed32, one, None),
                field("f64", 8, Type::Fixed64, one, None),
                field("sf32", 9, Type::Sfixed32, one, None),
                field("sf64", 10, Type::Sfixed64, one, None),
                field("fl", 11, Type::Float, one, None),
                field("db", 12, Type::Double, one, None),
                field("name", 13, Type::String, one, None),
                field("list", 14, Type::Int32, Label::Repeated, None),
                field("total_tokens", 15, Type::Int64, one, None),
                field("flag", 16, Type::Bool, one, None),
            ],
            ..Default::default()
        };
        let reply = DescriptorProto {
            name: Some("Reply".into()),
            field: vec![
                field("usage", 1, Type::Message, one, Some(".meter.Usage")),
                field("top", 2, Type::Int64, one, None),
                field(
                    "many",
                    3,
                    Type::Message,
                    Label::Repeated,
                    Some(".meter.Usage"),
                ),
            ],
            ..Default::default()
        };
        let file = FileDescriptorProto {
            name: Some("meter.proto".into()),
            package: Some("meter".into()),
            syntax: Some("proto3".into()),
            message_type: vec![usage, reply],
            ..Default::default()
        };
        DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet {
            file: vec![file],
        })
        .unwrap()
    }

    fn reply_with(pool: &DescriptorPool, set: &[(&str, Value)]) -> Vec<u8> {
        let usage_desc = pool.get_message_by_name("meter.Usage").unwrap();
        let mut usage = DynamicMessage::new(usage_desc);
        for (name, v) in set {
            usage.set_field_by_name(name, v.clone());
        }
        let mut reply = DynamicMessage::new(pool.get_message_by_name("meter.Reply").unwrap());
        reply.set_field_by_name("usage", Value::Message(usage));
        reply.encode_to_vec()
    }

    #[test]
    fn every_numeric_type() {
        let pool = pool();
        let reply = pool.get_message_by_name("meter.Reply").unwrap();
        let cases = [
            ("i32", Value::I32(7), Some(7)),
            ("i32", Value::I32(i32::MAX), Some(i32::MAX as u64)),
            ("i32", Value::I32(-1), None),
            ("i64", Value::I64(1 << 40), Some(1 << 40)),
            ("i64", Value::I64(-5), None),
            ("u32", Value::U32(u32::MAX), Some(u32::MAX as u64)),
            ("u64", Value::U64(u64::MAX), Some(u64::MAX)),
            ("s32", Value::I32(123), Some(123)),
            ("s32", Value::I32(-123), None),
            ("s64", Value::I64(i64::MAX), Some(i64::MAX as u64)),
            ("s64", Value::I64(-1), None),
            ("f32", Value::U32(0xdead_beef), Some(0xdead_beef)),
            ("f64", Value::U64(1 << 63), Some(1 << 63)),
            ("sf32", Value::I32(99), Some(99)),
            ("sf32", Value::I32(-99), None),
            ("sf64", Value::I64(1 << 50), Some(1 << 50)),
            ("fl", Value::F32(12.9), Some(12)),
            ("fl", Value::F32(-0.5), None),
            ("db", Value::F64(1e6 + 0.75), Some(1_000_000)),
            ("db", Value::F64(f64::NAN), None),
            ("db", Value::F64(f64::INFINITY), None),
        ];
        for (name, value, want) in cases {
            let encoded = reply_with(&pool, &[(name, value.clone())]);
            let path = format!("usage.{name}");
            assert_eq!(
                proto_field_u64(&reply, &encoded, &path),
                want,
                "{name} = {value:?}"
            );
        }
    }

    #[test]
    fn absent_and_unresolvable() {
        let pool = pool();
        let reply = pool.get_message_by_name("meter.Reply").unwrap();
        let encoded = reply_with(&pool, &[("name", Value::String("x".into()))]);
        assert_eq!(proto_field_u64(&reply, &encoded, "usage.i32"), None);
        assert_eq!(proto_field_u64(&reply, &encoded, "top"), None);
        // Not numeric, repeated, not a message, unknown, empty.
        for bad in [
            "usage.name",
            "usage.list",
            "usage.flag",
            "many.i32",
            "top.x",
            "usage",
            "nope",
            "",
        ] {
            assert_eq!(FieldPath::resolve(&reply, bad), None, "{bad}");
        }
        // JSON names resolve too.
        assert_eq!(
            FieldPath::resolve(&reply, "usage.totalTokens"),
            FieldPath::resolve(&reply, "usage.total_tokens")
        );
        // Malformed input reads as absent.
        let path = FieldPath::resolve(&reply, "usage.i32").unwrap();
        assert_eq!(path.read_u64(b"\x0a\x05\x08"), None);
        assert_eq!(
            path.read_u64(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
            None
        );
        assert_eq!(path.read_u64(b""), None);
    }

    #[test]
    fn last_occurrence_wins_and_sub_messages_merge() {
        let pool = pool();
        let reply = pool.get_message_by_name("meter.Reply").unwrap();
        let path = FieldPath::resolve(&reply, "usage.total_tokens").unwrap();
        let first = reply_with(&pool, &[("total_tokens", Value::I64(5))]);
        let other = reply_with(&pool, &[("i32", Value::I32(1))]);
        let third = reply_with(&pool, &[("total_tokens", Value::I64(9))]);
        assert_eq!(
            path.read_u64(&[first.clone(), other.clone()].concat()),
            Some(5)
        );
        assert_eq!(path.read_u64(&[first, other, third].concat()), Some(9));
    }

    #[test]
    fn real_stream_response() {
        let pool = DescriptorPool::decode(tollgate_proto::FILE_DESCRIPTOR_SET).unwrap();
        let desc = pool
            .get_message_by_name("tollgate.test.v1.StreamResponse")
            .unwrap();
        let msg = tollgate_proto::test::v1::StreamResponse {
            seq: 4,
            payload: vec![1; 300],
            usage_tokens: 1234,
        };
        let encoded = msg.encode_to_vec();
        assert_eq!(proto_field_u64(&desc, &encoded, "usage_tokens"), Some(1234));
        assert_eq!(proto_field_u64(&desc, &encoded, "usageTokens"), Some(1234));
        assert_eq!(proto_field_u64(&desc, &encoded, "seq"), Some(4));
        assert_eq!(proto_field_u64(&desc, &encoded, "payload"), None);
    }

    #[test]
    fn json_fields() {
        let body = br#"{"seq":3,"usageTokens":"9007199254740993","usage":{"totalTokens":12,"cost":1.9,"neg":-1,"s":"x"}}"#;
        assert_eq!(
            json_field_u64(body, "usageTokens"),
            Some(9_007_199_254_740_993)
        );
        assert_eq!(
            json_field_u64(body, "usage_tokens"),
            Some(9_007_199_254_740_993)
        );
        assert_eq!(json_field_u64(body, "usage.total_tokens"), Some(12));
        assert_eq!(json_field_u64(body, "usage.totalTokens"), Some(12));
        assert_eq!(json_field_u64(body, "usage.cost"), Some(1));
        assert_eq!(json_field_u64(body, "seq"), Some(3));
        for missing in [
            "usage.neg",
            "usage.s",
            "usage",
            "usage.nope",
            "seq.x",
            "nope",
            "",
        ] {
            assert_eq!(json_field_u64(body, missing), None, "{missing}");
        }
        assert_eq!(json_field_u64(b"not json", "a"), None);
        assert_eq!(lower_camel("total_tokens_2x"), "totalTokens2x");
    }
}
