//! The length-prefixed message framing shared by gRPC, gRPC-Web and Connect
//! streaming: one flags byte, a 4-byte big-endian length, then the message.
//!
//! [`EnvelopeDecoder`] takes body chunks split anywhere and hands out whole
//! envelopes. It keeps the chunks as they came, so a message that sits inside one
//! chunk is returned as a slice of it without copying, and it refuses a length
//! above its limit as soon as the 5-byte header is complete, before any of the
//! message is buffered.
//!
//! Flag bits a protocol does not define are refused, not passed on as a message:
//! gRPC-Web defines 0x01 (compressed) and 0x80 (trailers), Connect 0x01 and 0x02
//! (end of stream), and a request message may only be compressed.
//! [`EnvelopeScanner`] checks the headers of a stream that is passed on unchanged.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Message is compressed with the stream's negotiated encoding.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Connect: the message is the end-of-stream JSON.
pub const FLAG_END_STREAM: u8 = 0x02;
/// gRPC-Web: the message is the trailer block.
pub const FLAG_TRAILERS: u8 = 0x80;

/// The only flag a request message may carry, in every protocol here.
pub const REQUEST_FLAGS: u8 = FLAG_COMPRESSED;

/// Length of the envelope header.
pub const HEADER_LEN: usize = 5;

/// One framed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub data: Bytes,
}

impl Envelope {
    /// Whether [`FLAG_COMPRESSED`] is set.
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// Whether [`FLAG_END_STREAM`] (Connect) is set.
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }

    /// Whether [`FLAG_TRAILERS`] (gRPC-Web) is set.
    pub fn is_trailers(&self) -> bool {
        self.flags & FLAG_TRAILERS != 0
    }

    /// Header and data in one buffer.
    pub fn encode(&self) -> Bytes {
        encode(self.flags, &self.data)
    }
}

/// A framing error.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("body ended inside a message ({buffered} bytes of it buffered)")]
    Truncated { buffered: usize },
    #[error("message flags 0x{flags:02x} are not allowed here")]
    Flags { flags: u8 },
}

/// Incremental decoder: feed chunks in any split, take whole envelopes out.
#[derive(Debug)]
pub struct EnvelopeDecoder {
    limit: u64,
    chunks: VecDeque<Bytes>,
    /// Bytes held in `chunks`.
    buffered: usize,
    /// Flags and length of the message being collected, once its header is read.
    pending: Option<(u8, usize)>,
    /// Set on the first error; the stream is unusable after it.
    failed: Option<FrameError>,
    /// Flag bits an envelope may carry.
    allowed: u8,
}

impl EnvelopeDecoder {
    /// A decoder refusing messages longer than `max_message_bytes`.
    pub fn new(max_message_bytes: u64) -> Self {
        EnvelopeDecoder {
            limit: max_message_bytes,
            chunks: VecDeque::new(),
            buffered: 0,
            pending: None,
            failed: None,
            allowed: u8::MAX,
        }
    }

    /// Refuses envelopes with any flag bit outside `allowed` (all pass by default).
    pub fn allow_flags(mut self, allowed: u8) -> Self {
        self.allowed = allowed;
        self
    }

    /// Adds a body chunk. Dropped after an error.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() || self.failed.is_some() {
            return;
        }
        self.buffered += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// The next whole envelope, `Ok(None)` when more input is needed. After an
    /// error every call returns the same error.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let (flags, len) = match self.pending {
            Some(p) => p,
            None => {
                if self.buffered < HEADER_LEN {
                    return Ok(None);
                }
                let mut head = [0u8; HEADER_LEN];
                self.take_into(&mut head);
                let [flags, a, b, c, d] = head;
                let size = u32::from_be_bytes([a, b, c, d]);
                if flags & !self.allowed != 0 {
                    let e = FrameError::Flags { flags };
                    self.fail(e.clone());
                    return Err(e);
                }
                if u64::from(size) > self.limit {
                    let e = FrameError::TooLarge {
                        size: u64::from(size),
                        limit: self.limit,
                    };
                    self.fail(e.clone());
                    return Err(e);
                }
                // u32 always fits usize on the 32- and 64-bit targets we build for.
                let len = usize::try_from(size).unwrap_or(usize::MAX);
                self.pending = Some((flags, len));
                (flags, len)
            }
        };
        if self.buffered < len {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(Envelope {
            flags,
            data: self.take(len),
        }))
    }

    /// Call at end of body: `Err(Truncated)` if part of an envelope is buffered,
    /// or the earlier error if decoding failed.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let buffered = self.buffered
            + if self.pending.is_some() {
                HEADER_LEN
            } else {
                0
            };
        if buffered == 0 {
            Ok(())
        } else {
            Err(FrameError::Truncated { buffered })
        }
    }

    /// Bytes received but not yet returned (a read header excluded).
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    fn fail(&mut self, e: FrameError) {
        self.failed = Some(e);
        self.chunks.clear();
        self.buffered = 0;
        self.pending = None;
    }

    /// Removes `len <= self.buffered` bytes from the front, without copying when
    /// they sit in the first chunk.
    fn take(&mut self, len: usize) -> Bytes {
        if len == 0 {
            return Bytes::new();
        }
        if let Some(front) = self.chunks.front_mut()
            && front.len() >= len
        {
            let out = front.split_to(len);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            self.buffered -= len;
            return out;
        }
        let mut out = BytesMut::with_capacity(len);
        while out.len() < len {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let n = front.len().min(len - out.len());
            out.put_slice(front.get(..n).unwrap_or_default());
            front.advance(n);
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        self.buffered -= out.len();
        out.freeze()
    }

    /// Fills `dst` from the front; the caller checked enough is buffered.
    fn take_into(&mut self, dst: &mut [u8]) {
        let mut filled = 0;
        while filled < dst.len() {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let n = front.len().min(dst.len() - filled);
            if let (Some(d), Some(s)) = (dst.get_mut(filled..filled + n), front.get(..n)) {
                d.copy_from_slice(s);
            }
            front.advance(n);
            filled += n;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        self.buffered -= filled;
    }
}

/// Checks the envelope headers of a stream passed on unchanged: flags only, nothing
/// buffered beyond a split header.
#[derive(Debug)]
pub struct EnvelopeScanner {
    allowed: u8,
    /// Header bytes read of the next envelope (0 to 4 between calls).
    head: [u8; HEADER_LEN],
    have: usize,
    /// Message bytes still to skip before the next header.
    skip: u64,
    failed: Option<FrameError>,
}

impl EnvelopeScanner {
    /// A scanner refusing any flag bit outside `allowed`.
    pub fn new(allowed: u8) -> Self {
        EnvelopeScanner {
            allowed,
            head: [0; HEADER_LEN],
            have: 0,
            skip: 0,
            failed: None,
        }
    }

    /// Checks the headers that start or end in `chunk`. After an error every call
    /// returns the same error.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        while !chunk.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                chunk = chunk.get(n..).unwrap_or_default();
                self.skip -= n as u64;
                continue;
            }
            let n = (HEADER_LEN - self.have).min(chunk.len());
            if let (Some(d), Some(s)) =
                (self.head.get_mut(self.have..self.have + n), chunk.get(..n))
            {
                d.copy_from_slice(s);
            }
            chunk = chunk.get(n..).unwrap_or_default();
            self.have += n;
            if self.have < HEADER_LEN {
                break;
            }
            let [flags, a, b, c, d] = self.head;
            if flags & !self.allowed != 0 {
                let e = FrameError::Flags { flags };
                self.failed = Some(e.clone());
                return Err(e);
            }
            self.have = 0;
            self.skip = u64::from(u32::from_be_bytes([a, b, c, d]));
        }
        Ok(())
    }

    /// Call at end of body: `Err(Truncated)` inside an envelope, or the earlier error.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.have == 0 && self.skip == 0 {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: self.have,
            })
        }
    }
}

/// The 5-byte header for a message of `len` bytes. Lengths above `u32::MAX`
/// cannot be framed and saturate; message limits keep callers far below that.
pub fn header(flags: u8, len: usize) -> [u8; 5] {
    let [a, b, c, d] = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [flags, a, b, c, d]
}

/// Header and data in one buffer.
pub fn encode(flags: u8, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + data.len());
    out.put_slice(&header(flags, data.len()));
    out.put_slice(data);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_stream() -> (Vec<Envelope>, Vec<u8>) {
        let envelopes = vec![
            Envelope {
                flags: 0,
                data: Bytes::from_static(b"hello"),
            },
            Envelope {
                flags: 0,
                data: Bytes::new(),
            },
            Envelope {
                flags: FLAG_COMPRESSED,
                data: Bytes::from((0..=255u8).collect::<Vec<_>>()),
            },
            Envelope {
                flags: FLAG_TRAILERS,
                data: Bytes::from_static(b"grpc-status: 0\r\n"),
            },
        ];
        let wire = envelopes.iter().flat_map(|e| e.encode()).collect();
        (envelopes, wire)
    }

    fn decode_all(d: &mut EnvelopeDecoder, out: &mut Vec<Envelope>) {
        while let Some(e) = d.next_envelope().unwrap() {
            out.push(e);
        }
    }

    #[test]
    fn header_layout() {
        assert_eq!(header(0x80, 0x0102_0304), [0x80, 1, 2, 3, 4]);
        assert_eq!(&encode(1, b"ab")[..], b"\x01\x00\x00\x00\x02ab");
    }

    #[test]
    fn round_trip_at_every_split_point() {
        let (expected, wire) = sample_stream();
        for i in 0..=wire.len() {
            for j in i..=wire.len() {
                let mut d = EnvelopeDecoder::new(1024);
                let mut got = Vec::new();
                for part in [&wire[..i], &wire[i..j], &wire[j..]] {
                    d.push(Bytes::copy_from_slice(part));
                    decode_all(&mut d, &mut got);
                }
                assert_eq!(got, expected, "split at {i},{j}");
                assert_eq!(d.finish(), Ok(()));
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let (expected, wire) = sample_stream();
        let mut d = EnvelopeDecoder::new(1024);
        let mut got = Vec::new();
        for b in &wire {
            d.push(Bytes::copy_from_slice(&[*b]));
            decode_all(&mut d, &mut got);
        }
        assert_eq!(got, expected);
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn zero_copy_when_message_is_in_one_chunk() {
        let wire = encode(0, b"inside one chunk");
        let base = wire.as_ptr();
        let mut d = EnvelopeDecoder::new(1024);
        d.push(wire.clone());
        let e = d.next_envelope().unwrap().unwrap();
        assert_eq!(e.data, &b"inside one chunk"[..]);
        assert_eq!(e.data.as_ptr(), base.wrapping_add(HEADER_LEN));
    }

    #[test]
    fn refuses_oversized_length_before_buffering() {
        let mut d = EnvelopeDecoder::new(10);
        d.push(Bytes::from_static(&[0, 0, 0, 0]));
        assert_eq!(d.next_envelope(), Ok(None));
        // The fifth header byte completes the length: refused with no body yet.
        d.push(Bytes::from_static(&[11]));
        let err = FrameError::TooLarge {
            size: 11,
            limit: 10,
        };
        assert_eq!(d.next_envelope(), Err(err.clone()));
        // Later input is dropped, and the error sticks.
        d.push(Bytes::from(vec![0u8; 4096]));
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next_envelope(), Err(err.clone()));
        assert_eq!(d.finish(), Err(err));

        let mut d = EnvelopeDecoder::new(u64::from(u32::MAX) - 1);
        d.push(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]));
        assert!(matches!(
            d.next_envelope(),
            Err(FrameError::TooLarge { .. })
        ));

        // Exactly at the limit is fine.
        let mut d = EnvelopeDecoder::new(3);
        d.push(encode(0, b"abc"));
        assert_eq!(d.next_envelope().unwrap().unwrap().data, &b"abc"[..]);
    }

    #[test]
    fn truncation_is_reported_at_finish() {
        let mut d = EnvelopeDecoder::new(100);
        assert_eq!(d.finish(), Ok(()));
        d.push(Bytes::from_static(&[0, 0, 0]));
        assert_eq!(d.finish(), Err(FrameError::Truncated { buffered: 3 }));

        let mut d = EnvelopeDecoder::new(100);
        d.push(Bytes::from_static(&[0, 0, 0, 0, 4, b'a', b'b']));
        assert_eq!(d.next_envelope(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated { buffered: 7 }));
    }

    #[test]
    fn undefined_flags_are_refused() {
        // 0x7e: every bit between compressed and trailers.
        let wire = encode(0x7e, b"smuggled");
        let mut d = EnvelopeDecoder::new(1024).allow_flags(REQUEST_FLAGS);
        d.push(wire.clone());
        let err = FrameError::Flags { flags: 0x7e };
        assert_eq!(d.next_envelope(), Err(err.clone()));
        assert_eq!(d.finish(), Err(err));
        // A trailers or end-stream flag is no request message either.
        for flags in [FLAG_TRAILERS, FLAG_END_STREAM, 0x04, 0x40] {
            let mut d = EnvelopeDecoder::new(1024).allow_flags(REQUEST_FLAGS);
            d.push(encode(flags, b"x"));
            assert_eq!(d.next_envelope(), Err(FrameError::Flags { flags }));
        }
        // Defined request flags pass; a decoder without a mask takes every flag.
        for flags in [0, FLAG_COMPRESSED] {
            let mut d = EnvelopeDecoder::new(1024).allow_flags(REQUEST_FLAGS);
            d.push(encode(flags, b"ok"));
            assert_eq!(d.next_envelope().unwrap().unwrap().flags, flags);
        }
        let mut d = EnvelopeDecoder::new(1024);
        d.push(wire);
        assert_eq!(d.next_envelope().unwrap().unwrap().flags, 0x7e);
    }

    #[test]
    fn scanner_checks_every_header_at_every_split_point() {
        let (_, good) = sample_stream();
        let allowed = FLAG_COMPRESSED | FLAG_TRAILERS;
        let mut bad = good.clone();
        bad.extend_from_slice(&encode(0x7e, b"tail"));
        for i in 0..=good.len() {
            let mut s = EnvelopeScanner::new(allowed);
            assert_eq!(s.push(&good[..i]), Ok(()));
            assert_eq!(s.push(&good[i..]), Ok(()), "split at {i}");
            assert_eq!(s.finish(), Ok(()));
        }
        for i in 0..=bad.len() {
            let mut s = EnvelopeScanner::new(allowed);
            let r = s.push(&bad[..i]).and_then(|()| s.push(&bad[i..]));
            assert_eq!(r, Err(FrameError::Flags { flags: 0x7e }), "split at {i}");
            assert_eq!(s.push(b"more"), Err(FrameError::Flags { flags: 0x7e }));
        }
        // A message cut short, or a header cut short, is reported at the end.
        let mut s = EnvelopeScanner::new(allowed);
        s.push(&encode(0, b"abc")[..6]).unwrap();
        assert!(matches!(s.finish(), Err(FrameError::Truncated { .. })));
        let mut s = EnvelopeScanner::new(allowed);
        s.push(&[0, 0]).unwrap();
        assert_eq!(s.finish(), Err(FrameError::Truncated { buffered: 2 }));
    }

    #[test]
    fn flags_helpers() {
        let e = Envelope {
            flags: FLAG_COMPRESSED | FLAG_TRAILERS,
            data: Bytes::new(),
        };
        assert!(e.is_compressed() && e.is_trailers() && !e.is_end_stream());
    }
}
