//! The per-type tables the transcoder reads instead of the descriptors: field
//! shapes and JSON keys, enum names, built once per descriptor set.

use std::collections::HashMap;
use std::fmt;

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, Value};

use super::Stop;
use super::reader::{I32, I64, LEN, START_GROUP, VARINT};
use super::write::write_str;

/// Message types whose JSON form is not an object of their fields.
const WELL_KNOWN: [&str; 17] = [
    "google.protobuf.Any",
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.Struct",
    "google.protobuf.FloatValue",
    "google.protobuf.DoubleValue",
    "google.protobuf.Int32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
    "google.protobuf.FieldMask",
    "google.protobuf.ListValue",
    "google.protobuf.Value",
    "google.protobuf.Empty",
];

/// `by_number` entry of a number that is no field.
const NO_FIELD: u32 = u32::MAX;

/// Field numbers below this are looked up in a table, larger ones by binary search.
const DENSE_NUMBERS: u32 = 256;

/// A message type in a [`JsonPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageId(pub(super) u32);

/// Per-type tables the transcoder reads instead of the descriptors.
pub(crate) struct JsonPlan {
    messages: Vec<MessagePlan>,
    enums: Vec<EnumPlan>,
}

impl fmt::Debug for JsonPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonPlan")
            .field("messages", &self.messages.len())
            .field("enums", &self.enums.len())
            .finish()
    }
}

impl JsonPlan {
    pub(super) fn message(&self, id: u32) -> Result<&MessagePlan, Stop> {
        self.messages.get(id as usize).ok_or(Stop::Unsupported)
    }

    pub(super) fn enum_plan(&self, id: u32) -> Result<&EnumPlan, Stop> {
        self.enums.get(id as usize).ok_or(Stop::Unsupported)
    }
}

pub(super) struct MessagePlan {
    pub(super) desc: MessageDescriptor,
    /// A well-known type with a JSON form of its own.
    pub(super) well_known: bool,
    /// A field this module cannot write (an implicit-presence default other than zero).
    pub(super) unsupported: bool,
    /// Sorted by number, the order prost-reflect writes them in.
    pub(super) fields: Vec<FieldPlan>,
    /// Index in `fields` of each number below [`DENSE_NUMBERS`], or [`NO_FIELD`].
    by_number: Vec<u32>,
    /// Sorted numbers of the pool's extensions of this message.
    pub(super) extensions: Vec<u32>,
}

impl MessagePlan {
    pub(super) fn field_index(&self, number: u32) -> Option<u32> {
        match self.by_number.get(number as usize) {
            Some(&index) => (index != NO_FIELD).then_some(index),
            None => self
                .fields
                .binary_search_by_key(&number, |f| f.number)
                .ok()
                .and_then(|i| u32::try_from(i).ok()),
        }
    }
}

pub(super) struct FieldPlan {
    number: u32,
    /// `"jsonName":`, escaped.
    pub(super) key: Box<[u8]>,
    /// The element type; for a map, the value type.
    pub(super) ty: Ty,
    pub(super) shape: Shape,
    /// Index of the containing oneof among the message's oneofs.
    pub(super) oneof: Option<u32>,
    /// The field's default enum number (a map's: its value's).
    pub(super) enum_default: i32,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    Single { presence: bool },
    List,
    Map { key: Ty },
}

/// A field's protobuf type; enums and messages by index in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    Double,
    Float,
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
    Bool,
    String,
    Bytes,
    Enum(u32),
    Message(u32),
    Group,
}

impl Ty {
    /// The wire type of one value.
    pub(super) fn wire(self) -> u8 {
        match self {
            Ty::Double | Ty::Fixed64 | Ty::Sfixed64 => I64,
            Ty::Float | Ty::Fixed32 | Ty::Sfixed32 => I32,
            Ty::String | Ty::Bytes | Ty::Message(_) => LEN,
            Ty::Group => START_GROUP,
            _ => VARINT,
        }
    }

    /// Repeated values of this type may come packed.
    pub(super) fn packable(self) -> bool {
        !matches!(self, Ty::String | Ty::Bytes | Ty::Message(_) | Ty::Group)
    }
}

pub(super) struct EnumPlan {
    /// `google.protobuf.NullValue`: every value is written as `null`.
    pub(super) null: bool,
    /// Number and `"NAME"`, sorted by number.
    pub(super) names: Vec<(i32, Box<[u8]>)>,
}

/// Builds a [`JsonPlan`] for some root message types and all they reach.
#[derive(Default)]
pub(crate) struct PlanBuilder {
    ids: HashMap<String, u32>,
    descs: Vec<MessageDescriptor>,
    enum_ids: HashMap<String, u32>,
    enums: Vec<EnumPlan>,
}

impl PlanBuilder {
    /// Adds a message type (if new) and returns its id in the finished plan.
    pub(crate) fn add(&mut self, desc: &MessageDescriptor) -> MessageId {
        if let Some(&id) = self.ids.get(desc.full_name()) {
            return MessageId(id);
        }
        let id = u32::try_from(self.descs.len()).unwrap_or(u32::MAX);
        self.ids.insert(desc.full_name().to_owned(), id);
        self.descs.push(desc.clone());
        MessageId(id)
    }

    /// Tables for every added type and every type they reach.
    pub(crate) fn finish(mut self) -> JsonPlan {
        let mut messages = Vec::with_capacity(self.descs.len());
        while let Some(desc) = self.descs.get(messages.len()).cloned() {
            messages.push(self.message_plan(&desc));
        }
        JsonPlan {
            messages,
            enums: self.enums,
        }
    }

    fn message_plan(&mut self, desc: &MessageDescriptor) -> MessagePlan {
        let oneofs: Vec<String> = desc.oneofs().map(|o| o.full_name().to_owned()).collect();
        let mut unsupported = false;
        let mut fields: Vec<FieldPlan> = desc
            .fields()
            .map(|field| {
                let (plan, ok) = self.field_plan(&field, &oneofs);
                unsupported |= !ok;
                plan
            })
            .collect();
        fields.sort_by_key(|f| f.number);
        let dense = fields
            .iter()
            .map(|f| f.number.saturating_add(1))
            .max()
            .unwrap_or(0)
            .min(DENSE_NUMBERS);
        let mut by_number = vec![NO_FIELD; dense as usize];
        for (index, f) in fields.iter().enumerate() {
            if let (Some(slot), Ok(index)) =
                (by_number.get_mut(f.number as usize), u32::try_from(index))
            {
                *slot = index;
            }
        }
        let mut extensions: Vec<u32> = desc.extensions().map(|e| e.number()).collect();
        extensions.sort_unstable();
        MessagePlan {
            desc: desc.clone(),
            well_known: WELL_KNOWN.contains(&desc.full_name()),
            unsupported,
            fields,
            by_number,
            extensions,
        }
    }

    /// The field's plan, and whether this module can write it.
    fn field_plan(&mut self, field: &FieldDescriptor, oneofs: &[String]) -> (FieldPlan, bool) {
        let oneof = field
            .containing_oneof()
            .and_then(|o| oneofs.iter().position(|name| name == o.full_name()))
            .and_then(|i| u32::try_from(i).ok());
        let mut ok = true;
        let (ty, shape, default) = match field.kind() {
            Kind::Message(entry) if field.is_map() => {
                let key = self.ty(&entry.map_entry_key_field());
                let value = entry.map_entry_value_field();
                (self.ty(&value), Shape::Map { key }, value.default_value())
            }
            kind => {
                let shape = if field.is_list() {
                    Shape::List
                } else {
                    let presence = field.supports_presence();
                    let default = field.default_value();
                    let zero_default = matches!(kind, Kind::Enum(_) | Kind::Message(_))
                        || default == kind.default_value();
                    ok = presence || zero_default;
                    Shape::Single { presence }
                };
                (self.ty(field), shape, field.default_value())
            }
        };
        let mut key = Vec::with_capacity(field.json_name().len() + 3);
        write_str(&mut key, field.json_name());
        key.push(b':');
        let plan = FieldPlan {
            number: field.number(),
            key: key.into_boxed_slice(),
            ty,
            shape,
            oneof,
            enum_default: match default {
                Value::EnumNumber(n) => n,
                _ => 0,
            },
        };
        (plan, ok)
    }

    fn ty(&mut self, field: &FieldDescriptor) -> Ty {
        match field.kind() {
            Kind::Double => Ty::Double,
            Kind::Float => Ty::Float,
            Kind::Int32 => Ty::Int32,
            Kind::Int64 => Ty::Int64,
            Kind::Uint32 => Ty::Uint32,
            Kind::Uint64 => Ty::Uint64,
            Kind::Sint32 => Ty::Sint32,
            Kind::Sint64 => Ty::Sint64,
            Kind::Fixed32 => Ty::Fixed32,
            Kind::Fixed64 => Ty::Fixed64,
            Kind::Sfixed32 => Ty::Sfixed32,
            Kind::Sfixed64 => Ty::Sfixed64,
            Kind::Bool => Ty::Bool,
            Kind::String => Ty::String,
            Kind::Bytes => Ty::Bytes,
            Kind::Enum(e) => Ty::Enum(self.enum_id(&e)),
            Kind::Message(_) if field.is_group() => Ty::Group,
            Kind::Message(m) => Ty::Message(self.add(&m).0),
        }
    }

    fn enum_id(&mut self, desc: &EnumDescriptor) -> u32 {
        if let Some(&id) = self.enum_ids.get(desc.full_name()) {
            return id;
        }
        let mut names: Vec<(i32, Box<[u8]>)> = desc
            .values()
            .filter_map(|v| {
                // With aliases, the name prost-reflect picks for the number.
                let value = desc.get_value(v.number())?;
                let mut name = Vec::with_capacity(value.name().len() + 2);
                write_str(&mut name, value.name());
                Some((v.number(), name.into_boxed_slice()))
            })
            .collect();
        names.sort_by_key(|(n, _)| *n);
        names.dedup_by_key(|(n, _)| *n);
        let id = u32::try_from(self.enums.len()).unwrap_or(u32::MAX);
        self.enums.push(EnumPlan {
            null: desc.full_name() == "google.protobuf.NullValue",
            names,
        });
        self.enum_ids.insert(desc.full_name().to_owned(), id);
        id
    }
}
