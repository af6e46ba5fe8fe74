//! Message compression: gzip or identity, negotiated per protocol
//! (`grpc-encoding`, Connect's `content-encoding` / `connect-content-encoding`).
//!
//! [`gunzip`] stops at a hard output cap, so a small compressed message cannot
//! expand past the message limit (decompression bombs).

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use http::HeaderValue;

/// A message encoding this proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

impl Encoding {
    /// Reads an encoding header: absent or `identity` is `Identity`, `gzip` is
    /// `Gzip` (case-insensitive); anything else is an error for the client.
    pub fn from_header(v: Option<&HeaderValue>) -> Result<Encoding, String> {
        let Some(v) = v else {
            return Ok(Encoding::Identity);
        };
        let s = v.as_bytes().trim_ascii();
        if s.eq_ignore_ascii_case(b"identity") {
            Ok(Encoding::Identity)
        } else if s.eq_ignore_ascii_case(b"gzip") {
            Ok(Encoding::Gzip)
        } else {
            Err(format!(
                "unsupported compression {:?}; supported: gzip, identity",
                String::from_utf8_lossy(s)
            ))
        }
    }

    /// The token for headers.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
        }
    }

    /// The token as a header value.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.name())
    }
}

/// Whether an accept-encoding list (comma-separated, q-values tolerated) accepts
/// gzip: listed with a non-zero q, or covered by `*`.
pub fn accepts_gzip(v: Option<&HeaderValue>) -> bool {
    let Some(v) = v else {
        return false;
    };
    let mut star = false;
    for item in v.as_bytes().split(|&b| b == b',') {
        let mut parts = item.split(|&b| b == b';');
        let token = parts.next().unwrap_or_default().trim_ascii();
        let allowed = parts.all(|p| !is_zero_q(p.trim_ascii()));
        if token.eq_ignore_ascii_case(b"gzip") {
            return allowed;
        }
        if token == b"*" {
            star = allowed;
        }
    }
    star
}

/// `q=0`, `q=0.0`, `q=0.000`.
fn is_zero_q(param: &[u8]) -> bool {
    let Some(q) = param
        .strip_prefix(b"q=")
        .or_else(|| param.strip_prefix(b"Q="))
    else {
        return false;
    };
    let q = q.trim_ascii();
    matches!(q.split_first(), Some((b'0', rest)) if rest.iter().all(|&b| b == b'.' || b == b'0'))
}

/// A decompression failure.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("decompressed message exceeds {0} bytes")]
    TooLarge(u64),
    #[error("corrupt gzip data: {0}")]
    Corrupt(String),
}

/// Gunzips `data`, failing with `TooLarge(limit)` as soon as the output would
/// exceed `limit` bytes. Empty input is an empty message (never decompressed).
pub fn gunzip(data: &[u8], limit: u64) -> Result<Bytes, CompressionError> {
    if data.is_empty() {
        return Ok(Bytes::new());
    }
    let guess = data.len().saturating_mul(4);
    let cap = usize::try_from(limit).map_or(guess, |l| guess.min(l));
    let mut out = Vec::with_capacity(cap);
    GzDecoder::new(data)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| CompressionError::Corrupt(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(CompressionError::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

/// Gzips `data` (fast level: the proxy pays per message).
pub fn gzip(data: &[u8]) -> Bytes {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 32), Compression::fast());
    // Writing into a Vec cannot fail; an empty result would only follow a bug.
    match enc.write_all(data).and_then(|()| enc.finish()) {
        Ok(v) => Bytes::from(v),
        Err(_) => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_headers() {
        assert_eq!(Encoding::from_header(None), Ok(Encoding::Identity));
        let hv = HeaderValue::from_static;
        assert_eq!(
            Encoding::from_header(Some(&hv("identity"))),
            Ok(Encoding::Identity)
        );
        assert_eq!(Encoding::from_header(Some(&hv("gzip"))), Ok(Encoding::Gzip));
        assert_eq!(Encoding::from_header(Some(&hv("GZIP"))), Ok(Encoding::Gzip));
        let err = Encoding::from_header(Some(&hv("br"))).unwrap_err();
        assert!(
            err.contains("unsupported compression") && err.contains("br"),
            "{err}"
        );
        assert_eq!(Encoding::Gzip.name(), "gzip");
        assert_eq!(Encoding::Identity.header_value(), "identity");
    }

    #[test]
    fn accept_encoding_lists() {
        let acc = |s: &'static str| accepts_gzip(Some(&HeaderValue::from_static(s)));
        assert!(!accepts_gzip(None));
        assert!(acc("gzip"));
        assert!(acc("br, gzip"));
        assert!(acc("identity,gzip;q=0.5"));
        assert!(acc("GZip ; q=1"));
        assert!(acc("*"));
        assert!(!acc("gzip;q=0"));
        assert!(!acc("gzip;q=0.000, *"));
        assert!(!acc("identity"));
        assert!(!acc("br, zstd"));
        assert!(!acc("*;q=0"));
        assert!(!acc("gzipx"));
    }

    #[test]
    fn round_trip() {
        let data = b"hello hello hello hello".repeat(100);
        let z = gzip(&data);
        assert!(z.len() < data.len());
        assert_eq!(gunzip(&z, data.len() as u64).unwrap(), &data[..]);
        assert_eq!(gunzip(&gzip(b""), 0).unwrap(), &b""[..]);
        assert_eq!(gunzip(b"", 0).unwrap(), &b""[..]);
    }

    #[test]
    fn bomb_refused_at_limit() {
        // 16 MiB of zeros compresses to a few KiB.
        let bomb = gzip(&vec![0u8; 16 << 20]);
        assert!(bomb.len() < 256 << 10, "{}", bomb.len());
        match gunzip(&bomb, 1 << 20) {
            Err(CompressionError::TooLarge(limit)) => assert_eq!(limit, 1 << 20),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // One byte over the limit is refused; exactly at it is fine.
        let z = gzip(&[7u8; 1000]);
        assert!(matches!(
            gunzip(&z, 999),
            Err(CompressionError::TooLarge(999))
        ));
        assert_eq!(gunzip(&z, 1000).unwrap().len(), 1000);
    }

    #[test]
    fn corrupt_input() {
        assert!(matches!(
            gunzip(b"not gzip at all", 100),
            Err(CompressionError::Corrupt(_))
        ));
        let z = gzip(b"some data to truncate");
        assert!(matches!(
            gunzip(&z[..z.len() - 6], 100),
            Err(CompressionError::Corrupt(_))
        ));
    }
}
