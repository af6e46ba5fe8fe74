//! PROXY protocol v2: the binary header a backend reads to learn the real client
//! address. Encoding for what we send; decoding for tests, fuzzing and backends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

const VERSION_2: u8 = 0x20;
const CMD_LOCAL: u8 = 0x00;
const CMD_PROXY: u8 = 0x01;
const INET_STREAM: u8 = 0x11;
const INET6_STREAM: u8 = 0x21;

/// The header for a TCP connection from `client` that arrived at `local`.
///
/// Mixed families (an IPv4 client on an IPv6 socket shows as `::ffff:a.b.c.d`) are
/// unmapped to IPv4 when both sides allow it, else both are written as IPv6.
pub fn encode(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (src, dst) = (unmap(client.ip()), unmap(local.ip()));
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_2 | CMD_PROXY);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(INET_STREAM);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(INET6_STREAM);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&local.port().to_be_bytes());
    out
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v) => v.to_ipv6_mapped(),
        IpAddr::V6(v) => v,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("incomplete PROXY v2 header")]
    Incomplete,
    #[error("no PROXY v2 signature")]
    NoSignature,
    #[error("unsupported PROXY version or command {0:#04x}")]
    VersionCommand(u8),
    #[error("address block too short for its family")]
    ShortAddresses,
}

/// A decoded header: addresses for PROXY (TCP over IPv4/IPv6), none for LOCAL or others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// Bytes the header takes, TLVs included; the payload starts after them.
    pub len: usize,
}

/// Decodes a v2 header at the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
    let n = buf.len().min(SIGNATURE.len());
    if buf[..n] != SIGNATURE[..n] {
        return Err(DecodeError::NoSignature);
    }
    if buf.len() < 16 {
        return Err(DecodeError::Incomplete);
    }
    let ver_cmd = buf[12];
    if ver_cmd & 0xF0 != VERSION_2 || !matches!(ver_cmd & 0x0F, CMD_LOCAL | CMD_PROXY) {
        return Err(DecodeError::VersionCommand(ver_cmd));
    }
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + body_len;
    let Some(body) = buf.get(16..total) else {
        return Err(DecodeError::Incomplete);
    };
    let none = Decoded {
        source: None,
        destination: None,
        len: total,
    };
    if ver_cmd & 0x0F == CMD_LOCAL {
        return Ok(none);
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match buf[13] {
        INET_STREAM => {
            let a = body.get(..12).ok_or(DecodeError::ShortAddresses)?;
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Ok(Decoded {
                source: Some(SocketAddr::new(ip(&a[0..4]), port(&a[8..10]))),
                destination: Some(SocketAddr::new(ip(&a[4..8]), port(&a[10..12]))),
                len: total,
            })
        }
        INET6_STREAM => {
            let a = body.get(..36).ok_or(DecodeError::ShortAddresses)?;
            let ip = |b: &[u8]| {
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Ok(Decoded {
                source: Some(SocketAddr::new(ip(&a[0..16]), port(&a[32..34]))),
                destination: Some(SocketAddr::new(ip(&a[16..32]), port(&a[34..36]))),
                len: total,
            })
        }
        _ => Ok(none),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_round_trip_and_exact_bytes() {
        let c: SocketAddr = "192.0.2.7:51000".parse().unwrap();
        let l: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let h = encode(c, l);
        assert_eq!(h.len(), 28);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0x00, 0x0C]);
        assert_eq!(&h[16..20], &[192, 0, 2, 7]);
        let d = decode(&h).unwrap();
        assert_eq!((d.source, d.destination, d.len), (Some(c), Some(l), 28));
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let c: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
        let l: SocketAddr = "[2001:db8::2]:443".parse().unwrap();
        let h = encode(c, l);
        assert_eq!((h[13], h.len()), (0x21, 52));
        assert_eq!(decode(&h).unwrap().source, Some(c));
        let mapped: SocketAddr = "[::ffff:198.51.100.9]:1234".parse().unwrap();
        let l6: SocketAddr = "[::ffff:127.0.0.1]:443".parse().unwrap();
        let h = encode(mapped, l6);
        assert_eq!(h[13], 0x11, "mapped IPv4 is sent as IPv4");
        assert_eq!(
            decode(&h).unwrap().source,
            Some("198.51.100.9:1234".parse().unwrap())
        );
        let mixed = encode(mapped, l);
        assert_eq!(mixed[13], 0x21, "mixed families become IPv6");
    }

    #[test]
    fn decode_rejects_and_waits() {
        let h = encode("1.2.3.4:5".parse().unwrap(), "6.7.8.9:10".parse().unwrap());
        assert_eq!(decode(&h[..10]), Err(DecodeError::Incomplete));
        assert_eq!(decode(&h[..20]), Err(DecodeError::Incomplete));
        assert_eq!(decode(b"PROXY TCP4 1.2.3.4"), Err(DecodeError::NoSignature));
        let mut bad = h.clone();
        bad[12] = 0x11;
        assert_eq!(decode(&bad), Err(DecodeError::VersionCommand(0x11)));
        let mut short = h[..16].to_vec();
        short[15] = 0;
        assert_eq!(decode(&short), Err(DecodeError::ShortAddresses));
    }
}
