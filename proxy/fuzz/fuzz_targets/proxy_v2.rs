//! PROXY v2 decoding of arbitrary bytes never panics nor claims more bytes than given;
//! headers we encode from arbitrary addresses decode to the same addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tollgate_proxy::fuzzing::proxy_v2::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = decode(data) {
        assert!(d.len <= data.len());
    }
    if data.len() >= 36 {
        let port = |i: usize| u16::from_be_bytes([data[i], data[i + 1]]);
        let (src, dst) = if data[0] & 1 == 0 {
            let v4 = |i: usize| IpAddr::V4(Ipv4Addr::new(data[i], data[i + 1], data[i + 2], data[i + 3]));
            (SocketAddr::new(v4(2), port(32)), SocketAddr::new(v4(6), port(34)))
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(&data[2..18]);
            let mut b = [0u8; 16];
            b.copy_from_slice(&data[16..32]);
            (
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port(32)),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), port(34)),
            )
        };
        let header = encode(src, dst);
        let d = decode(&header).expect("our own header decodes");
        assert_eq!(d.len, header.len());
        let unmap = |s: SocketAddr| match s.ip() {
            IpAddr::V6(v) => v.to_ipv4_mapped().map_or(s, |v4| SocketAddr::new(IpAddr::V4(v4), s.port())),
            _ => s,
        };
        let (ds, dd) = (d.source.expect("source"), d.destination.expect("destination"));
        assert_eq!(unmap(ds), unmap(src));
        assert_eq!(unmap(dd), unmap(dst));
    }
});
