//! Ports for servers the tests start by number (pebble, Redis, PostgreSQL, a proxy
//! whose ports the CA is told in advance).
//!
//! A port taken by binding port 0 and closing comes from the kernel's ephemeral range,
//! the range every outgoing connection of every concurrent test also draws from: one
//! of those can take it before the server binds it ("Address already in use"). These
//! ports are drawn at random from below that range instead, where outgoing connections
//! never land, and checked free on every address the server will bind.

use std::net::{IpAddr, TcpListener};

/// Lowest port drawn (above the ports services commonly use).
const LOW: u16 = 10_000;

/// A port free on each of `ips` now, below the ephemeral range.
pub fn unused_port(ips: &[IpAddr]) -> Result<u16, String> {
    let high = ephemeral_low().max(LOW + 1_000);
    for _ in 0..200 {
        let port = fastrand::u16(LOW..high);
        if free_on(ips, port) {
            return Ok(port);
        }
    }
    Err(format!("no port in {LOW}..{high} free on {ips:?}"))
}

/// Whether `port` can be bound on each of `ips` now.
fn free_on(ips: &[IpAddr], port: u16) -> bool {
    ips.iter().all(|ip| TcpListener::bind((*ip, port)).is_ok())
}

/// A port free on 127.0.0.1 now, below the ephemeral range.
pub fn unused_local_port() -> Result<u16, String> {
    unused_port(&[IpAddr::from([127, 0, 0, 1])])
}

/// The start of the kernel's ephemeral port range (Linux default 32768).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range() {
        // Whether a port is still free once returned cannot be asserted: tests
        // running beside this one start servers on ports from the same range.
        for _ in 0..20 {
            let port = unused_local_port().expect("port");
            assert!((LOW..ephemeral_low().max(LOW + 1_000)).contains(&port));
        }
    }

    #[test]
    fn a_port_in_use_is_not_free() {
        let local = IpAddr::from([127, 0, 0, 1]);
        let held = TcpListener::bind((local, 0)).expect("bind");
        let port = held.local_addr().expect("addr").port();
        assert!(!free_on(&[local], port));
        assert!(!free_on(&[IpAddr::from([0, 0, 0, 0])], port));
    }
}
