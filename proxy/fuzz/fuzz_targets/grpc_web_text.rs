//! `application/grpc-web-text` bodies: the streaming base64 decoder
//! (`filters/src/rpc/base64_stream.rs`) on arbitrary text in arbitrary chunk splits,
//! and on concatenated padded segments it must read back exactly.
//!
//! Input: 1 mode byte, 1 byte split count `n`, `n` split bytes, then the payload.
//!
//! Properties:
//! - arbitrary text never panics; the split does not change the output or the error
//!   (offsets count from the stream start); output is at most 3/4 of the input;
//!   after an error every call repeats it;
//! - text the strict reference decoder (base64 crate, standard alphabet, padded)
//!   accepts decodes to the same bytes;
//! - mode 1: the payload cut into segments, each `encode`d on its own (as a gRPC-Web-text
//!   sender flushes), optionally with whitespace and URL-safe letters, split anywhere,
//!   decodes back to the payload and `finish` is Ok.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use tollgate_filters::rpc::base64_stream::{Base64Decoder, Base64Error, encode};
use tollgate_proxy::fuzzing::chunks;

fn decode(parts: &[&[u8]]) -> Result<Vec<u8>, Base64Error> {
    let mut d = Base64Decoder::new();
    let mut out = Vec::new();
    for p in parts {
        match d.push(p) {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => {
                assert_eq!(d.push(b"AAAA"), Err(e.clone()));
                assert_eq!(d.finish(), Err(e.clone()));
                return Err(e);
            }
        }
    }
    d.finish()?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mode = data[0];
    let n = usize::from(data[1]).min(data.len() - 2).min(64);
    let seeds = &data[2..2 + n];
    let payload = &data[2 + n..];

    if mode & 1 == 0 {
        // Arbitrary text.
        let split = decode(&chunks(payload, seeds));
        let whole = decode(&[payload]);
        assert_eq!(split, whole);
        if let Ok(out) = &whole {
            assert!(out.len() <= payload.len() / 4 * 3);
        }
        if let Ok(reference) = STANDARD.decode(payload) {
            assert_eq!(whole.as_deref(), Ok(&reference[..]));
        }
    } else {
        // Segments encoded one by one, the way a sender flushes.
        let segments = chunks(payload, seeds);
        let mut text = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            text.extend_from_slice(&encode(seg));
            if mode & 2 != 0 && i % 3 == 0 {
                text.extend_from_slice(b"\r\n");
            }
        }
        if mode & 4 != 0 {
            for b in &mut text {
                *b = match *b {
                    b'+' => b'-',
                    b'/' => b'_',
                    other => other,
                };
            }
        }
        // Split the text with the same seeds, rotated so the cuts differ.
        let mut rotated = seeds.to_vec();
        rotated.rotate_left(usize::from(mode >> 4) % seeds.len().max(1));
        let got = decode(&chunks(&text, &rotated));
        assert_eq!(
            got.as_deref(),
            Ok(payload),
            "text {:?}",
            String::from_utf8_lossy(&text)
        );
    }
});
