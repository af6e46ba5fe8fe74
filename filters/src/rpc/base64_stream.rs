//! Base64 for `application/grpc-web-text` bodies.
//!
//! A gRPC-Web-text sender base64-encodes each buffer it flushes on its own, so the
//! body is a concatenation of padded base64 segments ("AAAAAAA=" "AAAABQ=="):
//! padding may end a quantum in the middle of the stream, and the transport may
//! split the text at any byte. [`Base64Decoder`] carries the partial quantum and
//! any padding still owed across chunks. It reads the standard alphabet and the
//! URL-safe one, and skips ASCII whitespace.

use super::b64::STANDARD;
use base64::Engine as _;
use bytes::Bytes;

/// A base64 body error; offsets count input bytes from the start of the stream.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Base64Error {
    #[error("invalid base64 byte 0x{byte:02x} at offset {offset}")]
    InvalidByte { byte: u8, offset: u64 },
    #[error("misplaced base64 padding at offset {offset}")]
    BadPadding { offset: u64 },
    #[error("base64 body ended inside a quantum")]
    Truncated,
}

const INVALID: u8 = 0xff;
const SKIP: u8 = 0xfe;
const PAD: u8 = 0xfd;

/// Sextet value of each input byte, or one of the markers above.
const TABLE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t[b'-' as usize] = 62;
    t[b'_' as usize] = 63;
    t[b'=' as usize] = PAD;
    t[b' ' as usize] = SKIP;
    t[b'\t' as usize] = SKIP;
    t[b'\r' as usize] = SKIP;
    t[b'\n' as usize] = SKIP;
    t[0x0c] = SKIP;
    t
};

/// Streaming decoder for concatenated, individually padded base64 segments.
#[derive(Debug, Default)]
pub struct Base64Decoder {
    /// Sextets of the current quantum, packed high bits first.
    acc: u32,
    /// Sextets in `acc` (0–3 between calls).
    n: u8,
    /// `=` still expected to close the last quantum.
    pad_owed: u8,
    /// Input bytes consumed so far, for error offsets.
    offset: u64,
    /// The first error; the stream is unusable after it.
    failed: Option<Base64Error>,
}

impl Base64Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes a chunk, returning the bytes completed by it. After an error the
    /// decoder refuses all further input.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, Base64Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut out = Vec::with_capacity(chunk.len() / 4 * 3 + 3);
        for &b in chunk {
            if let Err(e) = self.step(b, &mut out) {
                self.failed = Some(e.clone());
                return Err(e);
            }
            self.offset += 1;
        }
        Ok(Bytes::from(out))
    }

    /// Call at end of body: an error if a quantum is incomplete or padding is
    /// still owed, or the earlier error.
    pub fn finish(&self) -> Result<(), Base64Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.n != 0 || self.pad_owed != 0 {
            Err(Base64Error::Truncated)
        } else {
            Ok(())
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> Result<(), Base64Error> {
        let v = TABLE[usize::from(b)];
        match v {
            SKIP => Ok(()),
            PAD => {
                if self.pad_owed > 0 {
                    self.pad_owed -= 1;
                    return Ok(());
                }
                // Padding closes a quantum of 2 or 3 sextets (1 or 2 bytes).
                let [_, hi, mid, _] = self.acc.to_be_bytes();
                match self.n {
                    2 => {
                        out.push(hi);
                        self.pad_owed = 1;
                    }
                    3 => out.extend_from_slice(&[hi, mid]),
                    _ => {
                        return Err(Base64Error::BadPadding {
                            offset: self.offset,
                        });
                    }
                }
                self.acc = 0;
                self.n = 0;
                Ok(())
            }
            INVALID => Err(Base64Error::InvalidByte {
                byte: b,
                offset: self.offset,
            }),
            sextet => {
                if self.pad_owed > 0 {
                    return Err(Base64Error::BadPadding {
                        offset: self.offset,
                    });
                }
                self.acc |= u32::from(sextet) << (18 - 6 * u32::from(self.n));
                self.n += 1;
                if self.n == 4 {
                    let [_, hi, mid, lo] = self.acc.to_be_bytes();
                    out.extend_from_slice(&[hi, mid, lo]);
                    self.acc = 0;
                    self.n = 0;
                }
                Ok(())
            }
        }
    }
}

/// Standard, padded base64 of `data`.
pub fn encode(data: &[u8]) -> Bytes {
    Bytes::from(STANDARD.encode(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in(parts: &[&[u8]]) -> Result<Vec<u8>, Base64Error> {
        let mut d = Base64Decoder::new();
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(&d.push(p)?);
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn padded_segments_mid_stream() {
        // "AAAAAAA=" is 5 zero bytes (an empty envelope), closed by padding;
        // "AAAABQ==" is 00 00 00 05, whose last quantum is padded again.
        let got = decode_in(&[b"AAAAAAA=", b"AAAABQ=="]).unwrap();
        assert_eq!(got, [0, 0, 0, 0, 0, 0, 0, 0, 5]);
        let mut d = Base64Decoder::new();
        assert_eq!(&d.push(b"AAAAAAA=").unwrap()[..], [0; 5]);
        assert_eq!(&d.push(b"AAAABQ==").unwrap()[..], [0, 0, 0, 5]);
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn every_split_point_of_segmented_stream() {
        let segments: [&[u8]; 4] = [b"hello", b"\x00\x01", b"grpc-web-text!", b"x"];
        let text: Vec<u8> = segments.iter().flat_map(|s| encode(s)).collect();
        let expected: Vec<u8> = segments.concat();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let got = decode_in(&[&text[..i], &text[i..j], &text[j..]]).unwrap();
                assert_eq!(got, expected, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn matches_reference_encoder_for_all_lengths() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..64 {
            let text = encode(&data[..len]);
            assert_eq!(decode_in(&[&text]).unwrap(), &data[..len]);
        }
    }

    #[test]
    fn url_safe_alphabet_and_whitespace() {
        assert_eq!(
            decode_in(&[b"-_-_"]).unwrap(),
            decode_in(&[b"+/+/"]).unwrap()
        );
        assert_eq!(decode_in(&[b"aGVs\r\nbG8=\n"]).unwrap(), b"hello");
        assert_eq!(decode_in(&[b" aG Vs bG 8 = "]).unwrap(), b"hello");
    }

    #[test]
    fn errors() {
        assert_eq!(
            decode_in(&[b"aGV*"]),
            Err(Base64Error::InvalidByte {
                byte: b'*',
                offset: 3
            })
        );
        // Padding after one sextet, or with no quantum open.
        assert!(matches!(
            decode_in(&[b"a==="]),
            Err(Base64Error::BadPadding { .. })
        ));
        assert!(matches!(
            decode_in(&[b"="]),
            Err(Base64Error::BadPadding { .. })
        ));
        assert!(matches!(
            decode_in(&[b"aGVs="]),
            Err(Base64Error::BadPadding { .. })
        ));
        // Data where a second '=' is owed.
        assert!(matches!(
            decode_in(&[b"BQ=", b"AAAA"]),
            Err(Base64Error::BadPadding { offset: 3 })
        ));
        // The owed '=' may arrive in the next chunk.
        assert_eq!(decode_in(&[b"BQ=", b"="]).unwrap(), [5]);
        // Unfinished quantum or owed padding at the end.
        assert_eq!(decode_in(&[b"aGVsb"]), Err(Base64Error::Truncated));
        assert_eq!(decode_in(&[b"BQ="]), Err(Base64Error::Truncated));

        // A failed decoder stays failed.
        let mut d = Base64Decoder::new();
        let first = d.push(b"AA*").unwrap_err();
        assert_eq!(d.push(b"AAAA").unwrap_err(), first);
        assert_eq!(d.finish().unwrap_err(), first);
    }
}
