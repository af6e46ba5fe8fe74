//! Redis replies the resume store reads (`proxy/src/resume/store.rs`): `parse_entries`,
//! the hand-written walk over `XRANGE`/`XREVRANGE`/`XREAD` replies (RESP2 and RESP3
//! shapes) to stream entries, and `meta_from_fields` after the `redis` crate's typed
//! conversion of an `HGETALL` reply (`HashMap<String, Vec<u8>>`); also the `(bool, bool)`
//! conversion `producer_alive` reads. The replies are `redis::Value` trees built from the
//! input, as the `redis` crate hands them over (its RESP parser is not fuzzed here).
//!
//! Input: 1 mode byte, then bytes the builders read (every read past the end is 0).
//! Mode 0-2: an arbitrary tree (depth at most 8, 200 nodes); 3-5: a well-formed reply of
//! entries in one of three shapes, with one entry perhaps spoilt; 6-7: an `HGETALL` reply.
//!
//! Properties:
//! - no panic, whatever the tree;
//! - nothing is invented: every entry returned is a node `[id, fields]` of the tree, `id` a
//!   bulk string `<n>-0` with `n` a decimal `u64`, and its data the value of that node's first
//!   `d` (message) or `e` (end) field;
//! - a well-formed reply (`XRANGE`: array of `[id, [field, value, …]]`; `XREAD` in RESP2:
//!   `[[key, entries]]`; in RESP3: `{key: entries}`; fields as an array or a map, other
//!   fields before `d`/`e`) gives back exactly its entries, in order;
//! - a malformed entry (id not `<u64>-0`, no `d`/`e` field, a field value that is not a bulk
//!   string, fields that are neither array nor map) is dropped and nothing else changes: the
//!   reader (`consumer::follow`) then sees the next index out of sequence and reports a gap,
//!   never wrong data;
//! - an `HGETALL` reply converts (RESP2 flat array or RESP3 map) and gives the stream's
//!   record exactly when it has an `owner` and a known `wire`, with those values, the head
//!   decoded, and the instance (empty when absent); arbitrary trees convert or fail without
//!   panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis::{FromRedisValue, PushKind, Value, VerbatimFormat};
use std::collections::HashMap;
use tollgate_proxy::fuzzing::token::{Wire, decode_head};
use tollgate_proxy::fuzzing::{Entry, meta_from_fields, parse_entries};

struct Input<'a> {
    data: &'a [u8],
    nodes: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.data.split_first() else {
            return 0;
        };
        self.data = rest;
        b
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = usize::from(self.byte()).min(max).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head.to_vec()
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |a, _| (a << 8) | u64::from(self.byte()))
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes(16)).into_owned()
    }

    /// An entry id: mostly `<n>-0`, sometimes something close to it.
    fn id(&mut self) -> Vec<u8> {
        let n = self.u64() >> (self.byte() % 64);
        match self.byte() % 8 {
            0 => format!("{n}-1").into_bytes(),
            1 => format!("+{n}-0").into_bytes(),
            2 => format!("{n}0000000000000000000-0").into_bytes(),
            3 => b"-0".to_vec(),
            4 => self.bytes(24),
            _ => format!("{n}-0").into_bytes(),
        }
    }

    fn field_name(&mut self) -> Vec<u8> {
        match self.byte() % 4 {
            0 => b"d".to_vec(),
            1 => b"e".to_vec(),
            2 => b"x".to_vec(),
            _ => self.bytes(3),
        }
    }

    fn tree(&mut self, depth: u8) -> Value {
        self.nodes += 1;
        let leaf = depth >= 8 || self.nodes >= 200;
        let kinds = if leaf { 8 } else { 16 };
        match self.byte() % kinds {
            0 => Value::Nil,
            1 => Value::Int(self.u64() as i64),
            2 => Value::BulkString(self.bytes(32)),
            3 => Value::BulkString(self.id()),
            4 => Value::BulkString(self.field_name()),
            5 => Value::SimpleString(self.text()),
            6 => Value::Okay,
            7 => match self.byte() % 4 {
                0 => Value::Double(f64::from_bits(self.u64())),
                1 => Value::Boolean(self.byte() & 1 == 1),
                2 => Value::BigNumber(self.bytes(8)),
                _ => Value::VerbatimString {
                    format: VerbatimFormat::Text,
                    text: self.text(),
                },
            },
            8 | 9 => {
                let n = usize::from(self.byte() % 6);
                Value::Array((0..n).map(|_| self.tree(depth + 1)).collect())
            }
            10 => {
                // Entry-shaped: [id, fields].
                let id = Value::BulkString(self.id());
                Value::Array(vec![id, self.tree(depth + 1)])
            }
            11 => {
                let n = usize::from(self.byte() % 4);
                Value::Map(
                    (0..n)
                        .map(|_| (self.tree(depth + 1), self.tree(depth + 1)))
                        .collect(),
                )
            }
            12 => {
                let n = usize::from(self.byte() % 4);
                Value::Set((0..n).map(|_| self.tree(depth + 1)).collect())
            }
            13 => Value::Push {
                kind: PushKind::Message,
                data: vec![self.tree(depth + 1)],
            },
            14 => Value::Attribute {
                data: Box::new(self.tree(depth + 1)),
                attributes: vec![(self.tree(depth + 1), self.tree(depth + 1))],
            },
            _ => {
                // Fields: [name, value, …] of bulk strings mostly.
                let n = usize::from(self.byte() % 6);
                Value::Array(
                    (0..n)
                        .map(|i| {
                            if i % 2 == 0 {
                                Value::BulkString(self.field_name())
                            } else {
                                self.tree(depth + 1)
                            }
                        })
                        .collect(),
                )
            }
        }
    }
}

/// The entries a node `[id, fields]` could stand for, read by the documented format.
fn entry_of(items: &[Value]) -> Option<Entry> {
    let [Value::BulkString(id), fields] = items else {
        return None;
    };
    let digits = std::str::from_utf8(id).ok()?.strip_suffix("-0")?;
    let index: u64 = digits.parse().ok()?;
    let pairs: Vec<(&Value, &Value)> = match fields {
        Value::Array(f) => f.chunks_exact(2).map(|c| (&c[0], &c[1])).collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| match (k, v) {
        (Value::BulkString(k), Value::BulkString(v)) if k == b"d" => {
            Some(Entry::Message(index, v.clone().into()))
        }
        (Value::BulkString(k), Value::BulkString(v)) if k == b"e" => {
            Some(Entry::End(index, v.clone().into()))
        }
        _ => None,
    })
}

/// Every node of the tree that reads as an entry.
fn candidates(v: &Value, out: &mut Vec<Entry>) {
    let children: Vec<&Value> = match v {
        Value::Array(items) => {
            if let Some(e) = entry_of(items) {
                out.push(e);
            }
            items.iter().collect()
        }
        Value::Set(items) | Value::Push { data: items, .. } => items.iter().collect(),
        Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Attribute { data, attributes } => std::iter::once(&**data)
            .chain(attributes.iter().flat_map(|(k, v)| [k, v]))
            .collect(),
        _ => Vec::new(),
    };
    for c in children {
        candidates(c, out);
    }
}

fn bulk(b: &[u8]) -> Value {
    Value::BulkString(b.to_vec())
}

fn arbitrary(u: &mut Input<'_>) {
    let tree = u.tree(0);
    let got = parse_entries(&tree);
    let mut found = Vec::new();
    candidates(&tree, &mut found);
    for e in &got {
        assert!(found.contains(e), "{e:?} is no entry of {tree:?}");
    }
    // Typed conversions do not panic either.
    if let Ok(fields) = HashMap::<String, Vec<u8>>::from_redis_value_ref(&tree) {
        check_meta(&fields);
    }
    let _ = <(bool, bool)>::from_redis_value_ref(&tree);
    let _ = <(Value, Value)>::from_redis_value_ref(&tree);
}

fn well_formed(u: &mut Input<'_>, shape: u8) {
    let count = usize::from(u.byte() % 12);
    let mut want = Vec::new();
    let mut nodes = Vec::new();
    let mut index = u.u64() >> (u.byte() % 64);
    for k in 0..count {
        index = index.saturating_add(1 + u64::from(u.byte() % 3));
        let end = k + 1 == count && u.byte() & 1 == 1;
        let data = u.bytes(16);
        let mut fields = Vec::new();
        for _ in 0..u.byte() % 3 {
            fields.push((bulk(b"x"), Value::BulkString(u.bytes(4))));
        }
        fields.push((bulk(if end { b"e" } else { b"d" }), bulk(&data)));
        if u.byte() & 1 == 1 {
            // A later `d`/`e` field does not count.
            fields.push((bulk(b"d"), bulk(b"later")));
        }
        let fields = if u.byte() & 1 == 1 {
            Value::Map(fields)
        } else {
            Value::Array(fields.into_iter().flat_map(|(k, v)| [k, v]).collect())
        };
        let id = bulk(format!("{index}-0").as_bytes());
        want.push(if end {
            Entry::End(index, data.into())
        } else {
            Entry::Message(index, data.into())
        });
        nodes.push(Value::Array(vec![id, fields]));
    }
    // Perhaps spoil one entry.
    let spoil = u.byte();
    if !nodes.is_empty() && spoil & 0x80 != 0 {
        let k = usize::from(spoil) % nodes.len();
        let Value::Array(items) = &mut nodes[k] else {
            unreachable!()
        };
        match spoil % 6 {
            0 => items[0] = bulk(b"x-0"),
            1 => items[0] = bulk(format!("{}-1", k + 1).as_bytes()),
            2 => items[1] = Value::Nil,
            3 => items[1] = Value::Array(vec![bulk(b"x"), bulk(b"y")]),
            4 => items[1] = Value::Array(vec![bulk(b"d"), Value::Int(7)]),
            _ => items[0] = bulk(b"18446744073709551616-0"),
        }
        want.remove(k);
    }
    let key = bulk(format!("{}:rs:{{rs1_{}}}:s", u.text(), u.text()).as_bytes());
    let entries = Value::Array(nodes);
    let reply = match shape {
        0 => entries,
        1 => Value::Array(vec![Value::Array(vec![key, entries])]),
        _ => Value::Map(vec![(key, entries)]),
    };
    assert_eq!(parse_entries(&reply), want, "{reply:?}");
}

fn check_meta(fields: &HashMap<String, Vec<u8>>) {
    let text = |k: &str| {
        fields
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let wire = text("wire").and_then(|w| Wire::from_name(&w));
    match meta_from_fields(fields) {
        None => assert!(text("owner").is_none() || wire.is_none()),
        Some(m) => {
            assert_eq!(Some(m.owner.as_str().to_string()), text("owner"));
            assert_eq!(Some(m.wire), wire);
            let head = fields
                .get("head")
                .map(|h| decode_head(h))
                .unwrap_or_default();
            assert_eq!(m.head, head);
            assert_eq!(m.instance, text("instance").unwrap_or_default());
        }
    }
}

fn hgetall(u: &mut Input<'_>, resp3: bool) {
    let names = ["owner", "wire", "head", "instance", "broken", "other"];
    let wires = ["sse", "grpc-web", "connect+json", "grpc", "unsupported", ""];
    let mut pairs = Vec::new();
    for _ in 0..u.byte() % 7 {
        let name = names[usize::from(u.byte()) % names.len()];
        let value = if name == "wire" && u.byte() & 1 == 1 {
            wires[usize::from(u.byte()) % wires.len()]
                .as_bytes()
                .to_vec()
        } else {
            u.bytes(40)
        };
        pairs.push((bulk(name.as_bytes()), Value::BulkString(value)));
    }
    let reply = if resp3 {
        Value::Map(pairs.clone())
    } else {
        Value::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| [k.clone(), v.clone()])
                .collect(),
        )
    };
    let fields = HashMap::<String, Vec<u8>>::from_redis_value_ref(&reply).expect("a hash converts");
    // Later fields of the same name win, as in a hash.
    let mut want = HashMap::new();
    for (k, v) in &pairs {
        if let (Value::BulkString(k), Value::BulkString(v)) = (k, v) {
            want.insert(String::from_utf8_lossy(k).into_owned(), v.clone());
        }
    }
    assert_eq!(fields, want);
    check_meta(&fields);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Input {
        data: rest,
        nodes: 0,
    };
    match mode % 8 {
        0..=2 => arbitrary(&mut u),
        3..=5 => well_formed(&mut u, mode % 8 - 3),
        m => hgetall(&mut u, m == 7),
    }
});
