//! Protobuf wire format → canonical proto3 JSON, written straight from the wire.
//!
//! [`transcode`] writes the JSON that `prost_reflect::DynamicMessage` and
//! `serde_json` write with `SerializeOptions::new()`, without decoding into a
//! `DynamicMessage` first. Each message level is walked once, recording where
//! each known field occurs (and checking the wire structure); the records are
//! then written in field-number order (prost-reflect's order; the occurrences of
//! a repeated field keep their wire order) into one output buffer. The types'
//! shapes come from a [`JsonPlan`], built once per descriptor set, so the
//! request path reads no descriptor and takes no lock.
//!
//! What this module does not write itself ends in [`Stop::Unsupported`] and the
//! caller falls back to the `DynamicMessage` path for the whole message: a
//! non-repeated field or a map key that occurs twice (protobuf's last-wins and
//! merge rules), two members of one oneof, groups, extensions, a map field that
//! is not length-delimited. Well-known types with a JSON form of their own
//! (`google.protobuf.Timestamp`, `Value`, …) are checked here like any message,
//! then decoded and written by `DynamicMessage` into the same buffer. Malformed
//! input ends in [`Stop::Invalid`]; the caller re-runs the `DynamicMessage`
//! decoder for its exact error.

use std::ops::Range;

use prost_reflect::{DynamicMessage, SerializeOptions};

mod plan;
mod reader;
mod write;

#[cfg(test)]
mod tests;

use plan::{FieldPlan, MessagePlan, Shape, Ty};
pub(crate) use plan::{JsonPlan, MessageId, PlanBuilder};
use reader::{Raw, Reader, Scalar, parse_entry, read_known, scalar, skip_unknown, zero};

/// prost's nesting limit, counted the way its decoder counts it.
const RECURSION_LIMIT: u32 = 100;

/// Why [`transcode`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Not a valid encoding of the type: the `DynamicMessage` decoder refuses it too.
    Invalid(&'static str),
    /// Maybe valid, but not written by this module.
    Unsupported,
}

/// Writes the canonical JSON of an encoded `root` message.
pub(crate) fn transcode(plan: &JsonPlan, root: MessageId, proto: &[u8]) -> Result<Vec<u8>, Stop> {
    if plan.message(root.0)?.well_known {
        return Err(Stop::Unsupported);
    }
    let mut t = Transcoder {
        plan,
        out: Vec::with_capacity(proto.len().saturating_mul(2).saturating_add(2)),
        occ: Vec::with_capacity(16),
        keys: Vec::new(),
    };
    t.message(root.0, proto, RECURSION_LIMIT, false)?;
    Ok(t.out)
}

/// One occurrence of a known field: its index in the message plan and its value.
#[derive(Debug, Clone, Copy)]
struct Occurrence<'a> {
    field: u32,
    raw: Raw<'a>,
}

/// A map key, compared for duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum MapKey<'a> {
    Num(u64),
    Str(&'a [u8]),
}

/// The fields written so far in one object.
struct Fields {
    first: bool,
    /// Bit `i`: a member of the message's oneof `i` was written.
    oneofs: u64,
}

struct Transcoder<'p, 'a> {
    plan: &'p JsonPlan,
    out: Vec<u8>,
    /// Occurrences of every message level being written, innermost last.
    occ: Vec<Occurrence<'a>>,
    /// Scratch for map key duplicate checks.
    keys: Vec<MapKey<'a>>,
}

impl<'a> Transcoder<'_, 'a> {
    /// Writes message `id`; `ctx` is prost's recursion budget for its fields.
    fn message(&mut self, id: u32, body: &'a [u8], ctx: u32, plain: bool) -> Result<(), Stop> {
        let plan = self.plan;
        let msg = plan.message(id)?;
        if msg.well_known && !plain {
            return self.well_known(msg, id, body, ctx);
        }
        if msg.unsupported {
            return Err(Stop::Unsupported);
        }
        let base = self.occ.len();
        if !self.collect(msg, body, ctx)?
            && let Some(occ) = self.occ.get_mut(base..)
        {
            // Stable: a repeated field's values keep their wire order.
            occ.sort_by_key(|o| o.field);
        }
        let end = self.occ.len();
        self.out.push(b'{');
        let mut fields = Fields {
            first: true,
            oneofs: 0,
        };
        let mut i = base;
        while i < end {
            let index = self.occurrence(i)?.field;
            let mut j = i + 1;
            while j < end && self.occurrence(j)?.field == index {
                j += 1;
            }
            let field = msg.fields.get(index as usize).ok_or(Stop::Unsupported)?;
            self.field(field, i..j, ctx, plain, &mut fields)?;
            i = j;
        }
        self.occ.truncate(base);
        self.out.push(b'}');
        Ok(())
    }

    /// Checks a well-known type like any message, then has `DynamicMessage` write it.
    fn well_known(
        &mut self,
        msg: &MessagePlan,
        id: u32,
        body: &'a [u8],
        ctx: u32,
    ) -> Result<(), Stop> {
        // Decoded alone, the message would get a fresh recursion budget: the
        // check here refuses what is too deep where it stands.
        let mark = self.out.len();
        self.message(id, body, ctx, true)?;
        self.out.truncate(mark);
        let value =
            DynamicMessage::decode(msg.desc.clone(), body).map_err(|_| Stop::Unsupported)?;
        let mut ser = serde_json::Serializer::new(&mut self.out);
        value
            .serialize_with_options(&mut ser, &SerializeOptions::new())
            .map_err(|_| Stop::Unsupported)
    }

    /// First pass: records each known field's occurrences after `self.occ`'s end
    /// and skips unknown fields. Returns whether they are in field order.
    fn collect(&mut self, msg: &MessagePlan, body: &'a [u8], ctx: u32) -> Result<bool, Stop> {
        let mut r = Reader::new(body);
        let mut sorted = true;
        let mut last = 0;
        while !r.is_empty() {
            let (number, wire) = r.key()?;
            let Some(index) = msg.field_index(number) else {
                if msg.extensions.binary_search(&number).is_ok() {
                    return Err(Stop::Unsupported);
                }
                skip_unknown(&mut r, number, wire, ctx)?;
                continue;
            };
            let field = msg.fields.get(index as usize).ok_or(Stop::Unsupported)?;
            let raw = read_known(&mut r, field, wire)?;
            sorted &= index >= last;
            last = index;
            self.occ.push(Occurrence { field: index, raw });
        }
        Ok(sorted)
    }

    fn occurrence(&self, i: usize) -> Result<Occurrence<'a>, Stop> {
        self.occ.get(i).copied().ok_or(Stop::Unsupported)
    }

    /// Writes one field from its occurrences `range` in `self.occ`.
    fn field(
        &mut self,
        field: &FieldPlan,
        range: Range<usize>,
        ctx: u32,
        plain: bool,
        fields: &mut Fields,
    ) -> Result<(), Stop> {
        match field.shape {
            Shape::Single { presence } => {
                if range.len() != 1 {
                    // Last one wins, messages merge: left to DynamicMessage.
                    return Err(Stop::Unsupported);
                }
                if let Some(oneof) = field.oneof {
                    let bit = 1u64.checked_shl(oneof).ok_or(Stop::Unsupported)?;
                    if fields.oneofs & bit != 0 {
                        return Err(Stop::Unsupported);
                    }
                    fields.oneofs |= bit;
                }
                let raw = self.occurrence(range.start)?.raw;
                self.single(field, presence, raw, ctx, plain, fields)
            }
            Shape::List => self.list(field, range, ctx, plain, fields),
            Shape::Map { key } => self.map(field, key, range, ctx, plain, fields),
        }
    }

    fn single(
        &mut self,
        field: &FieldPlan,
        presence: bool,
        raw: Raw<'a>,
        ctx: u32,
        plain: bool,
        fields: &mut Fields,
    ) -> Result<(), Stop> {
        match field.ty {
            Ty::Message(id) => {
                let Raw::Len(body) = raw else {
                    return Err(Stop::Unsupported);
                };
                self.key(field, fields);
                self.sub_message(id, body, ctx, plain)
            }
            Ty::Group => Err(Stop::Unsupported),
            ty => {
                let value = scalar(ty, raw)?;
                if !presence && is_default(value, field.enum_default) {
                    return Ok(());
                }
                self.key(field, fields);
                self.scalar(value, ty)
            }
        }
    }

    fn list(
        &mut self,
        field: &FieldPlan,
        range: Range<usize>,
        ctx: u32,
        plain: bool,
        fields: &mut Fields,
    ) -> Result<(), Stop> {
        let mark = self.out.len();
        let was_first = fields.first;
        self.key(field, fields);
        self.out.push(b'[');
        let mut n = 0;
        for i in range {
            match self.occurrence(i)?.raw {
                Raw::Len(body) if field.ty.packable() => self.packed(field.ty, body, &mut n)?,
                raw => {
                    self.comma(&mut n);
                    self.value(field.ty, raw, ctx, plain)?;
                }
            }
        }
        if n == 0 {
            // Only empty packed runs: an empty list is not written.
            self.out.truncate(mark);
            fields.first = was_first;
        } else {
            self.out.push(b']');
        }
        Ok(())
    }

    fn packed(&mut self, ty: Ty, body: &'a [u8], n: &mut usize) -> Result<(), Stop> {
        let mut r = Reader::new(body);
        while !r.is_empty() {
            let value = scalar(ty, r.raw(ty.wire())?)?;
            self.comma(n);
            self.scalar(value, ty)?;
        }
        Ok(())
    }

    fn map(
        &mut self,
        field: &FieldPlan,
        key_ty: Ty,
        range: Range<usize>,
        ctx: u32,
        plain: bool,
        fields: &mut Fields,
    ) -> Result<(), Stop> {
        self.check_unique_keys(field, key_ty, range.clone(), ctx)?;
        self.key(field, fields);
        self.out.push(b'{');
        let mut n = 0;
        for i in range {
            let (key, value) = self.entry(field, key_ty, i, ctx)?;
            self.comma(&mut n);
            let key = match key {
                Some(raw) => scalar(key_ty, raw)?,
                None => zero(key_ty, 0)?,
            };
            write::map_key(&mut self.out, key)?;
            self.out.push(b':');
            match value {
                Some(raw) => self.value(field.ty, raw, ctx, plain)?,
                None => self.default_value(field, ctx, plain)?,
            }
        }
        self.out.push(b'}');
        Ok(())
    }

    /// Map keys occurring twice are left to DynamicMessage (the last entry wins).
    fn check_unique_keys(
        &mut self,
        field: &FieldPlan,
        key_ty: Ty,
        range: Range<usize>,
        ctx: u32,
    ) -> Result<(), Stop> {
        if range.len() < 2 {
            return Ok(());
        }
        let base = self.keys.len();
        for i in range {
            let key = match self.entry(field, key_ty, i, ctx)?.0 {
                Some(raw) => scalar(key_ty, raw)?,
                None => zero(key_ty, 0)?,
            };
            self.keys.push(map_key(key)?);
        }
        let keys = self.keys.get_mut(base..).unwrap_or_default();
        let duplicate = if keys.len() <= 8 {
            keys.iter()
                .enumerate()
                .any(|(i, k)| keys.iter().skip(i + 1).any(|other| other == k))
        } else {
            keys.sort_unstable();
            keys.windows(2).any(|w| matches!(w, [a, b] if a == b))
        };
        self.keys.truncate(base);
        if duplicate {
            return Err(Stop::Unsupported);
        }
        Ok(())
    }

    /// The key and value of the map entry at occurrence `i`.
    fn entry(
        &self,
        field: &FieldPlan,
        key_ty: Ty,
        i: usize,
        ctx: u32,
    ) -> Result<(Option<Raw<'a>>, Option<Raw<'a>>), Stop> {
        let Raw::Len(body) = self.occurrence(i)?.raw else {
            return Err(Stop::Unsupported);
        };
        parse_entry(key_ty, field.ty, body, ctx)
    }

    /// Writes one list element or map value.
    fn value(&mut self, ty: Ty, raw: Raw<'a>, ctx: u32, plain: bool) -> Result<(), Stop> {
        match ty {
            Ty::Message(id) => {
                let Raw::Len(body) = raw else {
                    return Err(Stop::Unsupported);
                };
                self.sub_message(id, body, ctx, plain)
            }
            Ty::Group => Err(Stop::Unsupported),
            ty => self.scalar(scalar(ty, raw)?, ty),
        }
    }

    /// Writes the value of a map entry that has none.
    fn default_value(&mut self, field: &FieldPlan, ctx: u32, plain: bool) -> Result<(), Stop> {
        match field.ty {
            // Nothing is decoded, so no recursion budget is spent.
            Ty::Message(id) => self.message(id, &[], ctx.saturating_sub(1), plain),
            Ty::Group => Err(Stop::Unsupported),
            ty => self.scalar(zero(ty, field.enum_default)?, ty),
        }
    }

    fn sub_message(&mut self, id: u32, body: &'a [u8], ctx: u32, plain: bool) -> Result<(), Stop> {
        let inner = ctx
            .checked_sub(1)
            .ok_or(Stop::Invalid("recursion limit reached"))?;
        self.message(id, body, inner, plain)
    }

    fn key(&mut self, field: &FieldPlan, fields: &mut Fields) {
        if !fields.first {
            self.out.push(b',');
        }
        fields.first = false;
        self.out.extend_from_slice(&field.key);
    }

    fn comma(&mut self, n: &mut usize) {
        if *n > 0 {
            self.out.push(b',');
        }
        *n += 1;
    }

    /// A scalar, or an enum by the names in the plan.
    fn scalar(&mut self, value: Scalar<'_>, ty: Ty) -> Result<(), Stop> {
        let Scalar::Enum(number) = value else {
            return write::scalar(&mut self.out, value);
        };
        let Ty::Enum(id) = ty else {
            return Err(Stop::Unsupported);
        };
        write::enum_value(&mut self.out, self.plan.enum_plan(id)?, number)
    }
}

/// An implicit-presence field with this value is not written.
fn is_default(value: Scalar<'_>, enum_default: i32) -> bool {
    match value {
        Scalar::I32(v) => v == 0,
        Scalar::I64(v) => v == 0,
        Scalar::U32(v) => v == 0,
        Scalar::U64(v) => v == 0,
        // -0.0 too; NaN is not a default.
        Scalar::F32(v) => v == 0.0,
        Scalar::F64(v) => v == 0.0,
        Scalar::Bool(v) => !v,
        Scalar::Str(s) => s.is_empty(),
        Scalar::Bytes(b) => b.is_empty(),
        Scalar::Enum(n) => n == enum_default,
    }
}

fn map_key(key: Scalar<'_>) -> Result<MapKey<'_>, Stop> {
    Ok(match key {
        Scalar::I32(v) => MapKey::Num(i64::from(v) as u64),
        Scalar::I64(v) => MapKey::Num(v as u64),
        Scalar::U32(v) => MapKey::Num(u64::from(v)),
        Scalar::U64(v) => MapKey::Num(v),
        Scalar::Bool(v) => MapKey::Num(u64::from(v)),
        Scalar::Str(s) => MapKey::Str(s.as_bytes()),
        _ => return Err(Stop::Unsupported),
    })
}
