//! Low-level protobuf wire reading: keys, varints, length-delimited values,
//! skipping unknown fields and decoding scalars, refusing what prost refuses.

use super::Stop;
use super::plan::{FieldPlan, Shape, Ty};

pub(super) const VARINT: u8 = 0;
pub(super) const I64: u8 = 1;
pub(super) const LEN: u8 = 2;
pub(super) const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
pub(super) const I32: u8 = 5;

/// One value as found on the wire.
#[derive(Debug, Clone, Copy)]
pub(super) enum Raw<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Fixed64([u8; 8]),
    Len(&'a [u8]),
}

/// Protobuf wire primitives over a slice, refusing what prost refuses.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A varint of at most ten bytes, the tenth at most 1.
    fn varint(&mut self) -> Result<u64, Stop> {
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(b));
        }
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b >= 2 {
                    break;
                }
                self.buf = self.buf.get(i + 1..).unwrap_or_default();
                return Ok(value);
            }
        }
        Err(Stop::Invalid("invalid varint"))
    }

    /// A field key: number and wire type.
    pub(super) fn key(&mut self) -> Result<(u32, u8), Stop> {
        let key = u32::try_from(self.varint()?).map_err(|_| Stop::Invalid("invalid key"))?;
        let wire = (key & 7) as u8;
        if wire > I32 {
            return Err(Stop::Invalid("invalid wire type"));
        }
        let number = key >> 3;
        if number == 0 {
            return Err(Stop::Invalid("invalid tag"));
        }
        Ok((number, wire))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let (head, rest) = self
            .buf
            .split_at_checked(n)
            .ok_or(Stop::Invalid("buffer underflow"))?;
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        self.take(N)?
            .try_into()
            .map_err(|_| Stop::Invalid("buffer underflow"))
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], Stop> {
        let len = usize::try_from(self.varint()?).map_err(|_| Stop::Invalid("buffer underflow"))?;
        self.take(len)
    }

    /// One value of a wire type other than the group markers.
    pub(super) fn raw(&mut self, wire: u8) -> Result<Raw<'a>, Stop> {
        Ok(match wire {
            VARINT => Raw::Varint(self.varint()?),
            I64 => Raw::Fixed64(self.array()?),
            LEN => Raw::Len(self.len_delimited()?),
            I32 => Raw::Fixed32(self.array()?),
            _ => return Err(Stop::Unsupported),
        })
    }
}

/// Skips an unknown field of a message as prost-reflect's decoder does, keeping
/// none of it: groups spend recursion budget, an unmatched end of group is refused.
pub(super) fn skip_unknown(
    r: &mut Reader<'_>,
    number: u32,
    wire: u8,
    ctx: u32,
) -> Result<(), Stop> {
    match wire {
        START_GROUP => {
            let inner = ctx
                .checked_sub(1)
                .ok_or(Stop::Invalid("recursion limit reached"))?;
            loop {
                let (n, w) = r.key()?;
                if w == END_GROUP {
                    return end_group(n, number);
                }
                skip_unknown(r, n, w, inner)?;
            }
        }
        END_GROUP => Err(Stop::Invalid("unexpected end group tag")),
        _ => r.raw(wire).map(drop),
    }
}

/// Skips an unknown field of a map entry as prost's `skip_field` does: every
/// field, not only groups, needs recursion budget left.
fn skip_field(r: &mut Reader<'_>, number: u32, wire: u8, ctx: u32) -> Result<(), Stop> {
    let inner = ctx
        .checked_sub(1)
        .ok_or(Stop::Invalid("recursion limit reached"))?;
    match wire {
        START_GROUP => loop {
            let (n, w) = r.key()?;
            if w == END_GROUP {
                return end_group(n, number);
            }
            skip_field(r, n, w, inner)?;
        },
        END_GROUP => Err(Stop::Invalid("unexpected end group tag")),
        _ => r.raw(wire).map(drop),
    }
}

/// A group must end with its own number.
fn end_group(end: u32, start: u32) -> Result<(), Stop> {
    if end == start {
        Ok(())
    } else {
        Err(Stop::Invalid("unexpected end group tag"))
    }
}

/// Reads a known field's value, checking its wire type as prost-reflect does.
pub(super) fn read_known<'a>(
    r: &mut Reader<'a>,
    field: &FieldPlan,
    wire: u8,
) -> Result<Raw<'a>, Stop> {
    match field.shape {
        // prost-reflect reads a map entry whatever the wire type says.
        Shape::Map { .. } if wire != LEN => return Err(Stop::Unsupported),
        Shape::Map { .. } => return Ok(Raw::Len(r.len_delimited()?)),
        Shape::List if wire == LEN && field.ty.packable() => {
            return Ok(Raw::Len(r.len_delimited()?));
        }
        _ => {}
    }
    if field.ty == Ty::Group {
        return Err(Stop::Unsupported);
    }
    if wire != field.ty.wire() {
        return Err(Stop::Invalid("unexpected wire type"));
    }
    r.raw(wire)
}

/// Parses a map entry: its key and value, each if present.
pub(super) fn parse_entry<'a>(
    key_ty: Ty,
    value_ty: Ty,
    body: &'a [u8],
    ctx: u32,
) -> Result<(Option<Raw<'a>>, Option<Raw<'a>>), Stop> {
    let mut r = Reader { buf: body };
    let (mut key, mut value) = (None, None);
    while !r.buf.is_empty() {
        let (number, wire) = r.key()?;
        let (ty, slot) = match number {
            1 => (key_ty, &mut key),
            2 => (value_ty, &mut value),
            _ => {
                skip_field(&mut r, number, wire, ctx)?;
                continue;
            }
        };
        if ty == Ty::Group {
            return Err(Stop::Unsupported);
        }
        if wire != ty.wire() {
            return Err(Stop::Invalid("unexpected wire type"));
        }
        if slot.replace(r.raw(wire)?).is_some() {
            return Err(Stop::Unsupported);
        }
    }
    Ok((key, value))
}

/// A decoded scalar.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scalar<'a> {
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(&'a str),
    Bytes(&'a [u8]),
    Enum(i32),
}

/// Decodes a value of a scalar or enum type, as prost does.
pub(super) fn scalar(ty: Ty, raw: Raw<'_>) -> Result<Scalar<'_>, Stop> {
    Ok(match (ty, raw) {
        (Ty::Int32, Raw::Varint(v)) => Scalar::I32(v as i32),
        (Ty::Int64, Raw::Varint(v)) => Scalar::I64(v as i64),
        (Ty::Uint32, Raw::Varint(v)) => Scalar::U32(v as u32),
        (Ty::Uint64, Raw::Varint(v)) => Scalar::U64(v),
        (Ty::Sint32, Raw::Varint(v)) => {
            let n = v as u32;
            Scalar::I32((n >> 1) as i32 ^ -((n & 1) as i32))
        }
        (Ty::Sint64, Raw::Varint(v)) => Scalar::I64((v >> 1) as i64 ^ -((v & 1) as i64)),
        (Ty::Bool, Raw::Varint(v)) => Scalar::Bool(v != 0),
        (Ty::Enum(_), Raw::Varint(v)) => Scalar::Enum(v as i32),
        (Ty::Fixed32, Raw::Fixed32(b)) => Scalar::U32(u32::from_le_bytes(b)),
        (Ty::Sfixed32, Raw::Fixed32(b)) => Scalar::I32(i32::from_le_bytes(b)),
        (Ty::Float, Raw::Fixed32(b)) => Scalar::F32(f32::from_le_bytes(b)),
        (Ty::Fixed64, Raw::Fixed64(b)) => Scalar::U64(u64::from_le_bytes(b)),
        (Ty::Sfixed64, Raw::Fixed64(b)) => Scalar::I64(i64::from_le_bytes(b)),
        (Ty::Double, Raw::Fixed64(b)) => Scalar::F64(f64::from_le_bytes(b)),
        (Ty::String, Raw::Len(b)) => {
            Scalar::Str(std::str::from_utf8(b).map_err(|_| Stop::Invalid("string is not UTF-8"))?)
        }
        (Ty::Bytes, Raw::Len(b)) => Scalar::Bytes(b),
        _ => return Err(Stop::Unsupported),
    })
}

/// The value of a scalar or enum field that is absent.
pub(super) fn zero(ty: Ty, enum_default: i32) -> Result<Scalar<'static>, Stop> {
    Ok(match ty {
        Ty::Int32 | Ty::Sint32 | Ty::Sfixed32 => Scalar::I32(0),
        Ty::Int64 | Ty::Sint64 | Ty::Sfixed64 => Scalar::I64(0),
        Ty::Uint32 | Ty::Fixed32 => Scalar::U32(0),
        Ty::Uint64 | Ty::Fixed64 => Scalar::U64(0),
        Ty::Float => Scalar::F32(0.0),
        Ty::Double => Scalar::F64(0.0),
        Ty::Bool => Scalar::Bool(false),
        Ty::String => Scalar::Str(""),
        Ty::Bytes => Scalar::Bytes(&[]),
        Ty::Enum(_) => Scalar::Enum(enum_default),
        Ty::Message(_) | Ty::Group => return Err(Stop::Unsupported),
    })
}
