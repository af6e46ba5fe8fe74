//! The gRPC-Web trailer frame: gRPC trailers carried at the end of the body in
//! an envelope flagged [`FLAG_TRAILERS`], as an HTTP/1-style header block
//! (`name: value\r\n` lines, lowercase names, no terminating blank line).

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use super::envelope::{FLAG_TRAILERS, HEADER_LEN, header};

/// The whole trailer frame (header included) for `trailers`.
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let payload_len: usize = trailers
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum();
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload_len);
    out.put_slice(&header(FLAG_TRAILERS, payload_len));
    for (name, value) in trailers {
        // `HeaderName`s are already lowercase.
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

/// Parses a trailer frame's payload (without the envelope header) into a map.
/// Accepts `\n` line ends and surrounding whitespace; names are lowercased.
pub fn parse_trailer_block(payload: &[u8]) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    for line in payload.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            continue;
        }
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
            format!(
                "trailer line without ':': {:?}",
                String::from_utf8_lossy(line)
            )
        })?;
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        let name = HeaderName::from_bytes(name.trim_ascii())
            .map_err(|_| format!("invalid trailer name {:?}", String::from_utf8_lossy(name)))?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| format!("invalid value for trailer {name}"))?;
        out.append(name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::envelope::EnvelopeDecoder;
    use crate::rpc::{Code, RpcStatus};

    #[test]
    fn frame_layout_and_round_trip() {
        let mut trailers = HeaderMap::new();
        RpcStatus::new(Code::NotFound, "gone 100%").write_trailers(&mut trailers);
        trailers.append("x-cost", HeaderValue::from_static("1"));
        trailers.append("x-cost", HeaderValue::from_static("2"));
        let frame = trailer_frame(&trailers);
        assert_eq!(frame[0], FLAG_TRAILERS);

        let mut d = EnvelopeDecoder::new(1024);
        d.push(frame.clone());
        let env = d.next_envelope().unwrap().unwrap();
        assert!(env.is_trailers());
        assert_eq!(
            &env.data[..],
            b"grpc-status: 5\r\ngrpc-message: gone 100%25\r\nx-cost: 1\r\nx-cost: 2\r\n"
        );
        assert_eq!(parse_trailer_block(&env.data).unwrap(), trailers);
    }

    #[test]
    fn text_response_decodes_through_base64_then_envelopes() {
        use crate::rpc::base64_stream::{Base64Decoder, encode as b64};
        use crate::rpc::envelope::encode;

        let mut trailers = HeaderMap::new();
        RpcStatus::new(Code::Ok, "").write_trailers(&mut trailers);
        // A gRPC-Web-text server encodes each flushed frame on its own.
        let text = [
            b64(&encode(0, b"m1")),
            b64(&encode(0, b"")),
            b64(&trailer_frame(&trailers)),
        ]
        .concat();
        for split in 0..=text.len() {
            let mut b = Base64Decoder::new();
            let mut d = EnvelopeDecoder::new(64);
            let mut got = Vec::new();
            for part in [&text[..split], &text[split..]] {
                d.push(b.push(part).unwrap());
                while let Some(e) = d.next_envelope().unwrap() {
                    got.push(e);
                }
            }
            b.finish().unwrap();
            d.finish().unwrap();
            assert_eq!(got.len(), 3, "split {split}");
            assert_eq!(got[0].data, &b"m1"[..]);
            assert!(got[1].data.is_empty());
            assert_eq!(parse_trailer_block(&got[2].data).unwrap(), trailers);
        }
    }

    #[test]
    fn empty_trailers() {
        assert_eq!(&trailer_frame(&HeaderMap::new())[..], &[0x80, 0, 0, 0, 0]);
        assert!(parse_trailer_block(b"").unwrap().is_empty());
    }

    #[test]
    fn parse_is_lenient_about_case_and_line_ends() {
        let h = parse_trailer_block(b"Grpc-Status:0\nGRPC-MESSAGE:  ok  \r\n\r\n").unwrap();
        assert_eq!(h["grpc-status"], "0");
        assert_eq!(h["grpc-message"], "ok");
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn parse_errors() {
        assert!(parse_trailer_block(b"no colon here\r\n").is_err());
        assert!(parse_trailer_block(b"bad name: x\r\n").is_err());
        assert!(parse_trailer_block(b": x\r\n").is_err());
        assert!(parse_trailer_block(b"x: a\x00b\r\n").is_err());
    }
}
