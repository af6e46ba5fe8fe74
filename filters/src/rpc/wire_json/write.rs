//! JSON output as `serde_json` writes it: numbers, escaped strings, base64
//! bytes, enum names and map keys, appended to a byte buffer.

use crate::rpc::b64::STANDARD;
use base64::Engine as _;
use serde_json::ser::{CompactFormatter, Formatter as _};

use super::Stop;
use super::plan::EnumPlan;
use super::reader::Scalar;

/// A scalar value; enums, which need their names, are written by [`enum_value`].
pub(super) fn scalar(out: &mut Vec<u8>, value: Scalar<'_>) -> Result<(), Stop> {
    let mut f = CompactFormatter;
    match value {
        Scalar::I32(v) => f.write_i32(out, v).map_err(io_error)?,
        Scalar::U32(v) => f.write_u32(out, v).map_err(io_error)?,
        Scalar::I64(v) => {
            out.push(b'"');
            f.write_i64(out, v).map_err(io_error)?;
            out.push(b'"');
        }
        Scalar::U64(v) => {
            out.push(b'"');
            f.write_u64(out, v).map_err(io_error)?;
            out.push(b'"');
        }
        Scalar::F32(v) if v.is_finite() => f.write_f32(out, v).map_err(io_error)?,
        Scalar::F64(v) if v.is_finite() => f.write_f64(out, v).map_err(io_error)?,
        Scalar::F32(v) => non_finite(out, v.is_nan(), v > 0.0),
        Scalar::F64(v) => non_finite(out, v.is_nan(), v > 0.0),
        Scalar::Bool(v) => out.extend_from_slice(if v { b"true" } else { b"false" }),
        Scalar::Str(s) => write_str(out, s),
        Scalar::Bytes(b) => write_base64(out, b)?,
        Scalar::Enum(_) => return Err(Stop::Unsupported),
    }
    Ok(())
}

/// An enum by name; a number when it has none; `null` for `NullValue`.
pub(super) fn enum_value(out: &mut Vec<u8>, plan: &EnumPlan, number: i32) -> Result<(), Stop> {
    if plan.null {
        out.extend_from_slice(b"null");
    } else if let Ok(i) = plan.names.binary_search_by_key(&number, |(n, _)| *n)
        && let Some((_, name)) = plan.names.get(i)
    {
        out.extend_from_slice(name);
    } else {
        CompactFormatter.write_i32(out, number).map_err(io_error)?;
    }
    Ok(())
}

/// A map key as a JSON string.
pub(super) fn map_key(out: &mut Vec<u8>, key: Scalar<'_>) -> Result<(), Stop> {
    let mut f = CompactFormatter;
    match key {
        Scalar::Str(s) => {
            write_str(out, s);
            return Ok(());
        }
        Scalar::Bool(v) => {
            out.extend_from_slice(if v { b"\"true\"" } else { b"\"false\"" });
            return Ok(());
        }
        _ => {}
    }
    out.push(b'"');
    match key {
        Scalar::I32(v) => f.write_i32(out, v),
        Scalar::I64(v) => f.write_i64(out, v),
        Scalar::U32(v) => f.write_u32(out, v),
        Scalar::U64(v) => f.write_u64(out, v),
        _ => return Err(Stop::Unsupported),
    }
    .map_err(io_error)?;
    out.push(b'"');
    Ok(())
}

fn io_error(_: std::io::Error) -> Stop {
    Stop::Unsupported
}

fn non_finite(out: &mut Vec<u8>, nan: bool, positive: bool) {
    out.extend_from_slice(match (nan, positive) {
        (true, _) => b"\"NaN\"",
        (false, true) => b"\"Infinity\"",
        (false, false) => b"\"-Infinity\"",
    });
}

/// A JSON string, escaped as `serde_json` escapes it: `"`, `\` and control
/// characters only.
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut rest = s.as_bytes();
    while let Some(i) = rest
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
    {
        let Some((head, tail)) = rest.split_at_checked(i) else {
            break;
        };
        out.extend_from_slice(head);
        let Some((&b, tail)) = tail.split_first() else {
            break;
        };
        write_escape(out, b);
        rest = tail;
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

fn write_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0a => b'n',
        0x0c => b'f',
        0x0d => b'r',
        _ => {
            let hi = HEX[usize::from(b >> 4)];
            let lo = HEX[usize::from(b & 0xf)];
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// Standard base64 with padding, quoted.
fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), Stop> {
    out.push(b'"');
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).ok_or(Stop::Unsupported)?;
    out.resize(start.saturating_add(len), 0);
    let tail = out.get_mut(start..).ok_or(Stop::Unsupported)?;
    STANDARD
        .encode_slice(bytes, tail)
        .map_err(|_| Stop::Unsupported)?;
    out.push(b'"');
    Ok(())
}
