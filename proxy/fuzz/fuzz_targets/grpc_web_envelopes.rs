//! The length-prefixed envelopes of gRPC-Web and Connect bodies
//! (`filters/src/rpc/envelope.rs`), fed arbitrary bytes in arbitrary chunk splits.
//!
//! Input: 2 bytes message limit, 1 byte flag mask mode, 1 byte flag mask, 1 byte split
//! count `n`, `n` split bytes, then the body.
//!
//! Properties:
//! - no panic; every envelope returned is at most the limit and carries only allowed flags;
//! - the envelopes returned, re-encoded, are exactly the body's prefix they came from; when
//!   `finish` is Ok they are the whole body, when it says Truncated the rest is what is held;
//! - an error names the header that caused it (flags outside the mask, or length over the limit);
//! - the split does not matter: the body in one chunk decodes to the same envelopes and result;
//! - after an error the decoder keeps returning it and drops further input;
//! - `EnvelopeScanner` with the same mask agrees with an unlimited decoder on flags errors and
//!   on whether the body ends on an envelope boundary.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tollgate_filters::rpc::envelope::{
    EnvelopeScanner, FLAG_COMPRESSED, FLAG_END_STREAM, FLAG_TRAILERS, HEADER_LEN, REQUEST_FLAGS,
};
use tollgate_filters::rpc::{Envelope, EnvelopeDecoder, FrameError};
use tollgate_proxy::fuzzing::chunks;

struct Outcome {
    envelopes: Vec<Envelope>,
    /// First error of `next_envelope`, if any.
    error: Option<FrameError>,
    finish: Result<(), FrameError>,
}

fn decode(parts: &[&[u8]], limit: u64, allowed: Option<u8>) -> Outcome {
    let mut d = EnvelopeDecoder::new(limit);
    if let Some(a) = allowed {
        d = d.allow_flags(a);
    }
    let mut envelopes = Vec::new();
    let mut error = None;
    for part in parts {
        d.push(Bytes::copy_from_slice(part));
        if error.is_some() {
            // Input after an error is dropped.
            assert_eq!(d.buffered(), 0);
            continue;
        }
        loop {
            match d.next_envelope() {
                Ok(Some(e)) => envelopes.push(e),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(d.buffered(), 0);
                    // The error sticks.
                    assert_eq!(d.next_envelope(), Err(e.clone()));
                    error = Some(e);
                    break;
                }
            }
        }
    }
    let finish = d.finish();
    if let Some(e) = &error {
        assert_eq!(finish.as_ref(), Err(e));
    }
    Outcome {
        envelopes,
        error,
        finish,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let limit = u64::from(u16::from_be_bytes([data[0], data[1]]));
    let allowed = match data[2] % 5 {
        0 => None,
        1 => Some(REQUEST_FLAGS),
        2 => Some(FLAG_COMPRESSED | FLAG_TRAILERS),
        3 => Some(FLAG_COMPRESSED | FLAG_END_STREAM),
        _ => Some(data[3]),
    };
    let mask = allowed.unwrap_or(u8::MAX);
    let n = usize::from(data[4]).min(data.len() - 5).min(64);
    let seeds = &data[5..5 + n];
    let body = &data[5 + n..];
    let parts = chunks(body, seeds);

    let out = decode(&parts, limit, allowed);

    // Envelopes within the limit and mask, and exactly the prefix they were read from.
    let mut wire = Vec::new();
    for e in &out.envelopes {
        assert!(e.data.len() as u64 <= limit);
        assert_eq!(e.flags & !mask, 0);
        wire.extend_from_slice(&e.encode());
    }
    assert!(wire.len() <= body.len());
    assert_eq!(&wire[..], &body[..wire.len()]);
    let rest = &body[wire.len()..];
    match (&out.error, &out.finish) {
        (None, Ok(())) => assert!(rest.is_empty()),
        (None, Err(FrameError::Truncated { buffered })) => {
            assert!(!rest.is_empty());
            assert_eq!(*buffered, rest.len());
            // What is held is less than a header, or a header announcing more than is held.
            if rest.len() >= HEADER_LEN {
                let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
                assert!(rest.len() - HEADER_LEN < len);
            }
        }
        (None, Err(e)) => panic!("finish failed with {e:?} though decoding did not"),
        (Some(e), _) => {
            assert!(
                rest.len() >= HEADER_LEN,
                "{e:?} with only {} bytes left",
                rest.len()
            );
            let flags = rest[0];
            let len = u64::from(u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]));
            match e {
                FrameError::Flags { flags: f } => {
                    assert_eq!(*f, flags);
                    assert_ne!(flags & !mask, 0);
                }
                FrameError::TooLarge { size, limit: l } => {
                    assert_eq!(flags & !mask, 0, "flags are checked first");
                    assert_eq!((*size, *l), (len, limit));
                    assert!(len > limit);
                }
                FrameError::Truncated { .. } => panic!("next_envelope returned Truncated"),
            }
        }
    }

    // The split does not matter.
    let whole = decode(&[body], limit, allowed);
    assert_eq!(whole.envelopes, out.envelopes);
    assert_eq!(whole.error, out.error);
    assert_eq!(whole.finish, out.finish);

    // Round trip: the re-encoded envelopes decode to themselves, byte at a time too.
    let again = decode(&[&wire], limit, allowed);
    assert_eq!(again.envelopes, out.envelopes);
    assert_eq!(again.finish, Ok(()));
    let bytewise: Vec<&[u8]> = wire.chunks(1).collect();
    let again = decode(&bytewise, limit, allowed);
    assert_eq!(again.envelopes, out.envelopes);

    // The pass-through scanner sees the same headers as an unlimited decoder.
    let unlimited = decode(&parts, u64::MAX, Some(mask));
    let mut scanner = EnvelopeScanner::new(mask);
    let mut scan_err = None;
    for part in &parts {
        if let Err(e) = scanner.push(part) {
            scan_err = Some(e);
            break;
        }
    }
    match (&unlimited.error, &scan_err) {
        (Some(FrameError::Flags { flags: a }), Some(FrameError::Flags { flags: b })) => {
            assert_eq!(a, b)
        }
        (None, None) => assert_eq!(
            scanner.finish().is_ok(),
            unlimited.finish.is_ok(),
            "scanner and decoder disagree on where the body ends"
        ),
        (a, b) => panic!("decoder error {a:?}, scanner error {b:?}"),
    }
});
