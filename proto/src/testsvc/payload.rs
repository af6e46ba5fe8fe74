//! Validation of size/count fields and payload generation.

use tonic::Status;

/// Largest payload a single message may request (16 MiB).
const MAX_PAYLOAD_BYTES: usize = 16 << 20;

/// Rejects negative values with `INVALID_ARGUMENT`.
pub(super) fn non_negative(field: &str, value: i32) -> Result<u32, Status> {
    u32::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("{field} must be >= 0, got {value}")))
}

/// A zero-filled payload of `len` bytes, bounded by [`MAX_PAYLOAD_BYTES`].
pub(super) fn zeroes(len: i32) -> Result<Vec<u8>, Status> {
    let len = non_negative("payload_bytes", len)? as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Err(Status::invalid_argument(format!(
            "payload_bytes must be <= {MAX_PAYLOAD_BYTES}, got {len}"
        )));
    }
    Ok(vec![0; len])
}
